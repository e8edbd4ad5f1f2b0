"""Content-addressed blob store (claim check): raw documents and parse artifacts live
here, keyed by sha256; Kafka records carry only the reference and the digest.

The local directory store is the default. A write goes to a temporary file and is
renamed into place, so a crash never leaves a half-written blob under its digest.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from streams.errors import DocstreamsError

SCHEME = "blob://sha256/"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ref_for(digest: str) -> str:
    return f"{SCHEME}{digest}"


def digest_of(ref: str) -> str:
    if not ref.startswith(SCHEME):
        raise DocstreamsError(f"not a blob reference: {ref!r}", reason="bad_reference")
    return ref[len(SCHEME):]


class BlobStore:
    """A directory of blobs named by their sha256, fanned out by the first two hex digits."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DocstreamsError(f"not a sha256 digest: {digest!r}", reason="bad_reference")
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data``; return its reference. Storing the same bytes again is a no-op."""
        digest = sha256_hex(data)
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return ref_for(digest)

    def get(self, ref: str) -> bytes:
        path = self._path(digest_of(ref))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DocstreamsError(
                f"blob {ref} is missing from {self.root}", reason="blob_missing"
            ) from None

    def exists(self, ref: str) -> bool:
        return self._path(digest_of(ref)).exists()

    # A tiny named index over blobs, for caches such as "parsed artifact of document
    # digest D by parser version V": the name maps to a blob reference.
    def _name_path(self, namespace: str, name: str) -> Path:
        safe = hashlib.sha256(name.encode()).hexdigest()
        return self.root / "names" / namespace / safe

    def bind(self, namespace: str, name: str, ref: str) -> None:
        path = self._name_path(namespace, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(ref)
        os.replace(tmp, path)

    def lookup(self, namespace: str, name: str) -> str | None:
        path = self._name_path(namespace, name)
        try:
            ref = path.read_text()
        except FileNotFoundError:
            return None
        return ref if self.exists(ref) else None
