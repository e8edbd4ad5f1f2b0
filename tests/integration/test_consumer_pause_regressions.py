"""Regression tests for the Kafka client bug classes that break pause and resume.

1. A partition that returns to a consumer which had paused it must continue from the
   group's committed offset, not from the position the consumer kept from before.
2. A seek issued before (or during) a pause must be honoured after resume.
3. After a rebalance during a pause, every partition must make progress after resume
   (none left paused, none left without a fetch position).

Each is shown twice: on the bare confluent-kafka consumer, on dedicated topics (the
client behaviour the runtime relies on), and through :class:`StageRunner` with a
trivial stage on the real pipeline topics (the runtime's own handling: pause re-applied
on assignment, seek to committed on resume, an aborted batch sought back before a
``--now`` pause).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams import names
from streams.control import PAUSED, RESUMED, Desired
from streams.inputs import InputRecord
from streams.outcomes import Note, StageResult
from streams.publish import Publisher
from streams.runtime import StageRunner
from streams.settings import Settings
from streams.state import StatePort
from streams.worker import ensure_pipeline_topics
from tests.integration.pause_support import committed, read_all, read_located

# -- the bare client ------------------------------------------------------------------------


def make_topic(settings: Settings, bootstrap: str, name: str, partitions: int,
               per_partition: int) -> str:
    topic = f"{settings.topic_prefix}{name}"
    admin = AdminClient(settings.kafka_common(bootstrap))
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)
    producer = Producer({**settings.kafka_common(bootstrap), "enable.idempotence": True})
    deadline = time.monotonic() + 30
    while True:  # a new topic's leaders can take a moment
        meta = admin.list_topics(topic, timeout=10).topics[topic]
        if len(meta.partitions) == partitions and all(
                p.leader >= 0 for p in meta.partitions.values()):
            break
        assert time.monotonic() < deadline, "topic not ready"
        time.sleep(0.2)
    for p in range(partitions):
        for i in range(per_partition):
            producer.produce(topic, key=f"{p}-{i}".encode(), value=str(i).encode(), partition=p)
    assert producer.flush(30) == 0
    return topic


@dataclass
class Member:
    """A group member that, like a stage runner, re-applies its pause on every
    assignment (a consumer's pause flag does not survive a partition's move)."""

    settings: Settings
    bootstrap: str
    group: str
    topic: str
    name: str
    paused: bool = False
    seen: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumer = Consumer({
            **self.settings.kafka_common(self.bootstrap), "group.id": self.group,
            "client.id": self.name, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        self.consumer.subscribe([self.topic], on_assign=self._on_assign)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if self.paused:
            consumer.pause(partitions)

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def pause(self) -> None:
        self.paused = True
        self.consumer.pause(self.consumer.assignment())

    def resume(self, *, seek_committed: bool) -> None:
        assignment = self.consumer.assignment()
        if seek_committed:
            for tp in self.consumer.committed(assignment, timeout=30):
                if tp.offset >= 0:
                    self.consumer.seek(tp)
        self.consumer.resume(assignment)
        self.paused = False

    def poll(self, seconds: float, limit: int = 1000) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(got) < limit:
            for msg in self.consumer.consume(limit - len(got), timeout=0.1):
                if not msg.error():
                    got.append((msg.partition(), msg.offset()))
        self.seen += got
        return got

    def commit(self, partition: int, offset: int) -> None:
        self.consumer.commit(offsets=[TopicPartition(self.topic, partition, offset)],
                             asynchronous=False)

    def close(self) -> None:
        self.consumer.close()


def poll_all(members: list[Member], seconds: float) -> None:
    """Keep every member polling (group membership and rebalances need it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.05)


def until(members: list[Member], cond: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        poll_all(members, 0.2)


def test_client_partition_returning_to_a_paused_consumer_starts_at_the_committed_offset(
        settings, bootstrap):
    topic = make_topic(settings, bootstrap, "ret", partitions=2, per_partition=40)
    group = f"{settings.topic_prefix}ret"
    one = Member(settings, bootstrap, group, topic, "one")
    two: Member | None = None
    try:
        until([one], lambda: len({p for p, o in one.seen if o >= 9}) == 2, what="one reads")
        for p in (0, 1):
            one.commit(p, 5)  # committed 5; the consumer's own position is past 10
        one.pause()
        old = {p: max(o for q, o in one.seen if q == p) + 1 for p in (0, 1)}
        assert min(old.values()) >= 10

        two = Member(settings, bootstrap, group, topic, "two")
        until([one, two], lambda: len(two.assigned()) == 1 and len(one.assigned()) == 1,
              what="a partition to move")
        moved = next(iter(two.assigned()))
        until([one, two], lambda: any(p == moved and o >= 19 for p, o in two.seen),
              what="two reads")
        assert min(o for p, o in two.seen if p == moved) == 5  # from the committed offset
        two.commit(moved, 20)
        two.close()
        two = None
        until([one], lambda: one.assigned() == {0, 1}, what="the partition to return")

        assert one.poll(2.0) == [], "a paused consumer delivered a returning partition"
        mark = len(one.seen)
        one.resume(seek_committed=False)  # the plain client: no help from the runtime
        until([one], lambda: any(p == moved for p, _ in one.seen[mark:]), what="resume")
        first = next(o for p, o in one.seen[mark:] if p == moved)
        assert first == 20, (f"the returned partition resumed at {first}: committed 20, "
                             f"the consumer's old position {old[moved]}")
    finally:
        for m in (one, two):
            if m is not None:
                m.close()


@pytest.mark.parametrize("when", ["before_pause", "during_pause"])
def test_client_seek_before_or_during_a_pause_is_honoured_after_resume(settings, bootstrap,
                                                                        when):
    topic = make_topic(settings, bootstrap, "seek", partitions=1, per_partition=30)
    consumer = Consumer({**settings.kafka_common(bootstrap),
                         "group.id": f"{settings.topic_prefix}seek",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    tp = TopicPartition(topic, 0)

    def take(n: int, seconds: float = 15.0) -> list[int]:
        out: list[int] = []
        deadline = time.monotonic() + seconds
        while len(out) < n and time.monotonic() < deadline:
            out += [m.offset() for m in consumer.consume(n - len(out), timeout=0.2)
                    if not m.error()]
        return out

    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        assert take(12) == list(range(12))
        if when == "before_pause":
            consumer.seek(TopicPartition(topic, 0, 3))
            consumer.pause([tp])
        else:
            consumer.pause([tp])
            consumer.seek(TopicPartition(topic, 0, 3))
        assert take(5, 2.0) == []  # paused: nothing
        consumer.resume([tp])
        assert take(4) == [3, 4, 5, 6]
    finally:
        consumer.close()


def test_client_every_partition_progresses_after_rebalances_during_a_pause(settings, bootstrap):
    parts, per = 4, 25
    topic = make_topic(settings, bootstrap, "rebal", partitions=parts, per_partition=per)
    group = f"{settings.topic_prefix}rebal"
    one = Member(settings, bootstrap, group, topic, "one", paused=True)  # comes up paused
    members = [one]
    try:
        until(members, lambda: one.assigned() == set(range(parts)), what="one assigned")
        two = Member(settings, bootstrap, group, topic, "two", paused=True)
        members.append(two)
        until(members, lambda: len(two.assigned()) == parts // 2, what="two joins")
        two.close()  # leaves: its partitions return to one, mid-pause
        members.remove(two)
        until(members, lambda: one.assigned() == set(range(parts)), what="return")
        three = Member(settings, bootstrap, group, topic, "three", paused=True)
        members.append(three)
        until(members, lambda: len(three.assigned()) == parts // 2, what="three joins")
        poll_all(members, 2.0)
        assert one.seen == [] and three.seen == [], "delivered while paused"

        for m in members:
            m.resume(seek_committed=True)
        until(members, lambda: len(one.seen) + len(three.seen) == parts * per,
              what="every record after resume")
        delivered = Counter(one.seen + three.seen)
        assert set(delivered.values()) == {1}
        per_partition = Counter(p for p, _ in delivered)
        assert per_partition == {p: per for p in range(parts)}, per_partition
    finally:
        for m in members:
            m.close()


# -- through the stage runner -----------------------------------------------------------------
class Control:
    """Desired state as the runner sees it, set directly by the test (the control topic
    and its follower are tested elsewhere; here the runner's reaction is the subject)."""

    def __init__(self) -> None:
        self._desired = Desired()
        self._n = 0

    def desired(self) -> Desired:
        return self._desired

    def set(self, scope: str, state: str, mode: str = "drain") -> dict[str, Any]:
        self._n += 1
        entry = {"command_id": f"c{self._n}", "scope": scope, "state": state, "mode": mode,
                 "by": "pytest", "reason": "", "at_ms": int(time.time() * 1000)}
        self._desired = self._desired.with_entry(entry)
        return entry


class NotingStage:
    """A parse stage that only notes each record (and can act mid-batch)."""

    name = "parse"

    def __init__(self, pace_s: float = 0.0) -> None:
        self.pace_s = pace_s
        self.batches: list[list[tuple[str, int, int]]] = []
        self.lock = threading.Lock()
        self.during_batch: Any = None

    def process_batch(self, items: list[InputRecord], states: Mapping[int, StatePort]
                      ) -> list[StageResult]:
        with self.lock:
            self.batches.append([(i.key, i.partition, i.offset) for i in items])
        if self.during_batch is not None:
            hook, self.during_batch = self.during_batch, None
            hook()
        if self.pace_s:
            time.sleep(self.pace_s)
        return [StageResult(Note("noted", str(i.offset))) for i in items]

    def processed(self) -> list[tuple[str, int, int]]:
        with self.lock:
            return [r for b in self.batches for r in b]


def submit(settings: Settings, bootstrap: str, job: str, count: int) -> list[str]:
    ensure_pipeline_topics(settings, bootstrap)
    with Publisher(settings, bootstrap) as pub:
        done = pub.publish_many([(f"doc {job} {i}".encode(), f"{job}/{i}.pdf", None)
                                 for i in range(count)], job_id=job)
    return [p.doc_id for p in done]


def runner(settings: Settings, bootstrap: str, stage: NotingStage, control: Control,
           worker_id: str) -> StageRunner:
    return StageRunner(stage, settings, bootstrap, worker_id, control=control)  # type: ignore[arg-type]


@pytest.fixture
def runners() -> Iterator[list[tuple[StageRunner, threading.Thread | None]]]:
    made: list[tuple[StageRunner, threading.Thread | None]] = []
    yield made
    for r, thread in made:
        r.stop()
        if thread is not None:
            thread.join(30)
        else:
            r._close()


def step(r: StageRunner, cond: Any, timeout: float = 30.0, what: str = "") -> None:
    """Drive a runner's loop by hand until ``cond()``."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        r.run_once()


def noted(settings: Settings, bootstrap: str) -> Counter[str]:
    return Counter(r["subject"] for _, _, r in read_all(settings, bootstrap, names.EVENTS)
                   if r["transition"] == "noted")


def test_runner_now_pause_seeks_the_batch_in_flight_back_and_rereads_it_after_resume(
        settings, bootstrap, runners):
    """``pause --now`` aborts the batch in flight and seeks back to its first offsets;
    the pause then applies; after resume exactly that batch is read again, and every
    record is committed once. Its executions stay visible as redone work."""
    s = settings.replace(batch_max_docs=10)
    docs = submit(s, bootstrap, "now", 60)
    stage, control = NotingStage(), Control()
    r = runner(s, bootstrap, stage, control, "w1")
    runners.append((r, None))
    r._connect()
    step(r, lambda: len(stage.processed()) >= 20, what="first batches")
    entry: dict[str, Any] = {}
    stage.during_batch = lambda: entry.update(control.set("all", PAUSED, mode="now"))
    before = len(stage.batches)
    step(r, lambda: len(stage.batches) > before, what="the batch in flight")
    aborted = stage.batches[-1]
    assert aborted and r.gate.aborted
    step(r, lambda: r.gate.stage_paused and not r.gate.unacked(control.desired()),
         what="pause and ack")
    for _ in range(10):  # held: nothing is handed to the stage
        r.run_once()
    assert stage.batches[-1] == aborted

    ack = [rec for _, _, _, _, rec in read_located(s, bootstrap, names.CONTROL_ACKS)
           if rec["command_id"] == entry["command_id"]]
    assert len(ack) == 1 and ack[0]["aborted"] and ack[0]["drained"] == 0

    control.set("all", RESUMED)
    step(r, lambda: len(stage.batches) > before + 1, what="the first batch after resume")
    first_after = {p: min(o for _, q, o in stage.batches[before + 1] if q == p)
                   for _, p, _ in stage.batches[before + 1]}
    first_aborted = {p: min(o for _, q, o in aborted if q == p) for _, p, _ in aborted}
    for p, offset in first_aborted.items():
        assert first_after.get(p, offset) == offset, (p, first_after, first_aborted)
    step(r, lambda: len(noted(s, bootstrap)) == len(docs), what="everything once")
    counts = noted(s, bootstrap)
    assert set(counts) == set(docs) and set(counts.values()) == {1}
    executions = Counter(k for k, _, _ in read_all(s, bootstrap, names.EXECUTIONS))
    assert sum(executions.values()) == len(docs) + len(aborted)  # redone work is visible
    assert {k for k, n in executions.items() if n == 2} == {k for k, _, _ in aborted}


def test_runner_job_resume_cutting_a_batch_parks_nothing_the_rewind_reads_again(
        settings, bootstrap, runners):
    """Job y is paused while job x flows on the same partition (x, y alternate on it). A
    resume of y arrives while the first batch is in flight, so the batch stops after its
    first chunk and commits offsets only up to the first record it left unprocessed.
    Records of y past that point are read again after the rewind: they must not also be
    parked in that transaction, or the next owner re-injects them before its fetch reads
    them again, and they are processed twice (found by a breaker: 4 of 5 runs). Checked
    directly (every committed park is below its partition's committed offset) and end
    to end (the worker leaves after that commit, another takes over, every record once).
    """
    s = settings.replace(batch_max_docs=10, parse_workers=2, partitions=1)
    ensure_pipeline_topics(s, bootstrap)
    with Publisher(s, bootstrap) as pub:
        docs = [pub.publish_bytes(f"doc {job} {i}".encode(), source=f"{job}/{i}.pdf",
                                  job_id=job).doc_id for i in range(15) for job in ("x", "y")]
    stage, control = NotingStage(), Control()
    control.set("job:y", PAUSED)
    first = runner(s, bootstrap, stage, control, "w1")
    runners.append((first, None))
    first._connect()
    stage.during_batch = lambda: control.set("job:y", RESUMED)
    step(first, lambda: first.commits >= 1, what="the batch cut by the resume to commit")
    assert len(stage.batches) == 1 and len(stage.batches[0]) == 2, "not cut after a chunk"
    offset_of = {key: off for _, off, key, _, _ in read_located(s, bootstrap, names.SUBMITTED)}
    parked = [offset_of[r["subject"]] for _, _, r in read_all(s, bootstrap, names.EVENTS)
              if r["transition"] == "parked"]
    done = committed(s, bootstrap, ["parse"])["parse"][(names.SUBMITTED, 0)]
    assert parked and done < len(docs), (parked, done)
    assert [o for o in parked if o >= done] == [], \
        f"parked at or past the committed offset {done}: they will be read again"
    first.stop()
    first._close()

    second = runner(s, bootstrap, stage, control, "w2")
    runners.append((second, None))
    second._connect()
    step(second, lambda: len(noted(s, bootstrap)) >= len(docs), timeout=60,
         what="every record after the takeover")
    for _ in range(20):  # room for a second copy to show
        second.run_once()
    counts = noted(s, bootstrap)
    assert set(counts) == set(docs) and set(counts.values()) == {1}, \
        {k: n for k, n in counts.items() if n > 1}


def a_paused_then_b_joins(s: Settings, bootstrap: str, runners: list[Any], first: int,
                          client_log: ClientLog | None = None,
                          ) -> tuple[Control, StageRunner, NotingStage, StageRunner,
                                     NotingStage, threading.Thread]:
    """Runner a processes ``first`` records, is paused; then runner b starts (and joins
    the group while it is paused), each on a thread of its own. ``client_log`` keeps
    the librdkafka debug log of a's clients."""
    control = Control()
    stage_a, stage_b = NotingStage(pace_s=0.05), NotingStage(pace_s=0.05)
    a = runner(client_log.attach(s) if client_log else s, bootstrap, stage_a, control, "a")
    thread_a = threading.Thread(target=a.run, daemon=True)
    runners.append((a, thread_a))
    thread_a.start()
    wait(lambda: len(stage_a.processed()) >= first, what="a works")
    control.set("all", PAUSED)
    wait(lambda: a.gate.stage_paused and not a.gate.unacked(control.desired()), what="a paused")
    b = runner(s, bootstrap, stage_b, control, "b")
    thread_b = threading.Thread(target=b.run, daemon=True)
    runners.append((b, thread_b))
    thread_b.start()
    return control, a, stage_a, b, stage_b, thread_b


class ClientLog:
    """The librdkafka debug log (group, topic and fetch events) of one runner's
    clients, kept in memory for the report of a test that times out. (The client calls
    ``log(level, format, *args)`` on the object given as its ``logger``.)"""

    def __init__(self, keep: int = 80_000) -> None:
        self.lines: deque[str] = deque(maxlen=keep)

    def log(self, _level: int, fmt: str, *args: Any) -> None:
        self.lines.append(f"{time.time():.3f} {fmt % args}")

    def attach(self, s: Settings) -> Settings:
        return s.replace(kafka_extra={**s.kafka_extra, "debug": "cgrp,topic,fetch",
                                      "log_level": 7, "logger": self})

    def about(self, topic: str, partitions: set[int], last: int = 80) -> str:
        marks = [f"{topic} [{p}]" for p in sorted(partitions)]
        hits = [line for line in list(self.lines) if any(m in line for m in marks)]
        return "\n".join(hits[-last:])


def stall_report(s: Settings, bootstrap: str, a: StageRunner, stages: list[NotingStage],
                 returned: set[int], client_log: ClientLog) -> str:
    """Where a test that waited for every record stands: per input partition, its
    records, the group's committed offset and what the runners processed; runner a's
    state; and a's client log about the partitions that came back to it."""
    out = [f"a holds {sorted(parts_of(a))}, {sorted(returned)} came back to it"]
    try:
        out.append(f"noted {len(noted(s, bootstrap))}")
    except TimeoutError as exc:  # an open transaction holds the events topic back
        out.append(f"events not readable to the end: {exc}")
    offsets = committed(s, bootstrap, ["parse"])["parse"]
    located = read_located(s, bootstrap, names.SUBMITTED)
    done = Counter(p for stage in stages for _, p, _ in stage.processed())
    for part in sorted({p for p, *_ in located}):
        mine = [o for p, o, *_ in located if p == part]
        out.append(f"submitted[{part}]: {len(mine)} records, last at {max(mine)}, committed "
                   f"{offsets.get((names.SUBMITTED, part))}, processed {done[part]}")
    out.append(f"a: {a.describe()}")
    topic = names.topic(s.topic_prefix, names.SUBMITTED)
    out.append(f"a's client log about {topic} {sorted(returned)}:\n"
               + client_log.about(topic, returned))
    return "\n".join(out)


def test_runner_partition_returning_after_a_rebalance_during_a_pause_continues_from_committed(
        settings, bootstrap, runners, caplog):
    """Two runners share a stage. While paused, the second joins (and comes up
    paused); after a resume it commits progress on the partitions it took; in a second
    pause it leaves, and those partitions return to the first runner, which had held
    them before. After resume every record is processed exactly once (no redo from an
    old position, nothing skipped) and every partition is consumed to its end."""
    caplog.set_level(logging.ERROR, logger="docstreams.runtime")
    s = settings.replace(batch_max_docs=5)
    docs = submit(s, bootstrap, "moves", 240)
    client_log = ClientLog()
    control, a, stage_a, b, stage_b, thread_b = a_paused_then_b_joins(s, bootstrap, runners, 30,
                                                                      client_log)
    # (The runners' consumers are left to their own threads: a call from another thread
    # waits on the one in progress. Their open state stores name their partitions.)
    wait(lambda: len(parts_of(b)) > 0, what="b takes partitions")
    held_a, held_b = len(stage_a.processed()), len(stage_b.processed())
    time.sleep(3.0)
    assert (len(stage_a.processed()), len(stage_b.processed())) == (held_a, held_b) == (held_a, 0)
    b_parts = parts_of(b)
    assert b_parts and not b_parts & parts_of(a)

    control.set("all", RESUMED)
    wait(lambda: len(stage_b.processed()) >= 30, what="b works")
    control.set("all", PAUSED)
    wait(lambda: a.gate.stage_paused and b.gate.stage_paused
         and not a.gate.unacked(control.desired()) and not b.gate.unacked(control.desired()),
         what="both paused")
    b.stop()
    thread_b.join(30)
    wait(lambda: parts_of(a) >= b_parts, timeout=60, what="b's partitions back with a")
    assert {p for _, p, _ in stage_b.processed()} <= b_parts

    control.set("all", RESUMED)
    try:
        wait(lambda: len(stage_a.processed()) + len(stage_b.processed()) >= len(docs)
             and len(noted(s, bootstrap)) >= len(docs), timeout=90, what="all processed")
    except AssertionError as exc:
        report = stall_report(s, bootstrap, a, [stage_a, stage_b], b_parts, client_log)
        raise AssertionError(f"{exc}:\n{report}") from None
    processed = Counter((p, o) for _, p, o in stage_a.processed() + stage_b.processed())
    assert set(processed.values()) == {1}, "a record was processed twice"
    assert len(processed) == len(docs)
    returned = [o for _, p, o in stage_a.processed() if p in b_parts]
    assert returned, "the returning partitions made no progress with a"
    counts = noted(s, bootstrap)
    assert set(counts) == set(docs) and set(counts.values()) == {1}
    offsets = committed(s, bootstrap, ["parse"])["parse"]
    located = read_located(s, bootstrap, names.SUBMITTED)
    last = {}
    for part, off, *_ in located:
        last[part] = max(last.get(part, 0), off + 1)
    assert {p: offsets[(names.SUBMITTED, p)] >= last[p] for p in last} == {p: True for p in last}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a runner failed"


def test_runner_partition_lost_while_paused_and_returned_after_the_resume_is_fetched(
        settings, bootstrap, runners, caplog):
    """The client keeps the pause flag of a partition a consumer paused and then lost
    in a rebalance; the resume it missed does not clear it. Here: a is paused; b joins
    and takes partitions; resume (a resumes only what it holds); b leaves while the
    stage runs, and its partitions return to a. They must be fetched again: every
    record is processed once and every partition is consumed to its end."""
    caplog.set_level(logging.ERROR, logger="docstreams.runtime")
    s = settings.replace(batch_max_docs=5)
    docs = submit(s, bootstrap, "lost", 240)
    client_log = ClientLog()
    control, a, stage_a, b, stage_b, thread_b = a_paused_then_b_joins(s, bootstrap, runners, 20,
                                                                      client_log)
    wait(lambda: len(parts_of(b)) > 0 and b.gate.stage_paused, what="b takes partitions")
    b_parts = parts_of(b)

    control.set("all", RESUMED)
    wait(lambda: len(stage_b.processed()) >= 20, what="b works")
    b.stop()  # not paused: its partitions go back to a, which paused them before
    thread_b.join(30)
    wait(lambda: parts_of(a) >= b_parts, timeout=60, what="b's partitions back with a")
    back_at = len(stage_a.processed())

    try:
        wait(lambda: len(noted(s, bootstrap)) >= len(docs), timeout=90, what="all processed")
    except AssertionError as exc:
        report = stall_report(s, bootstrap, a, [stage_a, stage_b], b_parts, client_log)
        raise AssertionError(f"{exc}:\n{report}") from None
    processed = Counter((p, o) for _, p, o in stage_a.processed() + stage_b.processed())
    assert set(processed.values()) == {1}, "a record was processed twice"
    assert {p for _, p, _ in stage_a.processed()[back_at:]} & b_parts, \
        "the returned partitions made no progress with a"
    counts = noted(s, bootstrap)
    assert set(counts) == set(docs) and set(counts.values()) == {1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a runner failed"


def parts_of(r: StageRunner) -> set[int]:
    """The partitions a runner holds (it opens a state store for each on assignment)."""
    while True:
        try:  # keyed by partition, or by (topic, partition)
            return {k if isinstance(k, int) else k[1] for k in list(r.stores)}
        except RuntimeError:  # changed size while copied: the runner is (re)assigning
            continue


def wait(cond: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def idle_runner(settings: Settings, bootstrap: str, runners: list[Any], job: str,
                ) -> tuple[Settings, StageRunner, NotingStage, list[str]]:
    """A runner driven by hand (``step``) that has processed the 12 documents of ``job``
    submitted for it, and is idle."""
    s = settings.replace(batch_max_docs=5)
    docs = submit(s, bootstrap, job, 12)
    stage = NotingStage()
    r = runner(s, bootstrap, stage, Control(), "w1")
    runners.append((r, None))
    r._connect()
    step(r, lambda: len(stage.processed()) == len(docs), what="the first documents")
    assert r.consumer is not None
    return s, r, stage, docs


def test_runner_idle_position_past_its_committed_offset_is_sought_back(
        settings, bootstrap, runners, caplog):
    """The signature of every 'records skipped after pause/seek/resume' client bug: the
    consumer's position moves past records the runner never got. Simulated here by
    consuming every new record behind the runner's back, so that its positions stand
    past them. An idle runner notices that its position is past the committed offset,
    seeks back, and every record is processed once. (A skip followed by more records on
    the same partition cannot be told from transaction markers by offsets; the runner
    would commit past it. This check covers the idle case only.)"""
    caplog.set_level(logging.ERROR, logger="docstreams.runtime")
    s, r, stage, docs = idle_runner(settings, bootstrap, runners, "skip")
    docs += submit_more(s, bootstrap, 12)
    skipped: list[Any] = []
    deadline = time.monotonic() + 30
    while len(skipped) < 12:  # the "client bug": records consumed the runner never sees
        assert time.monotonic() < deadline, f"only {len(skipped)} of 12 records to skip"
        skipped += [m for m in r.consumer.consume(12, timeout=1) if not m.error()]
    step(r, lambda: len(noted(s, bootstrap)) == len(docs), timeout=60,
         what="the skipped records, after the position check")
    counts = noted(s, bootstrap)
    assert set(counts) == set(docs) and set(counts.values()) == {1}
    assert r.position_fixes >= 1
    assert {m.key().decode() for m in skipped} <= {k for k, _, _ in stage.processed()}


def submit_more(settings: Settings, bootstrap: str, count: int, job: str = "skip") -> list[str]:
    with Publisher(settings, bootstrap) as pub:
        done = pub.publish_many([(f"more {i}".encode(), f"more/{i}.pdf", None)
                                 for i in range(count)], job_id=job)
    return [p.doc_id for p in done]


def test_runner_partition_not_fetched_while_the_stage_runs_gets_its_fetch_restarted(
        settings, bootstrap, runners, caplog):
    """The signature of a partition left unfetched by the client (a pause flag kept
    from before a rebalance, say): the stage runs, the partition is assigned, records
    wait on it, and nothing is fetched. Simulated by pausing one partition on the
    consumer behind the runner's back. The idle runner restarts that partition's fetch
    from its committed offset, and every record is processed once."""
    caplog.set_level(logging.ERROR, logger="docstreams.runtime")
    s, r, stage, docs = idle_runner(settings, bootstrap, runners, "stall")
    assert r.consumer is not None
    topic = names.topic(s.topic_prefix, names.SUBMITTED)
    stuck = TopicPartition(topic, 0)
    r.consumer.pause([stuck])  # the "client bug": a flag the runner did not set
    docs += submit_more(s, bootstrap, 24, job="stall")
    on_stuck = [o for p, o, *_ in read_located(s, bootstrap, names.SUBMITTED) if p == 0]
    assert max(on_stuck) >= committed(s, bootstrap, ["parse"])["parse"][(names.SUBMITTED, 0)], \
        "no new record landed on the paused partition"
    step(r, lambda: len(noted(s, bootstrap)) == len(docs), timeout=60,
         what="the records of the unfetched partition, after its fetch restart")
    counts = noted(s, bootstrap)
    assert set(counts) == set(docs) and set(counts.values()) == {1}
    assert r.fetch_restarts >= 1
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
