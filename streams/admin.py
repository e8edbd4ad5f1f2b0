"""Operator-side reads for pause, resume and status: live group members, lag, acks.

``wait_for_acks`` is what makes ``docstreams pause --wait`` mean "safe now": it returns
once every live member of the affected stage groups has acknowledged the command, i.e.
applied it with its batch in flight committed (or aborted, with ``--now``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, ConsumerGroupDescription

from streams import names, records
from streams.kafka import high_watermark, reader, where
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.control import Desired


def affected_stages(scope: str) -> list[str]:
    return [scope[6:]] if scope.startswith("stage:") else list(names.STAGES)


def live_members(settings: Settings, bootstrap: str, stages: Iterable[str]
                 ) -> set[tuple[str, str]]:
    """(stage, worker id) of every member of the stage groups right now."""
    admin = AdminClient(settings.kafka_common(bootstrap))
    groups = {names.group_id(settings.topic_prefix, s): s for s in stages}
    out: set[tuple[str, str]] = set()
    futures = admin.describe_consumer_groups(list(groups))
    for group, future in futures.items():
        try:
            desc: ConsumerGroupDescription = future.result(timeout=15)
        except Exception:  # noqa: BLE001 - a group that does not exist has no members
            continue
        for member in desc.members:
            instance = member.group_instance_id or ""
            stage, _, worker = instance.partition(".")
            if stage == groups[group] and worker:
                out.add((stage, worker))
    return out


@dataclass
class AckReport:
    command: dict[str, Any]
    expected: set[tuple[str, str]] = field(default_factory=set)
    acks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    complete: bool = False
    seconds: float = 0.0

    def missing(self) -> list[tuple[str, str]]:
        return sorted(self.expected - self.acks.keys())


def wait_for_acks(settings: Settings, bootstrap: str, command: dict[str, Any],
                  timeout: float = 60.0) -> AckReport:
    started = time.monotonic()
    stages = affected_stages(command["scope"])
    report = AckReport(command)
    topic = names.topic(settings.topic_prefix, names.CONTROL_ACKS)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        # End offsets first, then the offsets by time: an ack that lands in between is
        # found by the time lookup, one that lands after it sits past the end offset.
        ends = {p: high_watermark(consumer, TopicPartition(topic, p)) for p in meta.partitions}
        since = command["at_ms"] - 5000
        start = consumer.offsets_for_times(
            [TopicPartition(topic, p, since) for p in meta.partitions], timeout=10)
        consumer.assign([tp if tp.offset >= 0 else TopicPartition(topic, tp.partition,
                                                                   ends[tp.partition])
                         for tp in start])
        next_members, empty_checks = 0.0, 0
        while time.monotonic() - started < timeout:
            if time.monotonic() >= next_members:
                report.expected = live_members(settings, bootstrap, stages)
                next_members = time.monotonic() + 1.0
                empty_checks = 0 if report.expected else empty_checks + 1
                if empty_checks >= 2:  # nobody to wait for (checked twice, 1 s apart)
                    break
            for msg in consumer.consume(100, timeout=0.1):
                if msg.error():
                    continue
                _, ack = records.decode(msg.value() or b"", expect="ControlAck")
                if ack["command_id"] == command["command_id"]:
                    report.acks[(ack["stage"], ack["worker"])] = ack
            if report.expected and not report.missing():
                report.complete = True
                break
    finally:
        consumer.close()
    report.seconds = time.monotonic() - started
    return report


def stage_lag(settings: Settings, bootstrap: str, stages: Iterable[str]) -> dict[str, int]:
    """Records waiting per stage, past the group's committed offsets.

    End offset minus committed offset overcounts: every transaction leaves a commit
    marker that takes an offset and is never delivered (a caught-up partition shows 1).
    So the records are counted by reading them (read_committed) where the gap is small,
    and the gap is used as an upper bound only where it is large (COUNT_UP_TO)."""
    admin = AdminClient(settings.kafka_common(bootstrap))
    consumer = reader(settings, bootstrap)
    # (stage, topic, partition) -> [start, end)
    ranges: dict[tuple[str, str, int], tuple[int, int]] = {}
    try:
        meta = consumer.list_topics(timeout=10).topics
        stages = list(stages)
        for stage in stages:
            group = names.group_id(settings.topic_prefix, stage)
            parts = [TopicPartition(names.topic(settings.topic_prefix, t), p)
                     for t in names.STAGE_INPUTS[stage]
                     if names.topic(settings.topic_prefix, t) in meta
                     for p in meta[names.topic(settings.topic_prefix, t)].partitions]
            committed = _committed(admin, group, parts)
            for tp in parts:
                start = max(committed.get((tp.topic, tp.partition), 0), 0)
                ranges[(stage, tp.topic, tp.partition)] = (start, high_watermark(consumer, tp))
        counts = _count_records(consumer, ranges)
    finally:
        consumer.close()
    out = dict.fromkeys(stages, 0)
    for (stage, _, _), n in counts.items():
        out[stage] += n
    return out


COUNT_UP_TO = 5000


def _count_records(consumer: Consumer, ranges: dict[tuple[str, str, int], tuple[int, int]],
                   timeout: float = 10.0) -> dict[tuple[str, str, int], int]:
    """Committed records in each [start, end), read in one pass over every partition.

    A range larger than COUNT_UP_TO, or one whose read has not reached its end in time
    (an open transaction holds read_committed readers back), counts as its offset gap."""
    starts: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    for (_, topic, partition), (start, end) in ranges.items():
        if 0 < end - start <= COUNT_UP_TO:
            key = (topic, partition)
            starts[key] = min(starts.get(key, start), start)
            ends[key] = max(ends.get(key, end), end)
    left = set(starts)
    seen: dict[tuple[str, int], list[int]] = {key: [] for key in starts}
    if starts:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.1):
                if not msg.error():
                    topic, partition, offset = where(msg)
                    seen[(topic, partition)].append(offset)
            for pos in consumer.position([TopicPartition(t, p) for t, p in left]):
                if pos.offset >= ends[(pos.topic, pos.partition)]:
                    left.discard((pos.topic, pos.partition))
        consumer.unassign()
    counts: dict[tuple[str, str, int], int] = {}
    for (stage, topic, partition), (start, end) in ranges.items():
        read = (topic, partition)
        if read in starts and read not in left:
            n = sum(1 for o in seen[read] if start <= o < end)
        else:
            n = max(0, end - start)
        counts[(stage, topic, partition)] = n
    return counts


def _committed(admin: AdminClient, group: str, parts: list[TopicPartition]
               ) -> dict[tuple[str, int], int]:

    if not parts:
        return {}
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])
    try:
        result = futures[group].result(timeout=15)
    except Exception:  # noqa: BLE001 - no offsets committed yet
        return {}
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions
            if tp.offset >= 0}


def read_desired(settings: Settings, bootstrap: str) -> Desired | None:
    """The desired state now; None on a cluster no job or command has used yet."""
    from streams.control import ControlView

    view = ControlView(settings, bootstrap)
    try:
        return view.load_to_end() if view.exists() else None
    finally:
        view.close()


def read_control(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """The desired state now, and the latest ack of each (stage, worker)."""
    desired = read_desired(settings, bootstrap)
    if desired is None:  # nothing is paused, nobody has acknowledged anything
        return {"paused": [], "entries": {}, "acks": []}
    acks: dict[tuple[str, str], dict[str, Any]] = {}
    topic = names.topic(settings.topic_prefix, names.CONTROL_ACKS)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is not None:
            parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            ends = {tp.partition: high_watermark(consumer, tp) for tp in parts}
            consumer.assign(parts)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=0.3):
                    if not msg.error():
                        _, ack = records.decode(msg.value() or b"", expect="ControlAck")
                        # Acks are spread over partitions by command id: keep each
                        # worker's newest, not the last one read.
                        key = (ack["stage"], ack["worker"])
                        if key not in acks or ack["at_ms"] >= acks[key]["at_ms"]:
                            acks[key] = ack
                pos = consumer.position([TopicPartition(topic, p) for p in ends])
                if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in pos):
                    break
    finally:
        consumer.close()
    live = live_members(settings, bootstrap, names.STAGES) if acks else set()
    for key, ack in acks.items():
        ack["live"] = key in live  # the last word of a worker that has since left, if False
    return {"paused": desired.paused(), "entries": desired.entries,
            "acks": sorted(acks.values(), key=lambda a: (a["stage"], a["worker"]))}


def retention_ms(settings: Settings, bootstrap: str, stages: Iterable[str]) -> int | None:
    """The shortest retention of the topics the given stages read (None: unlimited)."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    admin = AdminClient(settings.kafka_common(bootstrap))
    topics = {names.topic(settings.topic_prefix, t) for s in stages for t in names.STAGE_INPUTS[s]}
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in sorted(topics)]
    shortest: int | None = None
    for future in admin.describe_configs(resources).values():
        try:
            entry = future.result(timeout=15).get("retention.ms")
        except Exception:  # noqa: BLE001 - a missing topic holds nothing back
            continue
        if entry is not None and int(entry.value) >= 0:
            value = int(entry.value)
            shortest = value if shortest is None else min(shortest, value)
    return shortest


def paused_with_warnings(settings: Settings, bootstrap: str,
                         paused: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each paused scope with its age and, near the retention of a topic it holds back,
    a warning."""
    from streams.control import paused_since
    from streams.pausing import retention_warning

    now = int(time.time() * 1000)
    out = []
    for entry in paused:
        # Counted from the start of the pause, not from a later pause of the same scope:
        # the records held back have waited since then.
        began = paused_since(entry)
        retention = retention_ms(settings, bootstrap, affected_stages(entry["scope"]))
        warning = retention_warning(began, retention, now) if retention else None
        out.append({**entry, "paused_since_ms": began, "age_s": round((now - began) / 1000, 1),
                    "retention_ms": retention, "warning": warning})
    return out
