"""The decisions sink on PostgreSQL, and :func:`open_sink`, which picks the sink from
``DOCSTREAMS_SINK_DSN``.

Same interface and the same idempotent upsert as the SQLite sink (:mod:`streams.sink`):
one row per (doc_id, sha256, pipeline_version), written with ``INSERT ... ON CONFLICT DO
UPDATE``, which PostgreSQL makes atomic, so replays, retries, crashes between the write
and the Kafka commit, and any number of workers writing at once never make a second row.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from streams.errors import ConfigError, DocstreamsError
from streams.settings import Settings
from streams.sink import DecisionsSink, DecisionsStore

__all__ = ["DecisionsStore", "PostgresDecisionsSink", "open_sink"]

log = logging.getLogger("docstreams.sink")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    doc_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    job_id TEXT NOT NULL,
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    doc_type TEXT,
    reasons JSONB NOT NULL,
    fields JSONB NOT NULL,
    first_written_at_ms BIGINT NOT NULL,
    last_written_at_ms BIGINT NOT NULL,
    generation INT NOT NULL DEFAULT 0,
    PRIMARY KEY (doc_id, sha256, pipeline_version)
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS decisions_job_id ON decisions (job_id)"
# Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog: workers starting
# together take this transaction-scoped advisory lock first (the number is arbitrary).
_DDL_LOCK = 0x646F6373  # "docs"

_UPSERT = """
INSERT INTO decisions (doc_id, sha256, pipeline_version, job_id, source, outcome, doc_type,
                       reasons, fields, first_written_at_ms, last_written_at_ms, generation)
VALUES (%(doc_id)s, %(sha256)s, %(pipeline_version)s, %(job_id)s, %(source)s, %(outcome)s,
        %(doc_type)s, %(reasons)s, %(fields)s, %(at)s, %(at)s, %(generation)s)
ON CONFLICT (doc_id, sha256, pipeline_version) DO UPDATE SET
    outcome = excluded.outcome, doc_type = excluded.doc_type, reasons = excluded.reasons,
    fields = excluded.fields, last_written_at_ms = excluded.last_written_at_ms,
    generation = excluded.generation
WHERE excluded.generation >= decisions.generation
"""


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    dsn = re.sub(r"(://[^:/?#@]*):[^@/?#]*@", r"\1:***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


class PostgresDecisionsSink:
    """PostgreSQL decisions table; safe to share between the threads of one worker.

    One connection, in autocommit (each upsert is its own transaction). A broken
    connection is re-opened and the upsert repeated once, which the upsert makes safe;
    if that fails too the error is retryable, so the sink stage retries the document.
    """

    def __init__(self, dsn: str, *, connect_timeout: int = 10) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a packaging error, said plainly
            raise ConfigError("DOCSTREAMS_SINK_DSN names PostgreSQL but psycopg is not "
                              "installed: pip install 'psycopg[binary]'") from None
        self._psycopg = psycopg
        self._dsn = dsn
        self._timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn = self._connect()
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            cur.execute(_SCHEMA)
            # A table written by Docstreams before retry generations existed.
            cur.execute("ALTER TABLE decisions ADD COLUMN IF NOT EXISTS generation INT "
                        "NOT NULL DEFAULT 0")
            cur.execute(_INDEX)

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._dsn, autocommit=True,
                                         connect_timeout=self._timeout,
                                         application_name="docstreams-sink")
        except self._psycopg.OperationalError as exc:
            raise DocstreamsError(f"cannot connect to the decisions database "
                                  f"{redact(self._dsn)}: {exc}".strip(),
                                  reason="sink_unavailable", retryable=True) from None

    def _execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement; re-open a broken connection and run it once more."""
        psycopg = self._psycopg
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn.closed:
                        self._conn = self._connect()
                    with self._conn.cursor() as cur:
                        cur.execute(query, params)
                        return cur.fetchall() if cur.description else []
                except psycopg.OperationalError as exc:
                    log.warning("decisions database: %s (attempt %d)", exc, attempt)
                    if not self._conn.closed:
                        self._conn.close()
                    if attempt == 2:
                        raise DocstreamsError(f"decisions database {redact(self._dsn)}: {exc}",
                                              reason="sink_unavailable", retryable=True) from None
        raise AssertionError("unreachable")

    def upsert(self, result: dict[str, Any], at_ms: int) -> None:
        from psycopg.types.json import Jsonb

        self._execute(_UPSERT, {
            "doc_id": result["doc_id"], "sha256": result["sha256"],
            "pipeline_version": result["pipeline_version"], "job_id": result["job_id"],
            "source": result["source"], "outcome": result["outcome"],
            "doc_type": result.get("doc_type"), "reasons": Jsonb(result["reasons"]),
            "fields": Jsonb(result["fields"]), "at": at_ms,
            "generation": result.get("generation", 0),
        })

    def rows(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Rows as the SQLite sink returns them (reasons and fields as JSON text)."""
        cols = ("doc_id", "sha256", "pipeline_version", "job_id", "source", "outcome",
                "doc_type", "reasons", "fields", "first_written_at_ms", "last_written_at_ms",
                "generation")
        query = f"SELECT {', '.join(cols)} FROM decisions" + (" WHERE job_id = %s" if job_id
                                                               else "")
        out = []
        for raw in self._execute(query, (job_id,) if job_id else None):
            row = dict(zip(cols, raw, strict=True))
            row["reasons"] = json.dumps(row["reasons"])
            row["fields"] = json.dumps(row["fields"], sort_keys=True)
            out.append(row)
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_sink(settings: Settings) -> DecisionsStore:
    """The decisions sink ``DOCSTREAMS_SINK_DSN`` names: ``postgresql://...`` (or
    ``postgres://...``) for PostgreSQL, ``sqlite:///path`` for a SQLite file; unset, the
    SQLite file under the home folder (``decisions.sqlite``)."""
    dsn = settings.sink_dsn
    if not dsn:
        return DecisionsSink(settings.sink_path)
    scheme = dsn.split(":", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return PostgresDecisionsSink(dsn)
    if scheme == "sqlite" and dsn.startswith("sqlite:///"):
        return DecisionsSink(Path(dsn[len("sqlite:///"):] or settings.sink_path))
    raise ConfigError(f"DOCSTREAMS_SINK_DSN must be postgresql://user@host:port/db or "
                      f"sqlite:///path, got {redact(dsn)!r}")
