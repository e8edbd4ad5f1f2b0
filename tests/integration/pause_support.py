"""Helpers for the pause and resume tests: many documents from the real corpus, worker
processes that can be killed, the committed state of the stage groups, the audit log
followed with read_committed, and "nothing moved" checks over a window of time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import names, records
from streams.admin import AckReport, affected_stages, live_members
from streams.control import ControlClient
from streams.kafka import high_watermark, reader
from streams.publish import Publisher
from streams.settings import Settings
from streams.status import JobTracker
from streams.worker import ensure_pipeline_topics
from tests.corpus import corpus_file
from tests.integration.pipeline import describe_workers, running_worker  # noqa: F401 - re-exported

REPO = Path(__file__).resolve().parents[2]
# Small real documents (a few pages each): 200 copies run through in seconds, so a
# pause lands mid-way while documents are still in flight at every stage.
SMALL_REAL = ("real/invoice_camelot_bol.pdf", "real/tabula_frx_2012_disclosure.pdf",
              "real/invoice_azure_interior.pdf", "real/invoice_flipkart.pdf",
              "real/invoice_qualityhosting.pdf", "real/pdfminer_dmca_summary.pdf")
TERMINAL = (names.ROUTED, names.REVIEW_TASKS, names.DEADLETTER)
# Transitions a paused scope may still commit: parking is how a job pause holds records.
HOLDING = frozenset({"parked"})


def paced(settings: Settings) -> Settings:
    """Small batches: many commits per stage, so a pause always finds work in flight."""
    return settings.replace(batch_max_docs=5, batch_max_seconds=2.0, retry_backoff_s=0.5)


def publish_copies(settings: Settings, bootstrap: str, job: str, count: int, *,
                   first: int = 0, files: Iterable[str] = SMALL_REAL) -> list[str]:
    """Publish ``count`` real corpus files under distinct names (``copy<i>/<name>``), so
    each is a document of its own; return their doc ids in publishing order."""
    ensure_pipeline_topics(settings, bootstrap)
    blobs = [(rel.rsplit("/", 1)[-1], corpus_file(rel).read_bytes()) for rel in files]
    items: list[tuple[bytes, str, str | None]] = [
        (blobs[i % len(blobs)][1], f"copy{i}/{blobs[i % len(blobs)][0]}", None)
        for i in range(first, first + count)]
    with Publisher(settings, bootstrap) as pub:
        return [p.doc_id for p in pub.publish_many(items, job_id=job)]


# -- the audit log, followed ----------------------------------------------------------------
@dataclass
class Audit:
    """Follows ``docs.events`` and ``docs.executions`` with read_committed, keeping every
    record with its partition, and folding them into a :class:`JobTracker`."""

    settings: Settings
    bootstrap: str
    tracker: JobTracker = field(default_factory=JobTracker)
    events: list[dict[str, Any]] = field(default_factory=list)
    executions: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (partition, rec)

    def __post_init__(self) -> None:
        self.consumer = reader(self.settings, self.bootstrap)
        self.topics = {names.topic(self.settings.topic_prefix, t): t
                       for t in (names.EVENTS, names.EXECUTIONS)}
        meta = self.consumer.list_topics(timeout=10).topics
        self.partitions = [TopicPartition(t, p, OFFSET_BEGINNING)
                           for t in self.topics for p in meta[t].partitions]
        self.consumer.assign(self.partitions)

    def poll(self, seconds: float = 0.3) -> int:
        n, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = self.consumer.consume(2000, timeout=max(0.01, deadline - time.monotonic()))
            for msg in batch:
                if msg.error():
                    continue
                schema, rec = records.decode(msg.value() or b"")
                self.tracker.add(schema, rec)
                if schema == "Execution":
                    self.executions.append((msg.partition(), rec))
                else:
                    self.events.append(rec)
                n += 1
            if not batch:
                break
        return n

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read to the end offsets as of now (what is committed by now is then read)."""
        ends = {(tp.topic, tp.partition): high_watermark(self.consumer, tp)
                for tp in self.partitions}
        deadline = time.monotonic() + timeout
        while True:
            self.poll(0.3)
            positions = self.consumer.position([TopicPartition(t, p) for t, p in ends])
            if all(tp.offset >= ends[(tp.topic, tp.partition)] or ends[(tp.topic, tp.partition)] == 0
                   for tp in positions):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"audit log not read to its end in {timeout}s")

    def snapshot(self, job: str) -> dict[str, Any]:
        return self.tracker.view(job).snapshot()

    def wait(self, job: str, until: Callable[[dict[str, Any]], bool],
             timeout: float = 180.0, what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        snap = self.snapshot(job)
        while time.monotonic() < deadline:
            self.poll(0.5)
            snap = self.snapshot(job)
            if until(snap):
                return snap
        raise AssertionError(f"{what} not reached for job {job} in {timeout}s: {snap}; "
                             f"records still waiting per stage: {self.stuck()}; "
                             f"in-process runners: {describe_workers()}")

    def stuck(self) -> dict[str, dict[str, int]]:
        """Diagnostics for a failed wait: committed records at or past each stage group's
        committed offset, per input partition (empty when every stage has caught up)."""
        try:
            left = waiting(self.settings, self.bootstrap, names.STAGES)
        except Exception as exc:  # noqa: BLE001 - best effort, for the failure message
            return {"error": {repr(exc): 0}}
        return {stage: {f"{t}[{p}]": n for (t, p), n in counts.items()}
                for stage, counts in left.items() if counts}

    def wait_complete(self, job: str, documents: int, timeout: float = 240.0) -> dict[str, Any]:
        return self.wait(job, lambda s: s["documents"] >= documents and s["complete"],
                         timeout, "completion")

    def moved(self, job: str, stages: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
        """Executions and finishing events (anything but holding) per stage of ``job``."""
        wanted = set(stages)
        execs = Counter(r["stage"] for _, r in self.executions
                        if r["job_id"] == job and r["stage"] in wanted)
        done = Counter(e["stage"] for e in self.events if e.get("job_id") == job
                       and e["stage"] in wanted and e["transition"] not in HOLDING)
        return execs, done

    def transitions(self, job: str, transition: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("job_id") == job and e["transition"] == transition]

    def close(self) -> None:
        self.consumer.close()


# -- committed offsets and ends --------------------------------------------------------------
_PARTITIONS: dict[tuple[str, str], list[TopicPartition]] = {}


def input_partitions(settings: Settings, bootstrap: str, stage: str) -> list[TopicPartition]:
    key = (settings.topic_prefix, stage)
    if key not in _PARTITIONS:  # topics never change during a test
        meta = AdminClient(settings.kafka_common(bootstrap)).list_topics(timeout=10).topics
        _PARTITIONS[key] = [TopicPartition(names.topic(settings.topic_prefix, t), p)
                            for t in names.STAGE_INPUTS[stage]
                            for p in meta[names.topic(settings.topic_prefix, t)].partitions]
    return [TopicPartition(tp.topic, tp.partition) for tp in _PARTITIONS[key]]


def committed(settings: Settings, bootstrap: str, stages: Iterable[str]
              ) -> dict[str, dict[tuple[str, int], int]]:
    """The stage groups' committed offsets, per (logical topic, partition); 0 = none yet."""
    admin = AdminClient(settings.kafka_common(bootstrap))
    out: dict[str, dict[tuple[str, int], int]] = {}
    for stage in stages:  # one group per request (the client's limit)
        group = names.group_id(settings.topic_prefix, stage)
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
            group, input_partitions(settings, bootstrap, stage))])[group].result(timeout=15)
        out[stage] = {(tp.topic[len(settings.topic_prefix):], tp.partition): max(tp.offset, 0)
                      for tp in result.topic_partitions}
    return out


def ends(settings: Settings, bootstrap: str, stages: Iterable[str]
         ) -> dict[str, dict[tuple[str, int], int]]:
    consumer = reader(settings, bootstrap)
    try:
        return {stage: {(tp.topic[len(settings.topic_prefix):], tp.partition):
                        high_watermark(consumer, tp)
                        for tp in input_partitions(settings, bootstrap, stage)}
                for stage in stages}
    finally:
        consumer.close()


def waiting(settings: Settings, bootstrap: str, stages: Iterable[str]
            ) -> dict[str, Counter[tuple[str, int]]]:
    """Committed records not yet consumed, per stage and input partition: those at or
    beyond the stage group's committed offset (offsets alone would count the
    transaction markers too)."""
    offsets = committed(settings, bootstrap, stages)
    out: dict[str, Counter[tuple[str, int]]] = {}
    for stage in stages:
        counts: Counter[tuple[str, int]] = Counter()
        for logical in names.STAGE_INPUTS[stage]:
            for part, off, *_ in read_located(settings, bootstrap, logical):
                if off >= offsets[stage][(logical, part)]:
                    counts[(logical, part)] += 1
        out[stage] = counts
    return out


def acked_offsets(report: AckReport, stage: str) -> dict[tuple[str, int], int]:
    """The committed offsets the stage's workers reported in their acknowledgements."""
    out: dict[tuple[str, int], int] = {}
    for (st, _), ack in report.acks.items():
        if st == stage:
            for c in ack["committed"]:
                out[(c["topic"], c["partition"])] = max(c["offset"], 0)
    return out


# -- commands ---------------------------------------------------------------------------------
def command(settings: Settings, bootstrap: str, scope: str, state: str, *, mode: str = "drain",
            timeout: float = 60.0) -> tuple[dict[str, Any], AckReport]:
    """Write desired state and wait until every live worker of the affected stages has
    acknowledged it. The acks topic is positioned at its end before the command is
    written, so no acknowledgement can be missed (see test_pause_wait_sees_every_ack)."""
    topic = names.topic(settings.topic_prefix, names.CONTROL_ACKS)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, high_watermark(consumer, TopicPartition(topic, p)))
                         for p in meta.partitions])
        started = time.monotonic()
        entry = ControlClient(settings, bootstrap).set_state(scope, state, reason="test",
                                                             mode=mode, by="pytest")
        report = AckReport(entry)
        stages = affected_stages(scope)
        next_members = 0.0
        while not report.complete:
            assert time.monotonic() - started < timeout, (
                f"{state} {scope} not acknowledged by {report.missing()} in {timeout}s")
            if time.monotonic() >= next_members:
                report.expected = live_members(settings, bootstrap, stages)
                next_members = time.monotonic() + 1.0
            for msg in consumer.consume(100, timeout=0.1):
                if not msg.error():
                    _, ack = records.decode(msg.value(), expect="ControlAck")
                    if ack["command_id"] == entry["command_id"]:
                        report.acks[(ack["stage"], ack["worker"])] = ack
            report.complete = bool(report.expected) and not report.missing()
        report.seconds = time.monotonic() - started
        return entry, report
    finally:
        consumer.close()


def wait_members(settings: Settings, bootstrap: str, workers: set[str],
                 timeout: float = 60.0) -> None:
    """Until the stage groups' live members are exactly ``workers`` (for every stage)."""
    want = {(s, w) for s in names.STAGES for w in workers}
    deadline = time.monotonic() + timeout
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        seen = live_members(settings, bootstrap, names.STAGES)
        if seen == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"live members {sorted(seen)} != {sorted(want)} after {timeout}s")


def assert_nothing_moves(settings: Settings, bootstrap: str, audit: Audit, job: str,
                         stages: Iterable[str], seconds: float, *, offsets: bool = True,
                         also: Callable[[], Any] | None = None) -> dict[str, Any]:
    """For ``seconds``, sample what the paused scope has committed: the stage groups'
    committed offsets (``offsets``), and the job's executions and finishing events at
    those stages, read with read_committed. Every sample must equal the first.
    ``also`` runs between samples (to let something else happen meanwhile)."""
    stages = list(stages)

    def sample() -> dict[str, Any]:
        audit.catch_up()
        execs, done = audit.moved(job, stages)
        out: dict[str, Any] = {"executions": dict(execs), "done": dict(done)}
        if offsets:
            out["committed"] = committed(settings, bootstrap, stages)
        return out

    first = sample()
    started = time.monotonic()
    samples = 1
    while time.monotonic() - started < seconds:
        if also is not None:
            also()
        time.sleep(1.0)
        now = sample()
        samples += 1
        assert now == first, (f"paused scope moved after {time.monotonic() - started:.1f}s:"
                              f"\nbefore {first}\nnow    {now}")
    first["samples"] = samples
    first["seconds"] = time.monotonic() - started
    return first


def terminal_counts(settings: Settings, bootstrap: str) -> Counter[str]:
    """Terminal records per doc_id (routed, review task, dead letter), read_committed."""
    return Counter(key for t in TERMINAL for key, _, _ in read_all(settings, bootstrap, t))


def read_all(settings: Settings, bootstrap: str, logical: str, timeout: float = 60.0,
             ) -> list[tuple[str, str, dict[str, Any]]]:
    return [(k, s, r) for _, _, k, s, r in read_located(settings, bootstrap, logical, timeout)]


def read_located(settings: Settings, bootstrap: str, logical: str, timeout: float = 60.0,
                 ) -> list[tuple[int, int, str, str, dict[str, Any]]]:
    """Every committed record of a topic with where it is: (partition, offset, key,
    schema, record); raises rather than return a partial read."""
    topic = names.topic(settings.topic_prefix, logical)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        high = {tp.partition: high_watermark(consumer, tp) for tp in parts}
        consumer.assign(parts)
        out = []
        deadline = time.monotonic() + timeout
        while True:
            for msg in consumer.consume(1000, timeout=0.3):
                if not msg.error():
                    schema, rec = records.decode(msg.value() or b"")
                    out.append((msg.partition(), msg.offset(), msg.key().decode(), schema, rec))
            positions = consumer.position([TopicPartition(topic, p) for p in high])
            if all(tp.offset >= high[tp.partition] or high[tp.partition] == 0
                   for tp in positions):
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end in {timeout}s")
    finally:
        consumer.close()


def assert_exactly_once(settings: Settings, bootstrap: str, audit: Audit, job: str,
                        doc_ids: list[str]) -> dict[str, Any]:
    """The job is complete; every stage executed each document exactly as often as it
    finished it (nothing redone) and finished every document it should; every document
    has exactly one terminal record (nothing lost, nothing doubled)."""
    audit.catch_up()
    snap = audit.snapshot(job)
    assert snap["complete"] and snap["documents"] == len(doc_ids), snap
    for stage, st in snap["stages"].items():
        assert st["executions"] == st["done"] == st["expected"], (stage, st)
    assert snap["stages"]["parse"]["done"] == len(doc_ids)
    terminal = terminal_counts(settings, bootstrap)
    mine = {d: terminal[d] for d in doc_ids}
    assert set(mine.values()) == {1}, Counter(mine.values())
    assert sum(snap["outcomes"].values()) == len(doc_ids)
    return snap


def assert_parse_order_kept(settings: Settings, bootstrap: str, audit: Audit, job: str) -> None:
    """Parked records came back in their original order: within each partition, the parse
    stage executed the job's documents in the order they were submitted."""
    submitted: dict[int, list[str]] = defaultdict(list)
    for part, _, key, _, rec in read_located(settings, bootstrap, names.SUBMITTED):
        if rec["doc"]["job_id"] == job:
            submitted[part].append(key)
    executed: dict[str, list[str]] = defaultdict(list)
    where = {d: p for p, keys in submitted.items() for d in keys}
    for part, rec in audit.executions:  # per partition in offset order
        if rec["job_id"] == job and rec["stage"] == "parse":
            executed[f"{where[rec['doc_id']]}/{part}"].append(rec["doc_id"])
    per_partition = {int(k.split("/")[0]): v for k, v in executed.items()}
    assert len(per_partition) == len(executed), "executions of one partition spread out"
    assert per_partition == dict(submitted)


# -- workers ------------------------------------------------------------------------
def worker_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("DOCSTREAMS_FAULT_AT", "DOCSTREAMS_ALLOW_FAULT_INJECTION"):
        env.pop(var, None)
    env.update({
        "DOCSTREAMS_BOOTSTRAP": bootstrap,
        "DOCSTREAMS_HOME": str(settings.home),
        "DOCSTREAMS_TOPIC_PREFIX": settings.topic_prefix,
        "DOCSTREAMS_PARTITIONS": str(settings.partitions),
        "DOCSTREAMS_BATCH_MAX_DOCS": str(settings.batch_max_docs),
        "DOCSTREAMS_BATCH_MAX_SECONDS": str(settings.batch_max_seconds),
        "DOCSTREAMS_RETRY_BACKOFF_S": str(settings.retry_backoff_s),
    })
    return env


def spawn_worker(settings: Settings, bootstrap: str, worker_id: str) -> subprocess.Popen[bytes]:
    """``python -m streams worker`` in a process group of its own (with its parse pool)."""
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"worker-{worker_id}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "-v", "worker", "--worker-id", worker_id],
            env=worker_env(settings, bootstrap), cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its parse pool (its process group, whose id is its pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    kill9(proc)


def log_tail(settings: Settings, worker_id: str, lines: int = 30) -> str:
    path = settings.home / "logs" / f"worker-{worker_id}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
