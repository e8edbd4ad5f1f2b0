"""What a stage is handed, and how records wait in local state (retries, parked jobs).

A waiting record is stored whole (its original bytes, where it came from, its earlier
attempts) under a key whose order is the order it must come back in:

- ``retry/<due ms>/<doc>``: due time first, so a scan stops at the first not-yet-due;
- ``park/<job hash>/<topic>/<offset>``: a paused job's records, per job in their
  original order within the partition.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams import records

StoreKey = tuple[str, int]  # (logical input topic, partition)

RETRY_PREFIX = "retry/"
PARK_PREFIX = "park/"


@dataclass
class InputRecord:
    """One record handed to a stage: decoded value, where it came from, earlier attempts."""

    topic: str  # logical topic name (no prefix)
    partition: int
    offset: int
    key: str
    schema: str
    record: dict[str, Any]
    value: bytes
    attempts: list[dict[str, Any]] = field(default_factory=list)
    state_key: str | None = None  # the retry or park entry this came back from

    @property
    def store(self) -> StoreKey:
        """The state store this record belongs to: its input topic-partition."""
        return (self.topic, self.partition)

    @property
    def doc(self) -> dict[str, Any]:
        return doc_of(self.schema, self.record)

    @property
    def job_id(self) -> str | None:
        if self.schema == "Undecodable":
            return None
        return str(self.doc["job_id"])

    @property
    def attempt(self) -> int:
        return len(self.attempts) + 1

    @property
    def retrying(self) -> bool:
        return self.state_key is not None and self.state_key.startswith(RETRY_PREFIX)


def doc_of(schema: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The DocumentRef inside any pipeline record."""
    if schema == "DocumentValidated":
        return dict(record["extracted"]["doc"])
    if schema == "ReviewTask":
        return dict(record["decision"]["doc"])
    return dict(record["doc"])


def retry_key(due_ms: int, doc_key: str) -> str:
    return f"{RETRY_PREFIX}{due_ms:013d}/{doc_key}"


def park_prefix(job_id: str) -> str:
    return f"{PARK_PREFIX}{hashlib.sha256(job_id.encode()).hexdigest()[:16]}/"


def park_key(item: InputRecord) -> str:
    return f"{park_prefix(item.job_id or '')}{item.topic}/{item.offset:020d}"


def stash(item: InputRecord, attempts: list[dict[str, Any]]) -> bytes:
    return json.dumps({
        "topic": item.topic, "partition": item.partition, "offset": item.offset,
        "key": item.key, "value": base64.b64encode(item.value).decode(),
        "job_id": item.job_id, "attempts": attempts,
    }).encode()


def unstash(state_key: str, raw: bytes, store: StoreKey) -> InputRecord:
    entry = json.loads(raw)
    value = base64.b64decode(entry["value"])
    schema, record = records.decode(value)
    return InputRecord(store[0], store[1], entry["offset"], entry["key"], schema,
                       record, value, entry["attempts"], state_key)


def stashed_job(raw: bytes) -> str | None:
    return json.loads(raw).get("job_id")
