"""Where document passwords live: a local secret store, never a Kafka record.

Records carry only the secret's name (``password_ref``). Files are written with mode
0600 under ``<home>/secrets``; nothing here ever logs or prints a value.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class SecretStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / hashlib.sha256(name.encode()).hexdigest()

    def put(self, name: str, value: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(name)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        os.replace(path.with_suffix(".tmp"), path)

    def get(self, name: str | None) -> str | None:
        if not name:
            return None
        try:
            return self._path(name).read_text()
        except FileNotFoundError:
            return None
