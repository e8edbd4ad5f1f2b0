"""Crash bug classes on the real broker: each test breaks the pipeline at one exact place
and then reads everything back with read_committed, asserting that every document has
exactly one outcome, one sink row and at most one record on every intermediate topic
(nothing lost, nothing doubled), and that the redone work shows in the execution counts.

Worker kills use the runtime's fault-injection points (``DOCSTREAMS_FAULT_AT``), which
SIGKILL a real ``docstreams worker`` subprocess at that step of the commit sequence.
Parse hangs and segfaults use the parse pool's test-only fault hook, in real child
processes. Rebalances and fencing use real second group members and real producers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams import broker, names
from streams.blobs import BlobStore
from streams.control import PAUSED, RESUMED, ControlClient
from streams.extract import RuleExtractor
from streams.kafka import transactional_producer
from streams.parse_pool import ParsePool, ParseRequest
from streams.publish import Publisher
from streams.runtime import StageRunner
from streams.secrets import SecretStore
from streams.settings import Settings
from streams.stages import ExtractStage, ParseStage, RouteStage, ValidateStage
from streams.worker import Worker, ensure_pipeline_topics
from tests.corpus import corpus_file
from tests.integration.pipeline import (
    exactly_once,
    read_topic_fully,
    sink_row_counts,
    spawn_worker,
    stop_worker,
    wait_exit,
    wait_for_job,
)

DOCS = ["real/invoice_aws.pdf", "real/invoice_netpresse.pdf", "real/invoice_azure_interior.pdf",
        "real/cuad_cooperation_spi_energy.pdf", "bad/trunc_invoice_aws_first_1kb.pdf"]
SIGKILLED = -signal.SIGKILL


# --- helpers -----------------------------------------------------------------------------

def publish(settings: Settings, bootstrap: str, job: str,
            rels: Sequence[str] = DOCS) -> dict[str, str]:
    """Publish corpus files; return doc_id -> source."""
    ensure_pipeline_topics(settings, bootstrap)
    with Publisher(settings, bootstrap) as pub:
        return {pub.publish_bytes(corpus_file(rel).read_bytes(), source=rel, job_id=job).doc_id:
                rel for rel in rels}


def sha_of(rel: str) -> str:
    return hashlib.sha256(corpus_file(rel).read_bytes()).hexdigest()


def assert_exact(settings: Settings, bootstrap: str, docs: dict[str, str],
                 job: str | None) -> None:
    check = exactly_once(settings, bootstrap, set(docs), job)
    assert check.exact, check.describe()


def events(settings: Settings, bootstrap: str) -> list[dict[str, Any]]:
    return [rec for _, schema, rec in read_topic_fully(settings, bootstrap, names.EVENTS)
            if schema == "LifecycleEvent"]


def redone(snap: dict[str, Any], stage: str) -> int:
    st = snap["stages"][stage]
    return int(st["executions"] - st["done"])


class HookedRunner(StageRunner):
    """A real stage runner with a test hook at one of the runtime's fault points: the hook
    runs once, in the runner's thread, at that exact step (instead of a SIGKILL)."""

    def __init__(self, *args: Any, hooks: dict[str, Callable[[StageRunner], None]],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks = dict(hooks)
        self.fired: list[str] = []

    def _fault(self, point: str) -> None:
        hook = self.hooks.pop(point, None)
        if hook is not None:
            self.fired.append(point)
            hook(self)
        super()._fault(point)


@contextmanager
def running(*runners: StageRunner) -> Iterator[None]:
    threads = [threading.Thread(target=r.run, name=f"test-{r.stage.name}-{r.worker_id}",
                                daemon=True) for r in runners]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for r in runners:
            r.stop()
        for t in threads:
            t.join(30)


@contextmanager
def worker(settings: Settings, bootstrap: str, worker_id: str,
           stages: Sequence[str] = names.STAGES, cls: type[Worker] = Worker,
           **kwargs: Any) -> Iterator[Worker]:
    w = cls(settings, bootstrap, worker_id, stages, **kwargs)
    w.start()
    try:
        yield w
    finally:
        w.stop()


class FaultyParsePool(ParsePool):
    """The real process pool, with the test-only fault hook switched on for chosen
    documents (by content digest): each listed fault is used by one attempt, in order."""

    def __init__(self, faults: dict[str, list[str]], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_faults=True, **kwargs)
        self.faults = {sha: list(queue) for sha, queue in faults.items()}

    def parse_many(self, requests: list[ParseRequest]) -> list[Any]:
        return super().parse_many([self._arm(r) for r in requests])

    def _arm(self, request: ParseRequest) -> ParseRequest:
        queue = self.faults.get(request.expected_sha256 or "")
        return dataclasses.replace(request, fault=queue.pop(0)) if queue else request


class FaultyWorker(Worker):
    def __init__(self, settings: Settings, bootstrap: str, worker_id: str,
                 stages: Sequence[str] = names.STAGES, *, faults: dict[str, list[str]]) -> None:
        super().__init__(settings, bootstrap, worker_id, stages)
        self.faults = faults

    def _stage(self, name: str) -> Any:
        if name != "parse":
            return super()._stage(name)
        s = self.settings
        self.pool = FaultyParsePool(self.faults, s.parse_workers, s.parse_timeout_s,
                                    s.parse_memory_mb)
        return ParseStage(BlobStore(s.blob_dir), SecretStore(s.home / "secrets"), self.pool)


# --- kill -9 during commit -------------------------------------------------------------------

@pytest.mark.parametrize("stage, point", [
    ("extract", "after_produce"),   # outputs and changelog produced, offsets not sent
    ("route", "before_commit"),     # offsets sent to the transaction, commit never called
    ("parse", "after_commit"),      # committed, local RocksDB not yet updated
])
def test_kill9_during_commit_loses_and_doubles_nothing(settings, bootstrap, stage, point):
    job = f"kill-{stage}"
    docs = publish(settings, bootstrap, job)
    first = spawn_worker(settings, bootstrap, "k1", fault_at=f"{stage}:{point}:1")
    assert wait_exit(first, 180) == SIGKILLED
    # Restarted with the same id: it fences its zombie's transaction and restores state.
    again = spawn_worker(settings, bootstrap, "k1")
    try:
        snap = wait_for_job(settings, bootstrap, job, len(docs))
    finally:
        stop_worker(again)
    assert_exact(settings, bootstrap, docs, job)
    if point == "after_commit":
        assert redone(snap, stage) == 0, snap  # committed work is never redone
    else:
        assert redone(snap, stage) > 0, snap   # the killed batch was redone, and it shows

    if stage == "parse":
        # The seen-markers of the killed worker's last commit never reached its RocksDB;
        # the restart restored them from the changelog, so a re-publish is a no-op.
        republished = publish(settings, bootstrap, job)
        assert republished == docs
        with worker(settings, bootstrap, "k1"):
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                ignored = {e["subject"] for e in events(settings, bootstrap)
                           if e["transition"] == "duplicate_ignored"}
                if ignored >= set(docs):
                    break
                time.sleep(1)
        assert ignored >= set(docs)
        assert_exact(settings, bootstrap, docs, job)


def test_crash_after_local_writes_before_commit(settings, bootstrap):
    """Parse caches its artifact and the sink writes SQLite + JSON before the Kafka commit;
    a kill -9 right there redoes the batch against what was already written."""
    job = "local-writes"
    docs = publish(settings, bootstrap, job)
    first = spawn_worker(settings, bootstrap, "l1", fault_at="parse:before_commit:1")
    assert wait_exit(first, 180) == SIGKILLED
    second = spawn_worker(settings, bootstrap, "l1", fault_at="sink:before_commit:1")
    assert wait_exit(second, 180) == SIGKILLED
    written = sink_row_counts(settings.sink_path, job)
    assert written, "the sink wrote rows before its commit was killed"
    third = spawn_worker(settings, bootstrap, "l1")
    try:
        snap = wait_for_job(settings, bootstrap, job, len(docs))
    finally:
        stop_worker(third)
    assert_exact(settings, bootstrap, docs, job)
    assert redone(snap, "parse") > 0 and redone(snap, "sink") > 0, snap
    parsed = [e for e in events(settings, bootstrap) if e["transition"] == "parsed"]
    assert Counter(e["subject"] for e in parsed) == Counter(
        d for d in docs if not docs[d].startswith("bad/trunc")), parsed
    assert any("cached artifact" in e["detail"] for e in parsed), \
        "the redone parse reused the artifact cached before the kill"
    db = sqlite3.connect(settings.sink_path)
    rewritten = db.execute("SELECT COUNT(*) FROM decisions WHERE job_id = ? AND "
                           "last_written_at_ms > first_written_at_ms", (job,)).fetchone()[0]
    db.close()
    assert rewritten > 0, "the redone sink batch upserted the rows it had written"


# --- a rebalance between producing outputs and sending offsets ----------------------------------

def _members(settings: Settings, bootstrap: str, stage: str) -> tuple[str, int]:
    group = names.group_id(settings.topic_prefix, stage)
    admin = AdminClient(settings.kafka_common(bootstrap))
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return str(desc.state), len(desc.members)


def test_rebalance_between_produce_and_send_offsets(settings, bootstrap):
    """Runner A has produced a validate batch in its open transaction when runner B joins
    the group; only then does A send its offsets and commit."""
    job = "rebalance"
    docs = publish(settings, bootstrap, job)
    seen: list[tuple[str, int]] = []
    second = StageRunner(ValidateStage(), settings, bootstrap, "b")
    second_thread = threading.Thread(target=second.run, daemon=True)

    def join_second_member(runner: StageRunner) -> None:
        second_thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen.append(_members(settings, bootstrap, "validate"))
            if seen[-1][1] == 2:
                break
            time.sleep(0.2)

    first = HookedRunner(ValidateStage(), settings, bootstrap, "a",
                         hooks={"after_produce": join_second_member})
    try:
        with worker(settings, bootstrap, "w", [s for s in names.STAGES if s != "validate"]), \
                running(first):
            snap = wait_for_job(settings, bootstrap, job, len(docs))
    finally:
        second.stop()
        if second_thread.ident is not None:
            second_thread.join(30)
    assert first.fired == ["after_produce"]
    assert any(n == 2 for _, n in seen), f"B never joined while A held its transaction: {seen}"
    assert_exact(settings, bootstrap, docs, job)
    validate = snap["stages"]["validate"]
    assert validate["done"] == validate["expected"] <= validate["executions"], validate
    print(f"group seen while A held its transaction: {seen}; A commits={first.commits} "
          f"aborts={first.aborts}; B commits={second.commits}; validate {validate}")


def test_worker_killed_after_produce_partitions_move_to_the_other(settings, bootstrap):
    """w1 dies holding an open transaction; its partitions move to w2 (a rebalance) and
    the dead transaction is aborted by the coordinator after transaction.timeout.ms."""
    settings = settings.replace(transaction_timeout_ms=10_000, batch_max_seconds=2.0)
    job = "handover"
    docs = publish(settings, bootstrap, job)
    survivor = spawn_worker(settings, bootstrap, "h2")
    doomed = spawn_worker(settings, bootstrap, "h1", fault_at="validate:after_produce:1")
    try:
        assert wait_exit(doomed, 180) == SIGKILLED
        snap = wait_for_job(settings, bootstrap, job, len(docs), timeout=240)
    finally:
        stop_worker(survivor)
        stop_worker(doomed)
    assert_exact(settings, bootstrap, docs, job)
    assert redone(snap, "validate") > 0, snap
    validated_by = {e["worker"] for e in events(settings, bootstrap)
                    if e["stage"] == "validate" and e["transition"] == "validated"}
    assert "h2" in validated_by


class WatchedRunner(StageRunner):
    """Records, in its own thread, the input topic-partitions it consumes and those its
    state stores cover (the consumer is not to be shared across threads). A store keyed
    by a partition number covers that partition of every input topic."""

    consumed: frozenset[tuple[str, int]] = frozenset()
    covered: frozenset[tuple[str, int]] = frozenset()

    def run_once(self) -> None:
        super().run_once()
        if self.consumer is None:
            return
        logical = [t[len(self.prefix):] for t in self.inputs]
        self.consumed = frozenset((tp.topic[len(self.prefix):], tp.partition)
                                  for tp in self.consumer.assignment())
        self.covered = frozenset(
            pair for key in self.stores
            for pair in ([(t, key) for t in logical] if isinstance(key, int) else [tuple(key)]))


def test_two_topic_stage_keeps_one_store_owner_per_partition(settings, bootstrap):
    """Route reads docs.validated and docs.review.decisions. When a second member joins,
    every input partition a runner consumes must still have its state store, and no
    store may have two owners (both would restore, and replay, the same parked records)."""
    ensure_pipeline_topics(settings, bootstrap)
    first = WatchedRunner(RouteStage(settings), settings, bootstrap, "a")
    second = WatchedRunner(RouteStage(settings), settings, bootstrap, "b")
    with running(first):
        time.sleep(6)
        with running(second):
            time.sleep(12)
            views = {r.worker_id: (sorted(r.consumed), sorted(r.covered))
                     for r in (first, second)}
    for worker_id, (consumed, covered) in views.items():
        assert consumed and set(consumed) <= set(covered), \
            f"{worker_id} consumes partitions without their store: {views}"
    assert not set(views["a"][1]) & set(views["b"][1]), f"a store with two owners: {views}"


def test_scale_out_while_a_job_is_parked_routes_each_document_once(settings, bootstrap):
    """Route reads two topics and keeps one store per input topic-partition. A second worker
    joins while a paused job's records sit parked in route's stores; after the resume,
    each parked document must come back once, and both workers must keep running."""
    ctl = ControlClient(settings, bootstrap)
    parked_job, live_job = "parked", "live"
    with worker(settings, bootstrap, "a") as first:
        ctl.set_state("stage:route", PAUSED, reason="test")
        docs = publish(settings, bootstrap, parked_job, DOCS[:4])
        _wait_events(settings, bootstrap, "validate", "validated", len(docs))
        ctl.set_state(f"job:{parked_job}", PAUSED, reason="test")
        time.sleep(2)
        ctl.set_state("stage:route", RESUMED, reason="test")
        _wait_events(settings, bootstrap, "route", "parked", len(docs))
        with worker(settings, bootstrap, "b", ["route"]) as second:
            time.sleep(10)  # the route group rebalances over the two workers
            ctl.set_state(f"job:{parked_job}", RESUMED, reason="test")
            docs.update(publish(settings, bootstrap, live_job, DOCS[1:3]))
            wait_for_job(settings, bootstrap, parked_job, 4)
            wait_for_job(settings, bootstrap, live_job, 2)
            time.sleep(5)  # a second copy of a parked record would come back by now
            alive = {"a": first.alive(), "b": second.alive()}
    check = exactly_once(settings, bootstrap, set(docs))
    assert check.exact, check.describe()
    assert alive == {"a": True, "b": True}, alive


def _wait_events(settings: Settings, bootstrap: str, stage: str, transition: str, count: int,
                 timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {e["subject"] for e in events(settings, bootstrap)
                 if e["stage"] == stage and e["transition"] == transition}
        if len(found) >= count:
            return
        time.sleep(1)
    raise AssertionError(f"{count} {stage} {transition} events not seen in {timeout}s")


def test_broker_restart_between_batches_wedges_no_runner(tmp_path, own_broker):
    """After a broker restart, librdkafka's send_offsets_to_transaction can block far past
    its timeout (confluentinc/librdkafka#5456, #5511); a runner stuck there would hold its
    partitions, and with one worker the job would never finish. The runtime's watchdog
    (streams.kafka.within) rebuilds the runner's clients instead. On a broker of its own."""
    own = own_broker
    bootstrap = broker.start(own, timeout=120).bootstrap
    settings = Settings(home=tmp_path / "home", bootstrap=bootstrap, kafka_log_level=2)
    try:
        with worker(settings, bootstrap, "r1") as w:
            before = publish(settings, bootstrap, "before", DOCS[:3])
            wait_for_job(settings, bootstrap, "before", len(before))
            broker.stop(own)
            time.sleep(3)
            assert broker.start(own, timeout=120).bootstrap == bootstrap
            after = publish(settings, bootstrap, "after", DOCS[:3])
            wait_for_job(settings, bootstrap, "after", len(after), timeout=300)
            assert w.alive()
        assert_exact(settings, bootstrap, {**before, **after}, None)
    finally:
        broker.stop(own)


# --- transaction timeout and fencing -------------------------------------------------------------

def test_slow_parse_longer_than_the_transaction_timeout(settings, bootstrap):
    """The runtime opens its transaction only after the batch is processed: a parse that
    hangs for several transaction timeouts (and past the coordinator's abort sweep) leaves
    no transaction to expire. The hung attempt is killed, retried and succeeds."""
    settings = settings.replace(transaction_timeout_ms=2000, batch_max_seconds=0.5,
                                parse_timeout_s=12.0, retry_backoff_s=0.2)
    job = "slow"
    docs = publish(settings, bootstrap, job)
    slow = "real/invoice_netpresse.pdf"
    with worker(settings, bootstrap, "s", cls=FaultyWorker,
                faults={sha_of(slow): ["hang"]}) as w:
        started = time.monotonic()
        snap = wait_for_job(settings, bootstrap, job, len(docs))
        elapsed = time.monotonic() - started
        aborts = {r.stage.name: r.aborts for r in w.runners}
    assert elapsed > 12  # the hang really outlived the 2 s transaction timeout
    assert aborts["parse"] == 0, aborts  # no transaction was open while it hung
    assert_exact(settings, bootstrap, docs, job)
    assert redone(snap, "parse") == 1, snap  # the killed attempt, counted
    slow_id = next(d for d, rel in docs.items() if rel == slow)
    retries = [e for e in events(settings, bootstrap)
               if e["subject"] == slow_id and e["transition"] == "retry_scheduled"]
    assert len(retries) == 1 and "parse_timeout" in retries[0]["detail"], retries


class Fence:
    """A hook that starts a second producer with the runner's transactional id: its
    init_transactions bumps the epoch, aborts the open transaction and fences the runner."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.intruders: list[Any] = []

    def __call__(self, runner: StageRunner) -> None:
        txn_id = names.transactional_id(self.settings.topic_prefix, runner.stage.name,
                                        runner.worker_id)
        self.intruders.append(transactional_producer(self.settings, self.bootstrap, txn_id))


def test_zombie_fenced_mid_commit_recovers(settings, bootstrap):
    job = "fenced"
    docs = publish(settings, bootstrap, job)
    fence = Fence(settings, bootstrap)
    runner = HookedRunner(ExtractStage(BlobStore(settings.blob_dir), RuleExtractor()), settings,
                          bootstrap, "z", hooks={"after_produce": fence})
    with worker(settings, bootstrap, "w", [s for s in names.STAGES if s != "extract"]), \
            running(runner):
        snap = wait_for_job(settings, bootstrap, job, len(docs))
    assert runner.fired == ["after_produce"] and runner.aborts >= 1
    assert_exact(settings, bootstrap, docs, job)
    assert redone(snap, "extract") > 0, snap
    # The runner's rebuilt producer fenced the intruder in turn: it can commit nothing.
    (intruder,) = fence.intruders
    with pytest.raises(KafkaException):
        intruder.begin_transaction()
        intruder.produce(names.topic(settings.topic_prefix, names.ROUTED), key=b"zombie",
                         value=b"not a record")
        intruder.commit_transaction(30)
    assert_exact(settings, bootstrap, docs, job)


def test_transaction_expiring_mid_commit_recovers(settings, bootstrap):
    """A stall between produce and commit longer than transaction.timeout.ms: the
    coordinator aborts the transaction and bumps the epoch; the runner recovers."""
    settings = settings.replace(transaction_timeout_ms=2000, batch_max_seconds=0.5)
    job = "expired"
    docs = publish(settings, bootstrap, job)
    runner = HookedRunner(ExtractStage(BlobStore(settings.blob_dir), RuleExtractor()), settings,
                          bootstrap, "x", hooks={"after_produce": lambda r: time.sleep(15)})
    with worker(settings, bootstrap, "w", [s for s in names.STAGES if s != "extract"]), \
            running(runner):
        snap = wait_for_job(settings, bootstrap, job, len(docs))
    assert runner.fired == ["after_produce"] and runner.aborts >= 1
    assert_exact(settings, bootstrap, docs, job)
    assert redone(snap, "extract") > 0, snap


# --- work isolation: a parse that hangs, a child that segfaults -----------------------------------

@pytest.mark.parametrize("fault, reason", [("hang", "parse_timeout"), ("segv", "parse_crashed")])
def test_parse_child_fault_is_retried_then_dead_lettered(settings, bootstrap, fault, reason):
    settings = settings.replace(parse_timeout_s=2.0, max_attempts=2, retry_backoff_s=0.2)
    job = f"child-{fault}"
    docs = publish(settings, bootstrap, job)
    always, once = "real/invoice_aws.pdf", "real/invoice_netpresse.pdf"
    faults = {sha_of(always): [fault] * 5, sha_of(once): [fault]}
    with worker(settings, bootstrap, "p", cls=FaultyWorker, faults=faults) as w:
        snap = wait_for_job(settings, bootstrap, job, len(docs))
        assert w.alive()  # one bad document never kills the worker
    assert_exact(settings, bootstrap, docs, job)
    check = exactly_once(settings, bootstrap, set(docs), job)
    by_rel = {rel: d for d, rel in docs.items()}
    assert check.dead_at.get(by_rel[always]) == "parse"
    assert by_rel[once] not in check.dead_at  # one bad attempt, then parsed
    dead = [rec for _, _, rec in read_topic_fully(settings, bootstrap, names.DEADLETTER)
            if rec["doc"]["doc_id"] == by_rel[always]]
    assert dead[0]["reason"] == reason and len(dead[0]["attempts"]) == 2, dead
    assert redone(snap, "parse") == 2, snap  # the two failed attempts, counted
