"""The thin runtime adapter: it does the Kafka work so that stages stay pure.

One :class:`StageRunner` per stage per worker process. Its loop, in order:

1. poll a batch (bounded in documents and seconds) and add retries that are due;
2. record one execution per document, durably, before any work starts;
3. hand the batch to the stage, which returns one outcome per document;
4. commit: in one transaction, produce outputs + lifecycle events + state changelog,
   send the consumed offsets with the group metadata (KIP-447), commit;
5. only then apply the state changes to the local RocksDB stores.

Abortable errors abort and re-read from the committed offsets; a fenced or fatal
producer is rebuilt and the consumer rewound. Nothing is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams import inputs, names, records
from streams.control import ControlView
from streams.inputs import InputRecord, StoreKey, doc_of
from streams.kafka import (
    ClientStuck,
    consumer_config,
    high_watermark,
    idempotent_producer,
    kafka_error,
    low_watermark,
    reader,
    transactional_producer,
    where,
    within,
)
from streams.outcomes import DeadLetter, Emit, Note, Retry, StageResult
from streams.pausing import PauseGate
from streams.settings import Settings
from streams.state import Batch, PartitionStore, StatePort
from streams.watches import FetchStallWatch, MembershipWatch

__all__ = ["InputRecord", "MembershipWatch", "Stage", "StageRunner", "doc_of", "process_each"]

log = logging.getLogger("docstreams.runtime")

STAGE_INDEX = {"submit": 0, "parse": 1, "extract": 2, "validate": 3, "route": 4, "sink": 5}


# How often an idle runner compares its positions with its committed offsets.
POSITION_CHECK_S = 5.0
# How often a runner asks whether its group still lists it (see MembershipWatch).
MEMBERSHIP_CHECK_S = 15.0


def seq_of(generation: int, stage: str, attempt: int) -> int:
    """A transition's place in a document's life, unique per (doc, generation, stage,
    attempt): read models upsert events by (subject, seq). A retry generation g starts at
    g * 1000 (its ``resubmitted`` event), stages count in hundreds, attempts in ones."""
    return generation * 1000 + STAGE_INDEX[stage] * 100 + attempt


def now_ms() -> int:
    return int(time.time() * 1000)


class Stage(Protocol):
    name: str

    def process_batch(
        self, items: list[InputRecord], states: Mapping[StoreKey, StatePort]
    ) -> list[StageResult]: ...


def process_each(
    items: list[InputRecord],
    states: Mapping[StoreKey, StatePort],
    process: Callable[[InputRecord, StatePort], StageResult],
) -> list[StageResult]:
    """Default batch handling: one document at a time; an unexpected error in stage code
    becomes a retry of that document (then a dead letter), never a dead worker."""
    results = []
    for item in items:
        try:
            results.append(process(item, states[item.store]))
        except Exception as exc:  # noqa: BLE001 - a bug in one document's handling
            log.exception("stage error on %s", item.key)
            results.append(StageResult(Retry("stage_error", f"{type(exc).__name__}: {exc}")))
    return results


@dataclass
class _Pending:
    """What one transaction will write."""

    produce: list[tuple[str, str, bytes]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class ConsumerFailed(RuntimeError):
    """The consumer reported a fatal error: run() drops it and connects anew."""


def _first_offsets(messages: list[Message]) -> dict[tuple[str, int], int]:
    """The lowest offset of ``messages`` per (topic, partition)."""
    first: dict[tuple[str, int], int] = {}
    for msg in messages:
        topic, partition, offset = where(msg)
        first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
    return first


# Client errors that mean a broker connection went away.
_BROKER_LOST = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)


def _is_fatal(err: KafkaError) -> bool:
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def _discard(producer: Producer) -> None:
    """Run on a helper thread that holds the last reference: the client is destroyed
    here when this returns, not on the runner thread."""
    with contextlib.suppress(Exception):
        producer.flush(1)


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        bootstrap: str,
        worker_id: str,
        on_commit: Callable[[str, int], None] | None = None,
        control: ControlView | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.bootstrap = bootstrap
        self.worker_id = worker_id
        self.prefix = settings.topic_prefix
        self.inputs = [names.topic(self.prefix, t) for t in names.STAGE_INPUTS[stage.name]]
        self.stores: dict[StoreKey, PartitionStore] = {}
        self.on_commit = on_commit
        self.gate = PauseGate(stage.name, control)
        self.stop_event = threading.Event()
        self.commits = 0
        self.aborts = 0
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.exec_producer: Producer | None = None
        self.last_loop_at = time.monotonic()
        self.failures = 0
        self.position_fixes = 0
        self.fetch_restarts = 0
        self.stalls = FetchStallWatch()
        self._next_position_check = 0.0
        self.membership = MembershipWatch()
        self._next_membership_check = 0.0
        self._admin: AdminClient | None = None
        # Written by the runner thread only (at each idle position check), read by
        # describe(): a client call from another thread can block behind the runner's.
        self.last_positions: dict[str, int] = {}
        # Set when the consumer lost its connection to a broker (see _on_client_error).
        self._broker_lost = False
        self._producer_lost: str | None = None  # set by the producer's error callback
        # A fatal consumer error (a static member fenced after a broker restart, say)
        # leaves a consumer that never fetches again: the clients are rebuilt.
        self._consumer_fatal: str | None = None
        self.producer_refreshes = 0
        # (topic, partition) -> (committed offset re-read from, position seen before)
        self._reread: dict[tuple[str, int], tuple[int, int]] = {}

    # -- lifecycle ------------------------------------------------------------------
    @property
    def instance_id(self) -> str:
        """The consumer's static group member id (admin.live_members reads it back)."""
        return f"{self.stage.name}.{self.worker_id}"

    def _connect(self) -> None:
        self._consumer_fatal = None
        self.membership = MembershipWatch()
        self._next_membership_check = time.monotonic() + MEMBERSHIP_CHECK_S
        self._rebuild_producer()
        self.exec_producer = idempotent_producer(self.settings, self.bootstrap)
        self.consumer = Consumer(consumer_config(
            self.settings, self.bootstrap, names.group_id(self.prefix, self.stage.name),
            **{"group.instance.id": self.instance_id,
               "client.id": f"docstreams.{self.stage.name}.{self.worker_id}",
               "error_cb": self._on_client_error},
        ))
        self.consumer.subscribe(
            self.inputs, on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def run(self) -> None:
        """Run until :meth:`stop`; an unexpected failure rebuilds the clients after a
        backoff instead of killing the worker (and never skips a record)."""
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                self._connect()
                while not self.stop_event.is_set():
                    self.run_once()
                    backoff = 1.0
            except Exception:  # noqa: BLE001
                self.failures += 1
                log.exception("%s runner failed; reconnecting in %.0fs", self.stage.name, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._close()

    def _on_client_error(self, err: KafkaError) -> None:
        """Consumer error callback (served inside consume(), on the runner thread).

        A lost broker connection is noted so that the next transaction starts on a new
        transactional producer: librdkafka's producer can keep a stale coordinator
        after a broker restart and block in send_offsets_to_transaction far past its
        timeout (confluentinc/librdkafka#5511). The consumer is polled even while
        paused, so an outage during a pause is seen too."""
        if err.code() in _BROKER_LOST:
            if not self._broker_lost:
                log.info("%s: broker connection lost (%s); the next transaction starts "
                         "on a new producer", self.stage.name, err.str())
            self._broker_lost = True
        else:
            log.warning("%s consumer: %s", self.stage.name, err.str())
            if _is_fatal(err):
                self._consumer_fatal = err.str()

    def _refresh_producer(self) -> None:
        """Swap in a new transactional producer between transactions (nothing is open,
        so nothing is lost). The old one is destroyed on a helper thread, since destroying
        a client whose broker went away can block."""
        old = self.producer
        self._rebuild_producer()
        self._broker_lost = False
        self.producer_refreshes += 1
        if old is not None:
            threading.Thread(target=_discard, args=(old,), name="discard-producer",
                             daemon=True).start()

    def stop(self) -> None:
        self.stop_event.set()

    def describe(self) -> dict[str, Any]:
        """What this runner is doing, for diagnostics (safe from another thread: it only
        reads what the runner thread wrote, never calls the clients): its pause flag,
        commit counters, how long since its loop last turned, and the positions it saw
        at its last idle check."""
        return {
            "stage": self.stage.name, "worker": self.worker_id,
            "stage_paused": self.gate.stage_paused, "paused_jobs": sorted(self.gate.paused_jobs),
            "commits": self.commits, "aborts": self.aborts, "failures": self.failures,
            "position_fixes": self.position_fixes, "fetch_restarts": self.fetch_restarts,
            "producer_refreshes": self.producer_refreshes,
            "loop_idle_s": round(time.monotonic() - self.last_loop_at, 1),
            "positions": dict(self.last_positions),
        }

    def _close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self.consumer.close()
            self.consumer = None
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        for producer in (self.producer, self.exec_producer):
            if producer is not None:
                producer.flush(5)
        self.producer = self.exec_producer = None

    # -- assignment and state restore ------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic[len(self.prefix):], tp.partition)
            if key not in self.stores:
                self.stores[key] = self._restore(key)
        consumer.incremental_assign(partitions)
        # Set the partition's pause flag both ways on every assignment, before a single
        # fetch: a partition another worker owned must be paused here if the stage is;
        # and librdkafka keeps the flag of a partition this consumer paused, lost in a
        # rebalance and gets back after a resume it missed (it then never fetched
        # again: pause, a worker joins, resume, the worker leaves).
        if self.gate.stage_paused:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        log.info("%s assigned %s%s", self.stage.name,
                 sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions),
                 " (paused)" if self.gate.stage_paused else "")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._reread.pop((tp.topic, tp.partition), None)
            self.stalls.forget((tp.topic, tp.partition))
            store = self.stores.pop((tp.topic[len(self.prefix):], tp.partition), None)
            if store is not None:
                store.close()

    def _changelog(self, source: str) -> str:
        return names.changelog_topic(self.prefix, self.stage.name, source)

    def _restore(self, key: StoreKey) -> PartitionStore:
        """Open the store of one input topic-partition and catch it up with its changelog
        (committed records only), from the offset it had applied before."""
        source, partition = key
        changelog = self._changelog(source)
        path = (self.settings.state_dir / self.worker_id / self.stage.name / source
                / f"p{partition}")
        store = PartitionStore(path)
        consumer: Consumer | None = None
        try:
            consumer = reader(self.settings, self.bootstrap)
            high = high_watermark(consumer, TopicPartition(changelog, partition))
            start = store.checkpoint
            if start > high:  # the topic was recreated: start over
                store.close()
                PartitionStore.destroy(path)
                store, start = PartitionStore(path), 0
            consumer.assign([TopicPartition(changelog, partition, start)])
            deadline = time.monotonic() + 60
            position = start
            while position < high:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"restore of {changelog}[{partition}] stuck at "
                                       f"{position} < {high}")
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    store.apply({(msg.key() or b"").decode(): msg.value()})
                pos = consumer.position([TopicPartition(changelog, partition)])[0].offset
                position = max(position, pos)
            store.checkpoint = high
        except BaseException:
            # A restore cut short (the broker went away, say) must not keep RocksDB's
            # lock: the next assignment opens this store again, in this process.
            store.close()
            raise
        finally:
            if consumer is not None:
                consumer.close()
        return store

    # -- the loop ----------------------------------------------------------------------
    def run_once(self) -> None:
        assert self.consumer is not None
        self.last_loop_at = time.monotonic()
        if self._consumer_fatal:
            reason, self._consumer_fatal = self._consumer_fatal, None
            raise ConsumerFailed(f"{self.stage.name} consumer failed for good ({reason}); "
                                 "rebuilding the clients")
        self._check_membership()
        self._converge()
        if self.gate.stage_paused:
            self._hold()
            return
        version = self.gate.version()
        messages = [
            m for m in self.consumer.consume(self.settings.batch_max_docs, timeout=0.2)
            if not self._is_error(m)
        ]
        if self._reread and messages:
            self._note_reread(messages)
        batches = {key: Batch(store) for key, store in self.stores.items()}
        pending = _Pending()
        items, to_park = self._split_parked([self._decode(m) for m in messages], batches)
        items += self._waiting(inputs.PARK_PREFIX, self.settings.batch_max_docs - len(items),
                               batches)
        items += self._waiting(inputs.RETRY_PREFIX, self.settings.batch_max_docs - len(items),
                               batches)
        if not items and not to_park:
            if not messages:
                self._check_positions()
            return
        self._fault("before_process")
        results = self._process(items, batches, version) if items else []
        unprocessed = [m for m in messages if self._cut_at(m, items[len(results):])]
        cut = _first_offsets(unprocessed)
        self._park(to_park, cut, batches, pending)
        for msg in messages:  # committed up to the first record left unprocessed
            topic, partition, offset = where(msg)
            key = (topic, partition)
            if offset < cut.get(key, offset + 1):
                pending.offsets[key] = max(pending.offsets.get(key, 0), offset + 1)
        for item, result in zip(items, results, strict=False):
            self._route(item, result, batches[item.store], pending)
        if unprocessed:
            self._rewind(unprocessed)
        if self.gate.abort_requested(version):
            self.gate.aborted = True
            self._rewind(messages)
            return
        if self._commit(pending, batches, messages):
            self.gate.note_batch(version, len(results))

    def _fault(self, point: str) -> None:
        """Test-only fault injection: ``DOCSTREAMS_FAULT_AT=<stage>:<point>:<probability>``
        (with ``DOCSTREAMS_ALLOW_FAULT_INJECTION=1``) SIGKILLs this process at that step, so
        tests can crash a worker at an exact place of the commit sequence."""
        spec = self.settings.fault_at
        if not spec or not self.settings.allow_fault_injection:
            return
        stage, want, probability = (spec.split(":") + ["1"])[:3]
        if stage in (self.stage.name, "*") and want == point and random.random() < float(probability):
            log.warning("fault injection: SIGKILL at %s:%s", self.stage.name, point)
            os.kill(os.getpid(), signal.SIGKILL)

    # -- pause and resume --------------------------------------------------------------
    def _converge(self) -> None:
        """Apply the desired state between batches (so the batch in flight has drained),
        then acknowledge every command not yet acknowledged."""
        assert self.consumer is not None
        desired = self.gate.desired()
        self.gate.paused_jobs = desired.paused_jobs()
        assignment = self.consumer.assignment()
        if self.gate.wants_stage_paused(desired) and not self.gate.stage_paused:
            self.consumer.pause(assignment)
            self.gate.stage_paused = True
            log.info("%s paused (%d partitions)", self.stage.name, len(assignment))
        elif not self.gate.wants_stage_paused(desired) and self.gate.stage_paused:
            self._seek_committed(assignment)
            self.consumer.resume(assignment)
            self._wake_fetchers(assignment)
            self.gate.stage_paused = False
            log.info("%s resumed", self.stage.name)
        unacked = self.gate.unacked(desired)
        if unacked:
            self._ack(unacked, assignment)

    def _seek_committed(self, assignment: list[TopicPartition]) -> None:
        """Resume from the committed offsets, never from a position the client kept from
        before the pause (or from another owner of the partition)."""
        assert self.consumer is not None
        if not assignment:
            return
        for tp in self.consumer.committed(assignment, timeout=30):
            # No commit yet: from the start of the log, as a new owner would read it
            # (auto.offset.reset=earliest), not from where this client last stood.
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _check_membership(self) -> None:
        """Every MEMBERSHIP_CHECK_S, ask the group coordinator whether it lists this
        runner; rebuild the clients when MembershipWatch says so."""
        now = time.monotonic()
        if now < self._next_membership_check:
            return
        self._next_membership_check = now + MEMBERSHIP_CHECK_S
        if self.membership.observe(self._listed_in_group()):
            raise ConsumerFailed(f"{self.stage.name}: the group has not listed this worker "
                                 f"for {self.membership.misses} checks in a row; rebuilding "
                                 "the clients to rejoin")

    def _listed_in_group(self) -> bool | None:
        group = names.group_id(self.prefix, self.stage.name)
        try:
            if self._admin is None:
                self._admin = AdminClient(self.settings.kafka_common(self.bootstrap))
            desc = self._admin.describe_consumer_groups([group], request_timeout=5)[group]
            members = desc.result(timeout=10).members
        except Exception as exc:  # noqa: BLE001 - cannot tell; the next check may
            log.debug("%s: membership check skipped: %s", self.stage.name, exc)
            return None
        return any(m.group_instance_id == self.instance_id for m in members)

    def _wake_fetchers(self, assignment: list[TopicPartition]) -> None:
        """Make the first fetch after a resume start now, not up to a second later.

        librdkafka does not wake a broker's fetcher thread when partitions are resumed:
        the fetch waits for that thread's next turn. With ``debug=fetch`` the log shows
        "start fetching" at the resume and the next Fetch request 1.0 s after it, on
        every resume of an otherwise idle consumer. Any request to a partition's leader
        wakes that thread; a watermark query is a cheap one, sent once per leader (it can
        wait behind a Fetch already in flight, at most ``fetch.wait.max.ms``). It only
        saves time, so a failure is ignored (the fetch then starts on its own)."""
        assert self.consumer is not None
        if not assignment:
            return
        try:
            one_per_leader: dict[int, TopicPartition] = {}
            for topic in sorted({tp.topic for tp in assignment}):
                meta = self.consumer.list_topics(topic, timeout=5).topics[topic]
                for tp in assignment:
                    part = meta.partitions.get(tp.partition) if tp.topic == topic else None
                    if part is not None:
                        one_per_leader.setdefault(part.leader, tp)
            for tp in one_per_leader.values():
                self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException as exc:
            log.debug("%s: fetcher wake-up after resume skipped: %s", self.stage.name, exc)

    def _check_positions(self) -> None:
        """Defence in depth against client bugs around seek, pause and resume (several
        are on record) that move a position past records the runner never got.

        When a runner is idle, each partition's position should be its committed offset,
        or past it only by transaction markers (which advance the position but are never
        delivered). The two cannot be told apart from offsets, so an idle partition whose
        position is past its committed offset is re-read from the committed offset, once
        per committed offset and position: markers alone deliver nothing; skipped records come back,
        are processed, and are reported (:meth:`_note_reread`). Checked at most every
        POSITION_CHECK_S seconds, only while idle. A skip followed by more records on the
        same partition is not caught: those records are processed and committed past it,
        and the gap looks like the markers of aborted transactions."""
        assert self.consumer is not None
        now = time.monotonic()
        if now < self._next_position_check:
            return
        self._next_position_check = now + POSITION_CHECK_S
        assignment = self.consumer.assignment()
        if not assignment:
            return
        try:
            committed = {(tp.topic, tp.partition): tp.offset
                         for tp in self.consumer.committed(assignment, timeout=10)}
        except KafkaException as exc:
            # The coordinator is away (a broker restart, say): check again next time.
            log.info("%s: position check skipped: %s", self.stage.name, exc)
            return
        positions = self.consumer.position(assignment)
        self.last_positions = {f"{tp.topic[len(self.prefix):]}[{tp.partition}]": tp.offset
                               for tp in positions}
        for tp in positions:
            key = (tp.topic, tp.partition)
            want = committed.get(key, -1)
            if want < 0 <= tp.offset:
                # Nothing committed yet: the partition should still stand at its start.
                want = low_watermark(self.consumer, TopicPartition(tp.topic, tp.partition))
            # Once per (committed offset, position): a re-read that found only markers
            # must not stop the next one, when the position moves on again with nothing
            # committed (records taken behind the runner's back after the first).
            if self._restarted_fetch(tp, want, now):
                continue
            before = self._reread.get(key)
            if tp.offset < 0 or tp.offset <= want or (
                    before is not None and before[0] == want and tp.offset <= before[1]):
                continue
            self._reread[key] = (want, tp.offset)
            log.debug("%s: %s[%d] idle at %d, committed %d: re-reading from %d",
                      self.stage.name, tp.topic, tp.partition, tp.offset, want, want)
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, want))

    def _restarted_fetch(self, position: TopicPartition, committed: int, now: float) -> bool:
        """Restart the fetch of an idle partition that stands still while committed
        records wait past it, at two looks in a row (see FetchStallWatch): resume it (a
        pause flag the runner did not set here) and seek it to its committed offset. Both
        are harmless on a partition that was fetching: it is idle and everything it
        delivered is committed. Return whether it did."""
        assert self.consumer is not None
        key = (position.topic, position.partition)
        if not self.stalls.due(key, position.offset, now):
            return False
        tp = TopicPartition(position.topic, position.partition)
        try:
            low, end = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException as exc:
            log.info("%s: fetch check of %s[%d] skipped: %s", self.stage.name, tp.topic,
                     tp.partition, exc)
            return False
        start = committed if committed >= 0 else low
        waiting = FetchStallWatch.waiting(position.offset, start, end)
        if not self.stalls.looked(key, position.offset, waiting):
            return False
        self.fetch_restarts += 1
        log.warning("%s: %s[%d] not fetched while committed records waited past its "
                    "position for %.0fs (position %d, committed %d, last stable offset %d); "
                    "restarting its fetch from %d", self.stage.name, tp.topic, tp.partition,
                    self.stalls.after_s, position.offset, committed, end, start)
        try:
            self.consumer.resume([tp])
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, start))
        except KafkaException as exc:  # a fetcher the client will not restart
            raise ConsumerFailed(f"{self.stage.name}: restarting the fetch of {tp.topic}"
                                 f"[{tp.partition}] failed ({exc}); rebuilding the clients"
                                 ) from exc
        return True

    def _note_reread(self, messages: list[Message]) -> None:
        """A record delivered below the position seen before a re-read was skipped by
        the client: count it and say so (it is processed now, exactly once)."""
        for msg in messages:
            topic, partition, offset = where(msg)
            check = self._reread.pop((topic, partition), None)
            if check is not None and offset < check[1]:
                self.position_fixes += 1
                log.warning("%s: %s[%d] had moved to %d past records the runner never got "
                            "(a client position bug); re-read from the committed offset %d",
                            self.stage.name, topic, partition, check[1], check[0])

    def _hold(self) -> None:
        """While paused, keep polling (group membership, rebalance callbacks); a record
        fetched before the pause took effect is sought back to, never dropped."""
        assert self.consumer is not None
        held = [m for m in self.consumer.consume(self.settings.batch_max_docs, timeout=0.2)
                if not self._is_error(m)]
        if held:
            self._rewind(held)

    def _ack(self, entries: list[dict[str, Any]], assignment: list[TopicPartition]) -> None:
        assert self.consumer is not None and self.exec_producer is not None
        committed = self.consumer.committed(assignment, timeout=30) if assignment else []
        parked: dict[str, int] = {}
        for job in self.gate.paused_jobs:
            prefix = inputs.park_prefix(job)
            parked[job] = sum(1 for store in self.stores.values() for _ in store.scan(prefix))
        for entry in entries:
            ack = {
                "command_id": entry["command_id"], "scope": entry["scope"],
                "state": entry["state"], "worker": self.worker_id, "stage": self.stage.name,
                "drained": self.gate.drained, "aborted": self.gate.aborted, "parked": parked,
                "committed": [{"topic": tp.topic[len(self.prefix):], "partition": tp.partition,
                               "offset": tp.offset} for tp in committed],
                "at_ms": now_ms(),
            }
            self.exec_producer.produce(names.topic(self.prefix, names.CONTROL_ACKS),
                                       key=entry["command_id"].encode(),
                                       value=records.encode("ControlAck", ack))
        self.exec_producer.flush(30)
        self.gate.acked_all(entries)

    def _process(self, items: list[InputRecord], batches: dict[StoreKey, Batch],
                 version: int) -> list[StageResult]:
        """Run the stage over the batch in chunks; return results for a prefix of it.

        Between chunks the runner looks at the control topic: when a pause has arrived,
        it stops there, so that draining means the work already started (not the whole
        batch) commits, and the rest is re-read after resume. Executions are counted per
        chunk, just before its work starts; documents the stage has already done (a
        re-published duplicate) are audited, not counted.
        """
        already_done = getattr(self.stage, "already_done", None)
        size = self._chunk_size()
        results: list[StageResult] = []
        for start in range(0, len(items), size):
            if start and self.gate.version() != version:
                break
            chunk = items[start:start + size]
            done: dict[int, StageResult] = {}
            for i, item in enumerate(chunk):
                why = already_done(item, batches[item.store]) if already_done else None
                if why:
                    done[i] = StageResult(Note("duplicate_ignored", why))
            work = [item for i, item in enumerate(chunk) if i not in done]
            self._record_executions(work)
            worked = iter(self.stage.process_batch(work, batches) if work else [])
            results += [done[i] if i in done else next(worked) for i in range(len(chunk))]
        return results

    @staticmethod
    def _cut_at(msg: Message, left: list[InputRecord]) -> bool:
        """Whether ``msg`` is one of the records left unprocessed by an early stop."""
        topic, partition, offset = where(msg)
        return any(i.state_key is None and i.partition == partition and i.offset == offset
                   and topic.endswith(i.topic) for i in left)

    def _chunk_size(self) -> int:
        """Parse works in the process pool: a chunk keeps every child busy once. Extract
        can take a few hundred ms on a long contract: one document at a time. The other
        stages are quick enough to take the batch whole."""
        if self.stage.name == "parse":
            return max(1, self.settings.parse_workers)
        if self.stage.name == "extract":
            return 1
        return max(1, self.settings.batch_max_docs)

    def _is_error(self, msg: Message) -> bool:
        err = msg.error()
        if err:
            log.warning("%s consumer: %s", self.stage.name, err)
            if _is_fatal(err):
                self._consumer_fatal = err.str()
            return True
        return False

    def _decode(self, msg: Message) -> InputRecord:
        topic, partition, offset = where(msg)
        key = (msg.key() or b"").decode()
        value = msg.value() or b""
        try:
            schema, record = records.decode(value)
        except Exception as exc:  # noqa: BLE001 - undecodable input is a dead letter
            schema, record = "Undecodable", {"error": str(exc)}
        return InputRecord(topic[len(self.prefix):], partition, offset, key, schema, record,
                           value)

    def _record_executions(self, items: list[InputRecord]) -> None:
        """Durably count the work about to start, outside the transaction, so that work
        which aborts or crashes is still counted (redone work becomes visible)."""
        assert self.exec_producer is not None
        topic = names.topic(self.prefix, names.EXECUTIONS)
        failed: list[str] = []

        def delivered(err: Any, _msg: Message) -> None:
            if err is not None:
                failed.append(str(err))

        for item in items:
            if item.schema == "Undecodable":
                continue
            doc = item.doc
            value = records.encode("Execution", {
                "doc_id": doc["doc_id"], "job_id": doc["job_id"], "stage": self.stage.name,
                "attempt": item.attempt, "worker": self.worker_id, "at_ms": now_ms(),
            })
            self.exec_producer.produce(topic, key=doc["doc_id"].encode(), value=value,
                                       on_delivery=delivered)
        # flush() returning 0 only says the queue is empty: a record that failed (say,
        # timed out while the broker was down) is gone from it too; the callback tells.
        remaining = self.exec_producer.flush(30)
        if remaining or failed:
            raise KafkaException(f"{remaining} execution records still queued, "
                                 f"{len(failed)} failed ({'; '.join(failed[:3])})")

    # -- outcomes -> records -----------------------------------------------------------
    def _route(self, item: InputRecord, result: StageResult, state: Batch,
               pending: _Pending) -> None:
        if item.state_key:
            state.delete(item.state_key)
        outcome = result.outcome
        if isinstance(outcome, Retry) and item.attempt >= self.settings.max_attempts:
            outcome = DeadLetter(outcome.reason, f"gave up after {item.attempt} attempts: "
                                 f"{outcome.message}", error_class="RetriesExhausted")
        if isinstance(outcome, Emit):
            for emit in (outcome, *result.extra):
                topic = emit.topic or names.STAGE_OUTPUT[self.stage.name]
                if topic is not None:
                    pending.produce.append((topic, item.key,
                                            records.encode(emit.schema, emit.record)))
            self._event(pending, item, outcome.transition, outcome.detail)
        elif isinstance(outcome, Note):
            self._event(pending, item, outcome.transition, outcome.detail)
        elif isinstance(outcome, Retry):
            self._schedule_retry(item, outcome, state)
            self._event(pending, item, "retry_scheduled", f"{outcome.reason}: {outcome.message}")
        else:
            self._dead_letter(item, outcome, pending)

    def _attempt_record(self, item: InputRecord, reason: str, message: str) -> dict[str, Any]:
        return {"attempt": item.attempt, "at_ms": now_ms(), "reason": reason,
                "message": message[:2000]}

    def _schedule_retry(self, item: InputRecord, retry: Retry, state: Batch) -> None:
        delay = self.settings.retry_backoff_s * (2 ** (item.attempt - 1))
        attempts = [*item.attempts, self._attempt_record(item, retry.reason, retry.message)]
        state.put(inputs.retry_key(now_ms() + int(delay * 1000), item.key),
                  inputs.stash(item, attempts))

    def _waiting(self, prefix: str, room: int,
                 batches: dict[StoreKey, Batch]) -> list[InputRecord]:
        """Retries that are due, or parked records of jobs no longer paused, oldest first;
        their entries are deleted in the transaction that finishes them."""
        out: list[InputRecord] = []
        limit = inputs.retry_key(now_ms(), "~")
        paused = self.gate.paused_jobs
        for store_key in batches:
            # The committed store, not the batch: a record parked in this very batch
            # waits for the next one, behind those parked before it.
            for key, raw in self.stores[store_key].scan(prefix):
                if len(out) >= room or (prefix == inputs.RETRY_PREFIX and key > limit):
                    break
                if inputs.stashed_job(raw) in paused:
                    continue
                out.append(inputs.unstash(key, raw, store_key))
        return out

    def _split_parked(self, items: list[InputRecord], batches: dict[StoreKey, Batch]
                      ) -> tuple[list[InputRecord], list[InputRecord]]:
        """Split fresh records into (to process, to park): the records of paused jobs, and
        of jobs whose parked records on that partition have not all come back yet (to
        keep their order), are set aside."""
        keep, park = [], []
        parking: set[tuple[StoreKey, str]] = set()
        for item in items:
            job = item.job_id
            if job is not None and (
                    job in self.gate.paused_jobs or (item.store, job) in parking
                    or next(batches[item.store].scan(inputs.park_prefix(job)), None)):
                park.append(item)
                parking.add((item.store, job))
            else:
                keep.append(item)
        return keep, park

    def _park(self, items: list[InputRecord], cut: Mapping[tuple[str, int], int],
              batches: dict[StoreKey, Batch], pending: _Pending) -> None:
        """Park records in this transaction, except those at or past ``cut``, the first
        record of their partition that the batch leaves unprocessed (a pause cut it
        short): their offsets are not committed and they are read again after the
        rewind, so a park entry would hand them out twice (once re-injected, once
        re-read)."""
        for item in items:
            where_ = (names.topic(self.prefix, item.topic), item.partition)
            if item.offset >= cut.get(where_, item.offset + 1):
                continue
            batches[item.store].put(inputs.park_key(item), inputs.stash(item, item.attempts))
            self._event(pending, item, "parked", f"job {item.job_id} is paused")

    def _dead_letter(self, item: InputRecord, dead: DeadLetter, pending: _Pending) -> None:
        if item.schema == "Undecodable":
            doc: dict[str, Any] = {"doc_id": item.key or f"{item.topic}:{item.partition}:{item.offset}",
                   "job_id": "", "source": "", "sha256": "", "blob_ref": "", "size_bytes": 0,
                   "submitted_at_ms": 0, "generation": 0}
        else:
            doc = item.doc
        attempts = [*item.attempts, self._attempt_record(item, dead.reason, dead.message)]
        value = records.encode("DeadLetter", {
            "doc": doc, "stage": self.stage.name, "reason": dead.reason,
            "error_class": dead.error_class, "message": dead.message, "attempts": attempts,
            "source_topic": item.topic, "source_partition": item.partition,
            "source_offset": item.offset, "page_count": dead.page_count,
            "pipeline_version": self.settings.pipeline_version, "dead_lettered_at_ms": now_ms(),
        })
        pending.produce.append((names.DEADLETTER, doc["doc_id"], value))
        self._event(pending, item, "dead_lettered", f"{dead.reason}: {dead.message}", doc)

    def _event(self, pending: _Pending, item: InputRecord, transition: str, detail: str,
               doc: dict[str, Any] | None = None) -> None:
        doc = doc or item.doc
        value = records.encode("LifecycleEvent", {
            "event_id": uuid.uuid4().hex, "subject": doc["doc_id"], "job_id": doc["job_id"],
            "seq": seq_of(doc.get("generation", 0), self.stage.name, item.attempt),
            "stage": self.stage.name,
            "transition": transition, "detail": detail[:2000], "source": doc.get("source"),
            "worker": self.worker_id, "at_ms": now_ms(),
            "pipeline_version": self.settings.pipeline_version,
        })
        pending.produce.append((names.EVENTS, doc["doc_id"], value))

    # -- the one commit function -------------------------------------------------------
    def _commit(self, pending: _Pending, batches: dict[StoreKey, Batch],
                messages: list[Message]) -> bool:
        """Produce outputs, produce changelog, send offsets, commit — in that order.
        Return whether it committed (on failure, the input has been rewound)."""
        assert self.consumer is not None
        try:
            if self.producer is not None:
                self.producer.poll(0)  # serve its error callback: a broker loss shows here
            if self._broker_lost:
                self._refresh_producer()
            assert self.producer is not None
            producer = self.producer
            self._producer_lost = None
            producer.begin_transaction()
            for topic, key, value in pending.produce:
                producer.produce(names.topic(self.prefix, topic), key=key.encode(), value=value)
            for (source, partition), batch in batches.items():
                for key, change in batch.changes.items():
                    producer.produce(self._changelog(source), key=key.encode(), value=change,
                                     partition=partition)
            self._fault("after_produce")
            timeout = self.settings.txn_call_timeout_s
            deadline = timeout + self.settings.txn_call_grace_s
            if pending.offsets:
                offsets = [TopicPartition(t, p, o) for (t, p), o in pending.offsets.items()]
                metadata = self.consumer.consumer_group_metadata()
                within(deadline, "send_offsets_to_transaction",
                       lambda: producer.send_offsets_to_transaction(offsets, metadata, timeout),
                       give_up=lambda: self._lost_mid_call(producer))
            self._fault("before_commit")
            within(deadline, "commit_transaction", lambda: self._commit_transaction(producer),
                   give_up=lambda: self._lost_mid_call(producer))
        except KafkaException as exc:
            self._recover(exc, messages)
            return False
        except ClientStuck:
            # Whether this transaction commits is now up to the coordinator; the local
            # stores cannot know. Drop every client and store: run() reconnects, the new
            # producer fences this one, and the stores are restored from the changelog
            # (committed records only) before any input is read again.
            log.error("%s: transactional producer stuck; rebuilding the clients and "
                      "restoring state from the changelog", self.stage.name)
            self.producer = None
            raise
        self._fault("after_commit")  # committed, not yet applied to RocksDB
        for store_key, batch in batches.items():
            if batch.changes and store_key in self.stores:
                self.stores[store_key].apply(batch.changes)
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(self.stage.name, len(messages))
        return True

    def _commit_transaction(self, producer: Producer) -> None:
        while True:
            try:
                producer.commit_transaction(self.settings.txn_call_timeout_s)
                return
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is not None and err.retriable() and not err.txn_requires_abort():
                    continue
                raise

    def _recover(self, exc: KafkaException, messages: list[Message]) -> None:
        """Abort (or rebuild a fenced/fatal producer), then rewind to committed offsets."""
        self.aborts += 1
        err = kafka_error(exc)
        log.warning("%s transaction failed (%s); rewinding", self.stage.name, exc)
        if err is not None and err.txn_requires_abort():
            producer = self.producer
            assert producer is not None
            try:
                within(self.settings.txn_call_timeout_s + self.settings.txn_call_grace_s,
                       "abort_transaction",
                       lambda: producer.abort_transaction(self.settings.txn_call_timeout_s))
            except (KafkaException, ClientStuck):
                # Nothing of this transaction was committed: the new producer's
                # init_transactions fences the old one and aborts what it had open.
                self._rebuild_producer()
        else:
            self._rebuild_producer()
        self._rewind(messages)

    def _rebuild_producer(self) -> None:
        self._producer_lost = None
        self.producer = transactional_producer(
            self.settings, self.bootstrap,
            names.transactional_id(self.prefix, self.stage.name, self.worker_id),
            error_cb=self._on_producer_error,
        )

    def _on_producer_error(self, err: KafkaError) -> None:
        """Transactional producer error callback, served by producer.poll(): from the
        runner thread before a transaction, or from the thread waiting on a commit."""
        if err.code() in _BROKER_LOST:
            self._producer_lost = err.str()
            self._broker_lost = True

    def _lost_mid_call(self, producer: Producer) -> str | None:
        """For within(): a reason to stop waiting on a transactional call, if the
        producer lost its broker connection since the call began."""
        producer.poll(0)
        return f"broker connection lost ({self._producer_lost})" if self._producer_lost else None

    def _rewind(self, messages: list[Message]) -> None:
        assert self.consumer is not None
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in _first_offsets(messages).items():
            if (topic, partition) in assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))
