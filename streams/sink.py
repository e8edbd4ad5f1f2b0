"""The decisions sink: the one side effect outside Kafka, made idempotent.

A decision is upserted keyed by (doc_id, sha256, pipeline_version): replays, retries
and crashes between the write and the Kafka commit write the same row again, never a
second one. SQLite under ``.docstreams/`` by default. The per-document JSON outputs
(``out/<job>/<doc_id>.json``) are written the same way: atomically, by content.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    doc_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    job_id TEXT NOT NULL,
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    doc_type TEXT,
    reasons TEXT NOT NULL,
    fields TEXT NOT NULL,
    first_written_at_ms INTEGER NOT NULL,
    last_written_at_ms INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (doc_id, sha256, pipeline_version)
)
"""

_UPSERT = """
INSERT INTO decisions (doc_id, sha256, pipeline_version, job_id, source, outcome, doc_type,
                       reasons, fields, first_written_at_ms, last_written_at_ms, generation)
VALUES (:doc_id, :sha256, :pipeline_version, :job_id, :source, :outcome, :doc_type,
        :reasons, :fields, :at, :at, :generation)
ON CONFLICT (doc_id, sha256, pipeline_version) DO UPDATE SET
    outcome = excluded.outcome, doc_type = excluded.doc_type, reasons = excluded.reasons,
    fields = excluded.fields, last_written_at_ms = excluded.last_written_at_ms,
    generation = excluded.generation
WHERE excluded.generation >= decisions.generation
"""


class DecisionsStore(Protocol):
    """The sink port: what :class:`streams.stages.SinkStage` needs of a decisions table
    (SQLite here, PostgreSQL in :mod:`streams.sink_postgres`)."""

    def upsert(self, result: dict[str, Any], at_ms: int) -> None: ...
    def rows(self, job_id: str | None = None) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


class DecisionsSink:
    """SQLite decisions table; safe to share between the threads of one worker."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        if "generation" not in columns:  # a table written by Docstreams before retries
            self._db.execute("ALTER TABLE decisions ADD COLUMN generation INTEGER NOT NULL "
                             "DEFAULT 0")
        self._db.commit()

    def upsert(self, result: dict[str, Any], at_ms: int) -> None:
        row = {
            "doc_id": result["doc_id"], "sha256": result["sha256"],
            "pipeline_version": result["pipeline_version"], "job_id": result["job_id"],
            "source": result["source"], "outcome": result["outcome"],
            "doc_type": result.get("doc_type"), "reasons": json.dumps(result["reasons"]),
            "fields": json.dumps(result["fields"], sort_keys=True), "at": at_ms,
            "generation": result.get("generation", 0),
        }
        with self._lock:
            self._db.execute(_UPSERT, row)
            self._db.commit()

    def rows(self, job_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM decisions" + (" WHERE job_id = ?" if job_id else "")
        with self._lock:
            cur = self._db.execute(query, (job_id,) if job_id else ())
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        self._db.close()


def write_output(out_dir: Path, result: dict[str, Any]) -> Path:
    """Write ``out/<job>/<doc_id>.json`` atomically (a re-write replaces it whole)."""
    folder = out_dir / safe_name(result["job_id"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result['doc_id']}.json"
    if path.exists():
        try:
            written = json.loads(path.read_text()).get("generation", 0)
        except (OSError, ValueError):
            written = 0
        if written > result.get("generation", 0):  # a replay of an older generation
            return path
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def safe_name(job_id: str) -> str:
    """A job id as a folder name: no separators, no leading dots."""
    cleaned = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in job_id).lstrip(".")
    return cleaned or "_"
