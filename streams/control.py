"""Pause and resume as durable desired state.

An admin command writes a :class:`ControlState` to the compacted ``docs.control`` topic,
keyed by scope (``all``, ``stage:<name>``, ``job:<id>``), together with a lifecycle event,
in one transaction. Every worker reads the topic to its end before it consumes any stage
topic (fail closed: a worker that cannot read it does not start) and follows it after;
each stage runner converges on the desired state and acknowledges every command on
``docs.control.acks`` with its committed offsets. A consumer's own pause flag is only
the mechanism; this topic is the truth, so a restarted or newly joined worker comes up
paused, and a partition that moves stays paused.
"""

from __future__ import annotations

import getpass
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from streams import names, records
from streams.errors import DocstreamsError
from streams.kafka import high_watermark, kafka_error, reader, transactional_producer
from streams.settings import Settings

PAUSED, RESUMED = "paused", "resumed"


def scope_key(all_: bool = False, stage: str | None = None, job: str | None = None) -> str:
    chosen = [s for s in (all_ and "all", stage and f"stage:{stage}", job and f"job:{job}") if s]
    if len(chosen) != 1:
        raise DocstreamsError("name exactly one scope: --all, --stage S or --job J",
                              reason="bad_request")
    if stage and stage not in names.STAGES:
        raise DocstreamsError(f"unknown stage {stage!r}; stages: {', '.join(names.STAGES)}",
                              reason="bad_request")
    return str(chosen[0])


def scope_flags(scope: str) -> str:
    """The command-line flags that name ``scope`` (the inverse of scope_key)."""
    return "--all" if scope == "all" else f"--{scope.replace(':', ' ', 1)}"


def default_actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def paused_since(entry: dict[str, Any]) -> int:
    """When the pause ``entry`` belongs to began: the first of an unbroken run of pauses
    of its scope (what the retention guardrail counts from), not the latest command."""
    return entry.get("paused_since_ms") or entry["at_ms"]


@dataclass(frozen=True)
class Desired:
    """The desired state as of some point of the control topic: scope -> ControlState."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0

    def stage_pause(self, stage: str) -> dict[str, Any] | None:
        """The entry that pauses ``stage`` (``all`` first), or None."""
        for key in ("all", f"stage:{stage}"):
            entry = self.entries.get(key)
            if entry and entry["state"] == PAUSED:
                return entry
        return None

    def paused_jobs(self) -> frozenset[str]:
        return frozenset(k[4:] for k, e in self.entries.items()
                         if k.startswith("job:") and e["state"] == PAUSED)

    def paused(self) -> list[dict[str, Any]]:
        return sorted((e for e in self.entries.values() if e["state"] == PAUSED),
                      key=lambda e: e["at_ms"])

    def paused_since(self, scope: str) -> int | None:
        """Since when ``scope`` has been paused without a break, or None if it is not
        paused (an entry written before ``paused_since_ms`` existed: its own time)."""
        entry = self.entries.get(scope)
        if not entry or entry["state"] != PAUSED:
            return None
        return paused_since(entry)

    def applies_to(self, entry: dict[str, Any], stage: str) -> bool:
        scope = entry["scope"]
        return scope == "all" or scope == f"stage:{stage}" or scope.startswith("job:")

    def with_entry(self, entry: dict[str, Any]) -> Desired:
        return Desired({**self.entries, entry["scope"]: entry}, self.version + 1)


class ControlView:
    """Follows ``docs.control``; thread-safe snapshots for the stage runners."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topic = names.topic(settings.topic_prefix, names.CONTROL)
        self._desired = Desired()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer = reader(settings, bootstrap)

    def desired(self) -> Desired:
        with self._lock:
            return self._desired

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        _, entry = records.decode(value, expect="ControlState")
        with self._lock:
            self._desired = self._desired.with_entry(entry)

    def exists(self) -> bool:
        """Whether the control topic exists (a broker error raises, as in load_to_end)."""
        try:
            topics = self._consumer.list_topics(timeout=10).topics
        except KafkaException as exc:
            err = kafka_error(exc)
            raise DocstreamsError(
                f"cannot read {self.topic}: Kafka at {self.bootstrap} did not answer "
                f"({err.str() if err else exc}). Is the broker running "
                "(`docstreams broker status`)?",
                reason="control_unavailable", retryable=True) from None
        return self.topic in topics

    def load_to_end(self, timeout: float = 30.0) -> Desired:
        """Read the control topic to its end; raise if that cannot be done (fail closed)."""
        meta = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise DocstreamsError(f"cannot read {self.topic}; refusing to consume before the "
                                  "pause state is known", reason="control_unavailable",
                                  retryable=True)
        parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        ends = {tp.partition: high_watermark(self._consumer, tp) for tp in parts}
        self._consumer.assign(parts)
        deadline = time.monotonic() + timeout
        while True:
            positions = self._consumer.position([TopicPartition(self.topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                return self.desired()
            if time.monotonic() > deadline:
                raise DocstreamsError(f"could not read {self.topic} to its end in {timeout}s",
                                      reason="control_unavailable", retryable=True)
            self._poll(0.2)

    def _poll(self, timeout: float) -> None:
        for msg in self._consumer.consume(100, timeout=timeout):
            if not msg.error():
                self._apply(msg.value())

    def follow(self) -> None:
        """Keep following in a background thread (after :meth:`load_to_end`)."""
        def loop() -> None:
            while not self._stop.is_set():
                self._poll(0.2)
        self._thread = threading.Thread(target=loop, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._consumer.close()


class ControlClient:
    """The admin side: write desired state (with its audit event) in one transaction."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.producer = transactional_producer(
            settings, bootstrap, f"{settings.topic_prefix}docstreams.control.{uuid.uuid4().hex}")

    def set_state(self, scope: str, state: str, *, reason: str = "", mode: str = "drain",
                  by: str | None = None, paused_since_ms: int | None = None) -> dict[str, Any]:
        """Write ``state`` for ``scope``. A pause of a scope that is already paused passes
        the running pause's start as ``paused_since_ms`` (Desired.paused_since), so that
        who and why are updated but the age the retention warning counts is not reset."""
        at_ms = int(time.time() * 1000)
        entry = {"command_id": uuid.uuid4().hex, "scope": scope, "state": state, "mode": mode,
                 "by": by or default_actor(), "reason": reason, "at_ms": at_ms,
                 "paused_since_ms": (paused_since_ms or at_ms) if state == PAUSED else None}
        job = scope[4:] if scope.startswith("job:") else None
        event = {"event_id": uuid.uuid4().hex, "subject": f"control:{scope}", "job_id": job,
                 "seq": 0, "stage": "control", "transition": state,
                 "detail": f"{entry['by']}: {reason}".rstrip(": ") + f" (mode {mode})",
                 "source": None, "worker": entry["by"], "at_ms": entry["at_ms"],
                 "pipeline_version": self.settings.pipeline_version}
        prefix = self.settings.topic_prefix
        self.producer.begin_transaction()
        self.producer.produce(names.topic(prefix, names.CONTROL), key=scope.encode(),
                              value=records.encode("ControlState", entry))
        self.producer.produce(names.topic(prefix, names.EVENTS), key=f"control:{scope}".encode(),
                              value=records.encode("LifecycleEvent", event))
        try:
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            raise DocstreamsError(f"could not write {state} {scope} to {names.CONTROL}: {exc}; "
                                  "nothing was changed", reason="control_unavailable",
                                  retryable=True) from exc
        return entry
