"""The publisher: how upstream systems put documents into a job.

Files go to the blob store; a ``DocumentSubmitted`` record (the reference and digest,
never the bytes) goes to ``docs.submitted`` with a ``submitted`` lifecycle event, both
in one transaction. ``doc_id`` is stable: the same file (same name within the job,
same bytes) published again to the same job gets the same id, and the parse stage
ignores the repeat, so re-publishing is a no-op.

A dead-lettered document is re-submitted (``docstreams dlq retry``) as the same
``DocumentRef`` with ``resubmission`` (the retry generation) raised by one, and a
``resubmitted`` event whose ``seq`` is ``generation * RESUBMISSION_SEQ``. The parse stage
admits each (doc_id, generation) once, so a repeated retry of one generation is a no-op.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from streams import names, records
from streams.blobs import BlobStore, sha256_hex
from streams.errors import DocstreamsError
from streams.kafka import transactional_producer
from streams.secrets import SecretStore
from streams.settings import Settings

_CHUNK = 200
_T = TypeVar("_T")
_R = TypeVar("_R")
# The seq of a ``resubmitted`` event: generation g opens a new range of the document's life.
RESUBMISSION_SEQ = 1000


def doc_id_for(job_id: str, source: str, sha256: str) -> str:
    return "d" + hashlib.sha256(f"{job_id}\0{source}\0{sha256}".encode()).hexdigest()[:24]


def collect(paths: Iterable[Path], skipped: list[tuple[Path, str]] | None = None
            ) -> Iterator[tuple[Path, str]]:
    """Files under ``paths`` (folders recursively, hidden files skipped), each with the
    name it is published under: ``<folder name>/<path inside it>`` for a folder given,
    the file's name for a file given. Entries that are not files with content to read
    (a dangling or looping symlink, a FIFO, a socket) are not documents: each is added
    to ``skipped`` with the reason, for the caller to report."""
    for root in paths:
        if not root.exists():
            raise DocstreamsError(f"no such file or folder: {root}", reason="not_found")
        if root.is_file():
            yield root, root.name
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or path.is_dir():
                continue
            if path.is_file():
                yield path, f"{root.resolve().name}/{rel.as_posix()}"
            elif skipped is not None:
                why = ("a symlink to nothing (dangling or looping)"
                       if path.is_symlink() else "not a regular file (FIFO, socket or device)")
                skipped.append((path, why))


def password_ref_for(job_id: str, doc_id: str, generation: int = 0) -> str:
    """The secret-store name of a document's password; a retry generation that brings
    its own password gets its own name, so no earlier record's secret is overwritten."""
    base = f"{job_id}/{doc_id}"
    return base if generation == 0 else f"{base}/r{generation}"


@dataclass(frozen=True)
class Resubmission:
    """A document already in the blob store, sent through the pipeline again."""

    doc: dict[str, Any]  # its DocumentRef, as carried by its dead letter
    generation: int  # >= 1
    password_ref: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Published:
    doc_id: str
    source: str
    sha256: str
    size_bytes: int


class Publisher:
    """Publish documents to a job. Usable from Python by upstream systems::

        with Publisher(settings, bootstrap) as pub:
            pub.publish_bytes(data, source="packet-17/w2.pdf", job_id="loan-17")
    """

    def __init__(self, settings: Settings, bootstrap: str, submitted_by: str | None = None):
        self.settings = settings
        self.blobs = BlobStore(settings.blob_dir)
        self.secrets = SecretStore(settings.home / "secrets")
        self.submitted_by = submitted_by or f"{getpass.getuser()}@{socket.gethostname()}"
        self.skipped: list[tuple[Path, str]] = []  # entries of the folders that are no file
        self._check_topics(bootstrap)
        self._producer = transactional_producer(
            settings, bootstrap, f"{settings.topic_prefix}docstreams.publish.{uuid.uuid4().hex}")

    def _check_topics(self, bootstrap: str) -> None:
        """Fail now, clearly, rather than after a delivery timeout."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.settings.kafka_common(bootstrap))
        wanted = [names.topic(self.settings.topic_prefix, t) for t in (names.SUBMITTED, names.EVENTS)]
        present = admin.list_topics(timeout=15).topics
        missing = [t for t in wanted if t not in present]
        if missing:
            raise DocstreamsError(
                f"topic(s) {', '.join(missing)} do not exist on {bootstrap}: start a worker "
                "or run `docstreams publish`, which create them", reason="topics_missing")

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._producer.flush(30)

    def publish_bytes(self, data: bytes, *, source: str, job_id: str,
                      password: str | None = None) -> Published:
        return self.publish_many([(data, source, password)], job_id=job_id)[0]

    def publish_paths(self, paths: Iterable[Path], *, job_id: str,
                      passwords: Mapping[str, str] | None = None,
                      sources: Mapping[Path, str] | None = None) -> list[Published]:
        """Publish files and folders; ``sources`` names files explicitly (a caller that
        already walked the folders), else names come from :func:`collect`."""
        passwords = passwords or {}
        items = []
        named = (list(sources.items()) if sources is not None
                 else list(collect(paths, self.skipped)))
        for path, source in named:
            pw = passwords.get(source, passwords.get(path.name))
            items.append((path.read_bytes(), source, pw))
        return self.publish_many(items, job_id=job_id)

    def publish_many(self, items: list[tuple[bytes, str, str | None]], *,
                     job_id: str) -> list[Published]:
        """Transactions of up to ``_CHUNK`` documents: each chunk is submitted whole or not
        at all, and a re-run re-submits what a crash left out (doc ids are stable)."""
        if not job_id:
            raise DocstreamsError("a job id is required", reason="bad_request")
        return self._in_transactions(
            items, lambda item: self._submit(item[0], item[1], item[2], job_id))

    def resubmit_many(self, items: list[Resubmission]) -> None:
        """Send documents through the pipeline again from parse, each with its retry
        generation, in transactions of up to ``_CHUNK`` (all of a chunk or none of it)."""
        for item in items:
            if item.generation < 1:
                raise DocstreamsError("a re-submission needs a generation of 1 or more",
                                      reason="bad_request")
        self._in_transactions(items, self._resubmit)

    def _in_transactions(self, items: list[_T], submit: Callable[[_T], _R]) -> list[_R]:
        out = []
        for start in range(0, len(items), _CHUNK):
            self._producer.begin_transaction()
            try:
                for item in items[start:start + _CHUNK]:
                    out.append(submit(item))
                self._producer.commit_transaction(60)
            except BaseException:
                self._producer.abort_transaction(30)
                raise
        return out

    def _submit(self, data: bytes, source: str, password: str | None, job_id: str) -> Published:
        digest = sha256_hex(data)
        doc_id = doc_id_for(job_id, source, digest)
        password_ref = None
        if password is not None:
            password_ref = password_ref_for(job_id, doc_id)
            self.secrets.put(password_ref, password)
        now = int(time.time() * 1000)
        doc = {"doc_id": doc_id, "job_id": job_id, "source": source, "sha256": digest,
               "blob_ref": self.blobs.put(data), "size_bytes": len(data),
               "submitted_at_ms": now}
        self._produce(doc, password_ref, 0, "submitted", f"{len(data)} bytes", now)
        return Published(doc_id, source, digest, len(data))

    def _resubmit(self, item: Resubmission) -> None:
        doc = item.doc
        if not self.blobs.exists(doc["blob_ref"]):
            raise DocstreamsError(f"blob {doc['blob_ref']} of {doc['doc_id']} is missing from "
                                  f"{self.blobs.root}", reason="blob_missing")
        detail = f"retry generation {item.generation}" + (f": {item.note}" if item.note else "")
        self._produce(doc, item.password_ref, item.generation, "resubmitted", detail,
                      int(time.time() * 1000))

    def _produce(self, doc: dict[str, Any], password_ref: str | None, generation: int,
                 transition: str, detail: str, now: int) -> None:
        """The DocumentSubmitted record and its lifecycle event (in the open transaction)."""
        doc = {**doc, "generation": generation}
        submitted: dict[str, Any] = {"doc": doc, "submitted_by": self.submitted_by,
                                     "password_ref": password_ref,
                                     "media_type": "application/pdf",
                                     "resubmission": generation}
        event = {"event_id": uuid.uuid4().hex, "subject": doc["doc_id"], "job_id": doc["job_id"],
                 "seq": generation * RESUBMISSION_SEQ, "stage": "submit",
                 "transition": transition, "detail": detail, "source": doc["source"],
                 "worker": self.submitted_by, "at_ms": now,
                 "pipeline_version": self.settings.pipeline_version}
        key = doc["doc_id"].encode()
        prefix = self.settings.topic_prefix
        self._producer.produce(names.topic(prefix, names.SUBMITTED), key=key,
                               value=records.encode("DocumentSubmitted", submitted))
        self._producer.produce(names.topic(prefix, names.EVENTS), key=key,
                               value=records.encode("LifecycleEvent", event))
