"""Helpers for pipeline integration tests: run workers in-process, wait for a job,
read topics back with read_committed."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams import broker, names, records
from streams.kafka import high_watermark, reader
from streams.settings import _KAFKA_PASSTHROUGH, Settings
from streams.status import Follower
from streams.worker import Worker

REPO = Path(__file__).resolve().parents[2]


# In-process workers now running: a test that fails waiting shows what each runner does.
LIVE_WORKERS: list[Worker] = []


@contextmanager
def running_worker(settings: Settings, bootstrap: str, worker_id: str = "t1", *,
                   stop_timeout: float = 30.0) -> Iterator[Worker]:
    """An in-process worker; its stop waits at most ``stop_timeout`` per stage thread,
    so a test that finds a runner stuck fails quickly."""
    worker = Worker(settings, bootstrap, worker_id)
    worker.start()
    LIVE_WORKERS.append(worker)
    try:
        yield worker
    finally:
        LIVE_WORKERS.remove(worker)
        worker.stop(stop_timeout)


def describe_workers() -> list[dict[str, Any]]:
    """Every in-process worker's runners (for the message of a failed wait)."""
    return [runner for worker in LIVE_WORKERS for runner in worker.describe()]


def wait_for_job(settings: Settings, bootstrap: str, job: str, documents: int,
                 timeout: float = 180) -> dict[str, Any]:
    follower = Follower(settings, bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            follower.poll(0.5)
            snap = follower.tracker.view(job).snapshot()
            if snap["documents"] >= documents and snap["complete"]:
                return snap
        raise AssertionError(f"job {job} not complete after {timeout}s: {snap}")
    finally:
        follower.close()


def read_topic(settings: Settings, bootstrap: str, logical: str,
               timeout: float = 15) -> list[tuple[str, str, dict[str, Any]]]:
    """Every committed record of a topic: (key, schema name, record)."""
    topic = names.topic(settings.topic_prefix, logical)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        ends = {tp.partition: high_watermark(consumer, tp) for tp in parts}
        consumer.assign(parts)
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if not msg.error():
                    schema, rec = records.decode(msg.value())
                    out.append((msg.key().decode(), schema, rec))
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                break
        return out
    finally:
        consumer.close()


# --- worker processes, faults and the exactly-once check (crash tests, chaos harness) ----

TERMINAL_TOPICS = (names.ROUTED, names.REVIEW_TASKS, names.DEADLETTER)
INTERMEDIATE_TOPICS = (names.PARSED, names.EXTRACTED, names.VALIDATED)


def settings_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """The environment that gives a ``docstreams worker`` subprocess these settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DOCSTREAMS_") or k == "DOCSTREAMS_CORPUS"}
    env.update({var: settings.kafka_extra[key] for var, key in _KAFKA_PASSTHROUGH.items()
                if key in settings.kafka_extra})
    env.update({
        "DOCSTREAMS_HOME": str(settings.home),
        "DOCSTREAMS_BOOTSTRAP": bootstrap,
        "DOCSTREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "DOCSTREAMS_PARTITIONS": str(settings.partitions),
        "DOCSTREAMS_REPLICATION": str(settings.replication),
        "DOCSTREAMS_BATCH_MAX_DOCS": str(settings.batch_max_docs),
        "DOCSTREAMS_BATCH_MAX_SECONDS": str(settings.batch_max_seconds),
        "DOCSTREAMS_TRANSACTION_TIMEOUT_MS": str(settings.transaction_timeout_ms),
        "DOCSTREAMS_PARSE_WORKERS": str(settings.parse_workers),
        "DOCSTREAMS_PARSE_TIMEOUT_S": str(settings.parse_timeout_s),
        "DOCSTREAMS_MAX_ATTEMPTS": str(settings.max_attempts),
        "DOCSTREAMS_RETRY_BACKOFF_S": str(settings.retry_backoff_s),
    })
    return env


def spawn_worker(settings: Settings, bootstrap: str, worker_id: str, *,
                 fault_at: str | None = None, log_path: Path | None = None,
                 ) -> subprocess.Popen[bytes]:
    """Start ``python -m streams worker`` in its own process group; ``fault_at`` arms the
    runtime's SIGKILL fault-injection point (``<stage|*>:<point>:<probability>``)."""
    env = settings_env(settings, bootstrap)
    if fault_at:
        env["DOCSTREAMS_ALLOW_FAULT_INJECTION"] = "1"
        env["DOCSTREAMS_FAULT_AT"] = fault_at
    log_path = log_path or settings.home / "logs" / f"worker-{worker_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- start {worker_id} fault_at={fault_at} at {time.time():.3f}\n".encode())
        log.flush()
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "-v", "worker", "--worker-id", worker_id],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=REPO)


def reap_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of a dead worker's process group (its parse pool children),
    as a crashed machine would; the group id is the worker's own pid."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 the worker process (only it, by its pid), then reap its leftovers."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    reap_group(proc)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (the batch in flight commits), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reap_group(proc)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The exit code of a worker expected to die (e.g. at an armed fault point)."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_worker(proc)
        raise AssertionError(f"worker {proc.pid} still running after {timeout}s") from None
    reap_group(proc)
    return code


def read_topic_fully(settings: Settings, bootstrap: str, logical: str,
                     timeout: float = 120) -> list[tuple[str, str, dict[str, Any]]]:
    """Like :func:`read_topic`, but raise instead of returning a partial read (an open
    transaction holds read_committed back; a check must not mistake that for loss)."""
    topic = names.topic(settings.topic_prefix, logical)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        ends = {tp.partition: high_watermark(consumer, tp) for tp in parts}
        consumer.assign(parts)
        out = []
        deadline = time.monotonic() + timeout
        while True:
            for msg in consumer.consume(500, timeout=0.5):
                if not msg.error():
                    schema, rec = records.decode(msg.value() or b"")
                    out.append(((msg.key() or b"").decode(), schema, rec))
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0
                   for tp in positions):
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout}s "
                                   f"(positions {positions}, ends {ends})")
    finally:
        consumer.close()


def sink_row_counts(sink_path: Path, job: str | None = None) -> Counter[str]:
    """Rows per doc_id in the decisions table (read-only; workers may still hold it)."""
    if not sink_path.exists():
        return Counter()
    db = sqlite3.connect(f"file:{sink_path}?mode=ro", uri=True, timeout=30)
    try:
        query = "SELECT doc_id, COUNT(*) FROM decisions"
        rows = db.execute(query + (" WHERE job_id = ? GROUP BY doc_id" if job else
                                   " GROUP BY doc_id"), (job,) if job else ()).fetchall()
    finally:
        db.close()
    return Counter({doc: n for doc, n in rows})


@dataclass
class ExactlyOnce:
    """Per-document counts read back with read_committed, and the sink's rows."""

    expected: set[str]
    terminal: Counter[str]
    intermediate: dict[str, Counter[str]]
    sink: Counter[str]
    dead_at: dict[str, str]  # doc_id -> stage that dead-lettered it

    @property
    def lost(self) -> list[str]:
        """Documents with no terminal record, or no row in the sink."""
        return sorted(d for d in self.expected if not self.terminal[d] or not self.sink[d])

    @property
    def duplicated(self) -> int:
        """Terminal records beyond one per document (records of unknown documents count)."""
        return sum(n - 1 if d in self.expected else n for d, n in self.terminal.items() if n)

    @property
    def sink_duplicates(self) -> int:
        return sum(n - 1 if d in self.expected else n for d, n in self.sink.items() if n)

    @property
    def intermediate_duplicates(self) -> int:
        """Records on parsed/extracted/validated beyond one per document."""
        return sum(max(0, n - 1) for counts in self.intermediate.values()
                   for n in counts.values())

    @property
    def exact(self) -> bool:
        return (not self.lost and not self.duplicated and not self.sink_duplicates
                and not self.intermediate_duplicates)

    def describe(self) -> str:
        return (f"expected={len(self.expected)} lost={len(self.lost)} {self.lost[:5]} "
                f"duplicated={self.duplicated} sink_duplicates={self.sink_duplicates} "
                f"intermediate_duplicates={self.intermediate_duplicates}")


def exactly_once(settings: Settings, bootstrap: str, doc_ids: set[str],
                 job: str | None = None, timeout: float = 120) -> ExactlyOnce:
    """Read every terminal and intermediate topic with read_committed, and the sink."""
    terminal: Counter[str] = Counter()
    dead_at: dict[str, str] = {}
    for logical in TERMINAL_TOPICS:
        for key, schema, rec in read_topic_fully(settings, bootstrap, logical, timeout):
            terminal[key] += 1
            if schema == "DeadLetter":
                dead_at[key] = rec["stage"]
    intermediate = {logical: Counter(key for key, _, _ in
                                     read_topic_fully(settings, bootstrap, logical, timeout))
                    for logical in INTERMEDIATE_TOPICS}
    return ExactlyOnce(set(doc_ids), terminal, intermediate,
                       sink_row_counts(settings.sink_path, job), dead_at)


def own_broker_home(home: Path, local_broker_settings: Settings) -> Settings:
    """Settings for a broker of a test's own under ``home`` (tests that restart the broker
    cannot share the session's), on the cached jars. Java and the jars are required even
    when the session uses DOCSTREAMS_BOOTSTRAP: a missing one fails the test, it is never
    skipped."""
    broker.find_java()
    broker.ensure_jars(local_broker_settings)
    (home / "broker").mkdir(parents=True)
    (home / "broker" / "libs").symlink_to(local_broker_settings.home / "broker" / "libs")
    return Settings(home=home, bootstrap=None)

