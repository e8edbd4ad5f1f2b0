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

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from streams import names, records
from streams.kafka import (
    consumer_config,
    high_watermark,
    idempotent_producer,
    kafka_error,
    reader,
    transactional_producer,
)
from streams.outcomes import DeadLetter, Emit, Retry, Note, StageResult
from streams.settings import Settings
from streams.state import Batch, PartitionStore, StatePort

log = logging.getLogger("docstreams.runtime")

STAGE_INDEX = {"submit": 0, "parse": 1, "extract": 2, "validate": 3, "route": 4, "sink": 5}
RETRY_PREFIX = "retry/"


def now_ms() -> int:
    return int(time.time() * 1000)


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
    retry_key: str | None = None  # state key of the retry entry this came from

    @property
    def doc(self) -> dict[str, Any]:
        return doc_of(self.schema, self.record)

    @property
    def attempt(self) -> int:
        return len(self.attempts) + 1


def doc_of(schema: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The DocumentRef inside any pipeline record."""
    if schema == "DocumentValidated":
        return dict(record["extracted"]["doc"])
    if schema == "ReviewTask":
        return dict(record["decision"]["doc"])
    return dict(record["doc"])


class Stage(Protocol):
    name: str

    def process_batch(
        self, items: list[InputRecord], states: Mapping[int, StatePort]
    ) -> list[StageResult]: ...


def process_each(
    items: list[InputRecord],
    states: Mapping[int, StatePort],
    process: Callable[[InputRecord, StatePort], StageResult],
) -> list[StageResult]:
    """Default batch handling: one document at a time; an unexpected error in stage code
    becomes a retry of that document (then a dead letter), never a dead worker."""
    results = []
    for item in items:
        try:
            results.append(process(item, states[item.partition]))
        except Exception as exc:  # noqa: BLE001 - a bug in one document's handling
            log.exception("stage error on %s", item.key)
            results.append(StageResult(Retry("stage_error", f"{type(exc).__name__}: {exc}")))
    return results


@dataclass
class _Pending:
    """What one transaction will write."""

    produce: list[tuple[str, str, bytes, int | None]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class StageRunner:
    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        bootstrap: str,
        worker_id: str,
        on_commit: Callable[[str, int], None] | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.bootstrap = bootstrap
        self.worker_id = worker_id
        self.prefix = settings.topic_prefix
        self.inputs = [names.topic(self.prefix, t) for t in names.STAGE_INPUTS[stage.name]]
        self.changelog = names.changelog_topic(self.prefix, stage.name)
        self.stores: dict[int, PartitionStore] = {}
        self.on_commit = on_commit
        self.stop_event = threading.Event()
        self.commits = 0
        self.aborts = 0
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.exec_producer: Producer | None = None

    # -- lifecycle ------------------------------------------------------------------
    def _connect(self) -> None:
        self.producer = transactional_producer(
            self.settings, self.bootstrap,
            names.transactional_id(self.prefix, self.stage.name, self.worker_id),
        )
        self.exec_producer = idempotent_producer(self.settings, self.bootstrap)
        self.consumer = Consumer(consumer_config(
            self.settings, self.bootstrap, names.group_id(self.prefix, self.stage.name),
            **{"group.instance.id": f"{self.stage.name}.{self.worker_id}",
               "client.id": f"docstreams.{self.stage.name}.{self.worker_id}"},
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
                log.exception("%s runner failed; reconnecting in %.0fs", self.stage.name, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._close()

    def stop(self) -> None:
        self.stop_event.set()

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except KafkaException:
                pass
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
        for p in {tp.partition for tp in partitions}:
            if p not in self.stores:
                self.stores[p] = self._restore(p)
        log.info("%s assigned %s", self.stage.name, sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        still = {tp.partition for tp in consumer.assignment()} - {tp.partition for tp in partitions}
        for p in list(self.stores):
            if p not in still:
                self.stores.pop(p).close()

    def _restore(self, partition: int) -> PartitionStore:
        """Open the partition's store and catch it up with the changelog (committed
        records only), from the offset it had applied before."""
        path = self.settings.state_dir / self.worker_id / self.stage.name / f"p{partition}"
        store = PartitionStore(path)
        consumer = reader(self.settings, self.bootstrap)
        try:
            high = high_watermark(consumer, TopicPartition(self.changelog, partition))
            start = store.checkpoint
            if start > high:  # the topic was recreated: start over
                store.close()
                PartitionStore.destroy(path)
                store, start = PartitionStore(path), 0
            consumer.assign([TopicPartition(self.changelog, partition, start)])
            deadline = time.monotonic() + 60
            position = start
            while position < high:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"restore of {self.changelog}[{partition}] stuck at "
                                       f"{position} < {high}")
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    store.apply({msg.key().decode(): msg.value()})
                pos = consumer.position([TopicPartition(self.changelog, partition)])[0].offset
                position = max(position, pos)
            store.checkpoint = high
        finally:
            consumer.close()
        return store

    # -- the loop ----------------------------------------------------------------------
    def run_once(self) -> None:
        assert self.consumer is not None
        messages = [
            m for m in self.consumer.consume(self.settings.batch_max_docs, timeout=0.5)
            if not self._is_error(m)
        ]
        items = [self._decode(m) for m in messages]
        items += self._due_retries(self.settings.batch_max_docs - len(items))
        if not items:
            return
        batches = {p: Batch(store) for p, store in self.stores.items()}
        results = self._process(items, batches)
        pending = _Pending()
        for msg in messages:
            key = (msg.topic(), msg.partition())
            pending.offsets[key] = max(pending.offsets.get(key, 0), msg.offset() + 1)
        for item, result in zip(items, results, strict=True):
            self._route(item, result, batches[item.partition], pending)
        self._commit(pending, batches, messages)

    def _process(self, items: list[InputRecord], batches: dict[int, Batch]) -> list[StageResult]:
        """Count executions, then run the stage — except on documents the stage says it
        has already done (a re-published duplicate): those are audited, not counted."""
        already_done = getattr(self.stage, "already_done", None)
        done: dict[int, StageResult] = {}
        if already_done is not None:
            for i, item in enumerate(items):
                why = already_done(item, batches[item.partition])
                if why:
                    done[i] = StageResult(Note("duplicate_ignored", why))
        work = [item for i, item in enumerate(items) if i not in done]
        self._record_executions(work)
        worked = iter(self.stage.process_batch(work, batches) if work else [])
        return [done[i] if i in done else next(worked) for i in range(len(items))]

    def _is_error(self, msg: Message) -> bool:
        if msg.error():
            log.warning("%s consumer: %s", self.stage.name, msg.error())
            return True
        return False

    def _decode(self, msg: Message) -> InputRecord:
        logical = msg.topic()[len(self.prefix):]
        key = (msg.key() or b"").decode()
        try:
            schema, record = records.decode(msg.value())
        except Exception as exc:  # noqa: BLE001 - undecodable input is a dead letter
            schema, record = "Undecodable", {"error": str(exc)}
        return InputRecord(logical, msg.partition(), msg.offset(), key, schema, record,
                           msg.value())

    def _record_executions(self, items: list[InputRecord]) -> None:
        """Durably count the work about to start, outside the transaction, so that work
        which aborts or crashes is still counted (redone work becomes visible)."""
        assert self.exec_producer is not None
        topic = names.topic(self.prefix, names.EXECUTIONS)
        for item in items:
            if item.schema == "Undecodable":
                continue
            doc = item.doc
            value = records.encode("Execution", {
                "doc_id": doc["doc_id"], "job_id": doc["job_id"], "stage": self.stage.name,
                "attempt": item.attempt, "worker": self.worker_id, "at_ms": now_ms(),
            })
            self.exec_producer.produce(topic, key=doc["doc_id"].encode(), value=value)
        remaining = self.exec_producer.flush(30)
        if remaining:
            raise KafkaException(f"{remaining} execution records not delivered")

    # -- outcomes -> records -----------------------------------------------------------
    def _route(self, item: InputRecord, result: StageResult, state: Batch,
               pending: _Pending) -> None:
        if item.retry_key:
            state.delete(item.retry_key)
        outcome = result.outcome
        if isinstance(outcome, Retry) and item.attempt >= self.settings.max_attempts:
            outcome = DeadLetter(outcome.reason, f"gave up after {item.attempt} attempts: "
                                 f"{outcome.message}", error_class="RetriesExhausted")
        if isinstance(outcome, Emit):
            for emit in (outcome, *result.extra):
                topic = emit.topic or names.STAGE_OUTPUT[self.stage.name]
                if topic is not None:
                    pending.produce.append((topic, item.key,
                                            records.encode(emit.schema, emit.record), None))
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
        due = now_ms() + int(delay * 1000)
        entry = {
            "topic": item.topic, "partition": item.partition, "offset": item.offset,
            "key": item.key, "value": base64.b64encode(item.value).decode(),
            "attempts": [*item.attempts, self._attempt_record(item, retry.reason, retry.message)],
        }
        state.put(f"{RETRY_PREFIX}{due:013d}/{item.key}", json.dumps(entry).encode())

    def _due_retries(self, room: int) -> list[InputRecord]:
        due: list[InputRecord] = []
        limit = f"{RETRY_PREFIX}{now_ms():013d}"
        for partition, store in self.stores.items():
            for key, raw in store.scan(RETRY_PREFIX):
                if key > limit or len(due) >= room:
                    break
                entry = json.loads(raw)
                value = base64.b64decode(entry["value"])
                schema, record = records.decode(value)
                due.append(InputRecord(entry["topic"], partition, entry["offset"], entry["key"],
                                       schema, record, value, entry["attempts"], key))
        return due

    def _dead_letter(self, item: InputRecord, dead: DeadLetter, pending: _Pending) -> None:
        if item.schema == "Undecodable":
            doc = {"doc_id": item.key or f"{item.topic}:{item.partition}:{item.offset}",
                   "job_id": "", "source": "", "sha256": "", "blob_ref": "", "size_bytes": 0,
                   "submitted_at_ms": 0}
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
        pending.produce.append((names.DEADLETTER, doc["doc_id"], value, None))
        self._event(pending, item, "dead_lettered", f"{dead.reason}: {dead.message}", doc)

    def _event(self, pending: _Pending, item: InputRecord, transition: str, detail: str,
               doc: dict[str, Any] | None = None) -> None:
        doc = doc or item.doc
        value = records.encode("LifecycleEvent", {
            "event_id": uuid.uuid4().hex, "subject": doc["doc_id"], "job_id": doc["job_id"],
            "seq": STAGE_INDEX[self.stage.name] * 100 + item.attempt, "stage": self.stage.name,
            "transition": transition, "detail": detail[:2000], "source": doc.get("source"),
            "worker": self.worker_id, "at_ms": now_ms(),
            "pipeline_version": self.settings.pipeline_version,
        })
        pending.produce.append((names.EVENTS, doc["doc_id"], value, None))

    # -- the one commit function -------------------------------------------------------
    def _commit(self, pending: _Pending, batches: dict[int, Batch], messages: list[Message]) -> None:
        """Produce outputs, produce changelog, send offsets, commit — in that order."""
        assert self.producer is not None and self.consumer is not None
        producer = self.producer
        try:
            producer.begin_transaction()
            for topic, key, value, partition in pending.produce:
                kwargs = {} if partition is None else {"partition": partition}
                producer.produce(names.topic(self.prefix, topic), key=key.encode(), value=value,
                                 **kwargs)
            for partition, batch in batches.items():
                for key, change in batch.changes.items():
                    producer.produce(self.changelog, key=key.encode(), value=change,
                                     partition=partition)
            if pending.offsets:
                offsets = [TopicPartition(t, p, o) for (t, p), o in pending.offsets.items()]
                producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), 30)
            self._commit_transaction(producer)
        except KafkaException as exc:
            self._recover(exc, messages)
            return
        for partition, batch in batches.items():
            if batch.changes and partition in self.stores:
                self.stores[partition].apply(batch.changes)
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(self.stage.name, len(messages))

    def _commit_transaction(self, producer: Producer) -> None:
        while True:
            try:
                producer.commit_transaction(30)
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
            try:
                assert self.producer is not None
                self.producer.abort_transaction(30)
            except KafkaException:
                self._rebuild_producer()
        else:
            self._rebuild_producer()
        self._rewind(messages)

    def _rebuild_producer(self) -> None:
        self.producer = transactional_producer(
            self.settings, self.bootstrap,
            names.transactional_id(self.prefix, self.stage.name, self.worker_id),
        )

    def _rewind(self, messages: list[Message]) -> None:
        assert self.consumer is not None
        first: dict[tuple[str, int], int] = {}
        for msg in messages:
            key = (msg.topic(), msg.partition())
            first[key] = min(first.get(key, msg.offset()), msg.offset())
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in first.items():
            if (topic, partition) in assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))
