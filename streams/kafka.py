"""Kafka client settings in one place, so every stage, the publisher and the CLI agree.

Values here follow ../shared/KAFKA.md: a short session timeout so a killed worker's
partitions move in seconds, cooperative-sticky assignment so a rebalance does not
stop the world, read_committed everywhere a pipeline topic is read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.settings import Settings

T = TypeVar("T")


def consumer_config(settings: Settings, bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    return {
        **settings.kafka_common(bootstrap),
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300_000,
        # The broker answers a connection's requests in order, so a request sent while
        # an empty long-poll Fetch is outstanding waits for it (the wake-up after a
        # resume, say). 100 ms bounds that wait, at ten empty fetches a second per
        # idle consumer.
        "fetch.wait.max.ms": 100,
        **extra,
    }


def reader(settings: Settings, bootstrap: str, **extra: Any) -> Consumer:
    """A group-less consumer for reading topics end to end (status, restore, tests)."""
    return Consumer({
        **settings.kafka_common(bootstrap),
        "group.id": "docstreams.reader",  # required by librdkafka; never committed
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **extra,
    })


def transactional_producer(settings: Settings, bootstrap: str, txn_id: str,
                           **extra: Any) -> Producer:
    producer = Producer({
        **settings.kafka_common(bootstrap),
        "transactional.id": txn_id,
        "transaction.timeout.ms": settings.transaction_timeout_ms,
        "linger.ms": 5,
        **extra,
    })
    producer.init_transactions(30)
    return producer


def idempotent_producer(settings: Settings, bootstrap: str) -> Producer:
    return Producer({
        **settings.kafka_common(bootstrap),
        "enable.idempotence": True,
        "linger.ms": 5,
    })


def where(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (never None once consumed)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """The partition's (low, high) watermarks, retrying while a new topic's leader is
    elected (NOT_LEADER_FOR_PARTITION and friends are retriable, and common right after
    creation)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException as exc:
            err = kafka_error(exc)
            retriable = err is not None and (err.retriable() or err.code() in _LEADER_CODES)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def high_watermark(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> int:
    return watermarks(consumer, tp, timeout)[1]


def low_watermark(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> int:
    return watermarks(consumer, tp, timeout)[0]


# _UNKNOWN_PARTITION: the client's metadata does not have the partition yet (a new
# topic, or just after a broker restart: seen in CI right after one).
_LEADER_CODES = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                 KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT,
                 KafkaError._UNKNOWN_PARTITION}


class ClientStuck(RuntimeError):
    """A client call did not return by its deadline.

    librdkafka's ``send_offsets_to_transaction`` and ``commit_transaction`` have been
    seen blocking far past their own timeout after a broker restart
    (confluentinc/librdkafka#5456, #5511). The caller abandons that client: a new
    producer with the same transactional id fences it, and whatever it had open is
    either committed or aborted by the coordinator, never both."""


def within(seconds: float, what: str, call: Callable[[], T],
           give_up: Callable[[], str | None] | None = None, check_after: float = 2.0) -> T:
    """Run a blocking client call in a helper thread and wait at most ``seconds``.

    The call itself cannot be cancelled; on expiry the helper thread is left to finish
    on its own (the client releases the GIL while it blocks) and :class:`ClientStuck`
    is raised, so the caller can drop the client and rebuild. ``give_up``, asked every
    half second once the call has run ``check_after`` seconds (a healthy call takes
    milliseconds), returns a reason to stop waiting early: say, the broker went away
    while the call was in flight, which is when the calls above hang."""
    box: dict[str, Any] = {}
    finished = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, name=f"within:{what}", daemon=True).start()
    started = time.monotonic()
    deadline = started + seconds
    while not finished.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
        now = time.monotonic()
        if now >= deadline:
            raise ClientStuck(f"{what} still blocked after {seconds:.0f}s")
        why = give_up() if give_up is not None and now - started >= check_after else None
        if why:
            raise ClientStuck(f"{what} abandoned after {now - started:.1f}s: {why}")
    if "error" in box:
        raise box["error"]
    return box["value"]


class RepeatFilter(logging.Filter):
    """Lets a client log line through once per ``every_s`` seconds: while a broker is
    away, librdkafka says "Connect to ... failed" for every client and broker several
    times a second (about 1,100 lines in 45 s in one `docstreams run`). Lines that
    differ only in numbers count as the same line."""

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.every_s) < self.every_s:
                return False
            self._last[key] = now
        return True


def quiet_client_logging(settings: Settings) -> Settings:
    """Settings whose clients log through the ``docstreams.kafka`` logger, each repeated
    line at most every 30 s (for a terminal a person reads)."""
    logger = logging.getLogger("docstreams.kafka")
    if not any(isinstance(f, RepeatFilter) for f in logger.filters):
        logger.addFilter(RepeatFilter())
    return settings.replace(kafka_extra={**settings.kafka_extra, "logger": logger})
