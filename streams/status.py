"""Job status, folded from the audit log (``docs.events``) and the execution counts
(``docs.executions``), read with read_committed.

The same :class:`JobTracker` serves a one-shot ``docstreams status`` (read both topics to
their end) and the live progress of ``docstreams run`` (keep polling). A faust read
model over ``docs.events`` will serve this over HTTP later; until then this scan is
the read model, and it costs one pass over the two topics.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams import names, records
from streams.kafka import high_watermark, reader
from streams.settings import Settings

PIPELINE = ("parse", "extract", "validate", "route", "sink")
# Transitions that do not finish a stage's work on a document.
_NOT_DONE = {"retry_scheduled", "parked"}
IDLE_GAP_S = 30


@dataclass
class JobView:
    job: str
    submitted: dict[str, str] = field(default_factory=dict)  # doc_id -> source
    done: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    executions: Counter[str] = field(default_factory=Counter)
    executed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    outcome: dict[str, str] = field(default_factory=dict)  # doc_id -> terminal outcome
    dead_at: dict[str, str] = field(default_factory=dict)  # doc_id -> stage that dead-lettered
    completions: Counter[str] = field(default_factory=Counter)  # committed finishes per stage
    resubmissions: int = 0
    generation: dict[str, int] = field(default_factory=dict)  # doc_id -> newest generation
    first_at_ms: int | None = None
    last_at_ms: int | None = None
    # Whole seconds in which the job had an audit event: the basis of active_s.
    event_seconds: set[int] = field(default_factory=set)
    # Pauses of this job (command to resume, in ms), and the one in force, if any.
    paused_spans: list[tuple[int, int]] = field(default_factory=list)
    paused_since_ms: int | None = None

    def active_s(self) -> float:
        """Seconds the job was being worked on: first to last event, less the time it
        was paused (job scope) and every gap of more than IDLE_GAP_S without an event of
        the job (a pause of everything, no worker running, a retry's backoff, a re-run
        days later). No single step takes that long without an event: parse, the
        slowest, is stopped at its time limit (30 s by default)."""
        if self.first_at_ms is None or self.last_at_ms is None:
            return 0.0
        first, last = self.first_at_ms / 1000, self.last_at_ms / 1000
        seconds = sorted(self.event_seconds)
        idle = [(before + 1.0, float(after))
                for before, after in zip(seconds, seconds[1:], strict=False)
                if after - before > IDLE_GAP_S]
        spans = [*self.paused_spans] + ([(self.paused_since_ms, self.last_at_ms)]
                                        if self.paused_since_ms is not None else [])
        idle += [(start / 1000, end / 1000) for start, end in spans]
        return round(max(0.0, last - first - _covered(idle, first, last)), 3)

    def _dead_before(self, stage: str) -> int:
        """Documents dead-lettered by an earlier stage never reach ``stage`` (the sink
        records every document, dead letters included)."""
        if stage == "sink":
            return 0
        earlier = PIPELINE[:PIPELINE.index(stage)]
        return sum(1 for d, s in self.dead_at.items() if s in earlier and d in self.submitted)

    def _redone(self) -> dict[str, int]:
        """Work started more often than it committed a finish: crashes, aborts, retries
        of transient failures. Work under way (started, not yet finished) is not redone,
        and a deliberate `dlq retry` finishes again, so it is not counted either."""
        out = {}
        for s in PIPELINE:
            under_way = len(self.executed[s] - self.done[s])
            redone = self.executions[s] - self.completions[s] - under_way
            if redone > 0:
                out[s] = redone
        return out

    def snapshot(self, paused: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        outcomes = Counter(self.outcome[d] for d in self.submitted if d in self.outcome)
        documents = len(self.submitted)
        stages = {s: {"done": len(self.done[s] & self.submitted.keys()),
                      "executions": self.executions[s],
                      "expected": documents - self._dead_before(s)} for s in PIPELINE}
        return {
            "job": self.job,
            "documents": documents,
            "complete": documents > 0 and all(d in self.outcome for d in self.submitted),
            "outcomes": {k: outcomes.get(k, 0) for k in ("decided", "review", "dead_letter")},
            "stages": stages,
            "redone": self._redone(),
            "resubmissions": self.resubmissions,
            "paused": paused or [],
            "active_s": self.active_s(),
            "first_event_at_ms": self.first_at_ms,
            "last_event_at_ms": self.last_at_ms,
        }


def _covered(intervals: list[tuple[float, float]], low: float, high: float) -> float:
    """Length of the union of ``intervals`` within [low, high]."""
    total, reach = 0.0, low
    for start, end in sorted(intervals):
        start, end = max(start, reach), min(end, high)
        if end > start:
            total += end - start
            reach = end
    return total


class JobTracker:
    """Folds lifecycle events and executions into per-job views, and the control events
    into the scopes paused now (scope -> who and why)."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobView] = {}
        self.paused_scopes: dict[str, str] = {}

    def holding(self, job: str) -> dict[str, str]:
        """The paused scopes that hold ``job`` back: everything, a stage, or the job."""
        return {scope: why for scope, why in self.paused_scopes.items()
                if scope in ("all", f"job:{job}") or scope.startswith("stage:")}

    def view(self, job: str) -> JobView:
        if job not in self.jobs:
            self.jobs[job] = JobView(job)
        return self.jobs[job]

    def add(self, schema: str, rec: dict[str, Any]) -> None:
        if schema == "Execution":
            view = self.view(rec["job_id"])
            view.executions[rec["stage"]] += 1
            view.executed[rec["stage"]].add(rec["doc_id"])
            return
        if schema != "LifecycleEvent":
            return
        if rec["stage"] == "control":
            scope = rec["subject"].removeprefix("control:")
            if rec["transition"] == "paused":
                self.paused_scopes[scope] = rec["detail"]
            else:
                self.paused_scopes.pop(scope, None)
        if not rec.get("job_id"):
            return
        view = self.view(rec["job_id"])
        at = rec["at_ms"]
        if rec["stage"] == "control":  # a pause or resume of this job: not work on it
            if rec["transition"] == "paused" and view.paused_since_ms is None:
                view.paused_since_ms = at
            elif rec["transition"] == "resumed" and view.paused_since_ms is not None:
                view.paused_spans.append((view.paused_since_ms, at))
                view.paused_since_ms = None
            return
        view.first_at_ms = at if view.first_at_ms is None else min(view.first_at_ms, at)
        view.last_at_ms = at if view.last_at_ms is None else max(view.last_at_ms, at)
        view.event_seconds.add(at // 1000)
        doc, stage, transition = rec["subject"], rec["stage"], rec["transition"]
        if transition == "submitted":
            view.submitted.setdefault(doc, rec.get("source") or "")
        elif transition == "resubmitted":
            # A new generation starts: its earlier terminal outcome no longer stands. The
            # same generation re-published (a racing retry) is ignored by parse, and here.
            generation = rec["seq"] // 1000
            if generation <= view.generation.get(doc, 0):
                return
            view.generation[doc] = generation
            view.resubmissions += 1
            view.outcome.pop(doc, None)
            view.dead_at.pop(doc, None)
            for stage_done in view.done.values():
                stage_done.discard(doc)
        elif stage in PIPELINE and transition not in _NOT_DONE:
            if transition != "duplicate_ignored":
                view.completions[stage] += 1
            if rec["seq"] // 1000 < view.generation.get(doc, 0):
                return  # an older generation's transition, committed after the retry began
            view.done[stage].add(doc)
            if transition == "dead_lettered":
                view.dead_at[doc] = stage
            if stage == "sink" and transition == "recorded":
                view.outcome[doc] = rec["detail"]

class Follower:
    """Reads the events and executions topics from the beginning and keeps up."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.tracker = JobTracker()
        self.consumer: Consumer = reader(settings, bootstrap)
        topics = [names.topic(settings.topic_prefix, t) for t in (names.EVENTS, names.EXECUTIONS)]
        meta = self.consumer.list_topics(timeout=10)
        self.partitions = [TopicPartition(t, p, OFFSET_BEGINNING)
                           for t in topics if t in meta.topics
                           for p in meta.topics[t].partitions]
        self.consumer.assign(self.partitions)

    def poll(self, seconds: float = 0.2, max_messages: int = 5000) -> int:
        n = 0
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return n
            batch = self.consumer.consume(max_messages, timeout=remaining)
            for msg in batch:
                if msg.error():
                    continue
                try:
                    schema, rec = records.decode(msg.value() or b"")
                except Exception:  # noqa: BLE001 - the audit log must not stop status
                    continue
                self.tracker.add(schema, rec)
                n += 1
            if not batch:
                return n

    def catch_up(self, timeout: float = 30.0) -> None:
        """Read to the end offsets as they were when called (read_committed may stop at
        an open transaction; then give up at ``timeout`` with what has been read)."""
        ends = {}
        for tp in self.partitions:
            ends[(tp.topic, tp.partition)] = high_watermark(self.consumer, tp)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll(0.5)
            positions = self.consumer.position(
                [TopicPartition(t, p) for (t, p) in ends])
            if all(tp.offset >= ends[(tp.topic, tp.partition)] or
                   (tp.offset < 0 and ends[(tp.topic, tp.partition)] == 0)
                   for tp in positions):
                return

    def close(self) -> None:
        self.consumer.close()


def job_status(settings: Settings, bootstrap: str, jobs: Iterable[str] | None = None
               ) -> list[dict[str, Any]]:
    follower = Follower(settings, bootstrap)
    try:
        follower.catch_up()
        wanted = list(jobs) if jobs else sorted(follower.tracker.jobs)
        return [follower.tracker.view(j).snapshot() for j in wanted]
    finally:
        follower.close()
