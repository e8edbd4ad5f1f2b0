"""Local state behind a narrow port: get / put / delete.

Stage code sees only :class:`StatePort`. Behind it, each (stage, partition) has a
RocksDB store (rocksdict), and every change is also written, in the same Kafka
transaction as the stage's outputs, to a compacted changelog topic partition with the
same number. Changes are buffered in a :class:`Batch` and applied to RocksDB only after
the transaction commits, so nothing from an aborted transaction ever reaches the store;
a crash between commit and apply is repaired by restoring from the changelog on the
next assignment. This is the only module that imports rocksdict.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from rocksdict import Options, Rdict

_CHECKPOINT = b"\x00checkpoint"  # changelog offset the store has applied up to


class StatePort(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def scan(self, prefix: str) -> Iterator[tuple[str, bytes]]: ...


class MemoryState:
    """An in-memory store with the same port, for unit tests of pure stages."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def scan(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        for key in sorted(self.data):
            if key.startswith(prefix):
                yield key, self.data[key]


class PartitionStore:
    """RocksDB store of one stage partition."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.path = path
        self._db = Rdict(str(path), options=options)

    def get(self, key: str) -> bytes | None:
        value = self._db.get(key.encode())
        return None if value is None else bytes(value)

    def scan(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        start = prefix.encode()
        for raw_key, value in self._db.items(from_key=start):
            assert isinstance(raw_key, bytes) and isinstance(value, bytes)  # raw mode
            if not raw_key.startswith(start):
                break
            yield raw_key.decode(), value

    def apply(self, changes: dict[str, bytes | None]) -> None:
        for key, value in changes.items():
            if value is None:
                self._db.delete(key.encode())
            else:
                self._db[key.encode()] = value

    @property
    def checkpoint(self) -> int:
        raw = self._db.get(_CHECKPOINT)
        return int(bytes(raw).decode()) if raw is not None else 0

    @checkpoint.setter
    def checkpoint(self, offset: int) -> None:
        self._db[_CHECKPOINT] = str(offset).encode()

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def destroy(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


class Batch(StatePort):
    """The changes of one transaction over one partition store; reads see them first."""

    def __init__(self, store: PartitionStore | MemoryState) -> None:
        self.store = store
        self.changes: dict[str, bytes | None] = {}

    def get(self, key: str) -> bytes | None:
        if key in self.changes:
            return self.changes[key]
        return self.store.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.changes[key] = value

    def delete(self, key: str) -> None:
        self.changes[key] = None

    def scan(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        merged = dict(self.store.scan(prefix))
        for key, value in self.changes.items():
            if key.startswith(prefix):
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        for key in sorted(merged):
            yield key, merged[key]
