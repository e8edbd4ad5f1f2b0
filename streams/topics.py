"""Create the pipeline's topics on purpose, before any worker joins a group.

Brokers here run with ``auto.create.topics.enable=false``, and a consumer that
subscribes to a missing topic quietly ignores it until a metadata refresh minutes
later: so every topic is created up front, with its partition count, replication and
cleanup policy, and ``ensure_topics`` returns only when metadata shows them all led.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic, OffsetSpec

from streams import names as _names
from streams.errors import DocstreamsError
from streams.settings import Settings

__all__ = ["ensure_topics", "topic_configs"]

# The audit log and the execution records are the system of record: kept forever
# by default (replay and lineage read them from the beginning).
AUDIT_TOPICS = (_names.EVENTS, _names.EXECUTIONS)
_log = logging.getLogger(__name__)


def topic_configs(
    settings: Settings,
    extra: Iterable[str] = (),
    *,
    compacted: Iterable[str] = (),
    audit_retention_ms: int = -1,
) -> dict[str, dict[str, str]]:
    """Physical topic name -> topic-level config, for the pipeline plus ``extra`` topics.

    Pipeline names are prefixed with ``settings.topic_prefix``; ``extra`` and
    ``compacted`` are physical names already (as ``names.changelog_topic`` returns).
    """
    prefix = settings.topic_prefix
    configs: dict[str, dict[str, str]] = {}
    for logical in _names.ALL_TOPICS:
        config = _base_config(settings, compact=logical in _names.COMPACTED_TOPICS)
        if logical in AUDIT_TOPICS:
            config["retention.ms"] = str(audit_retention_ms)
        configs[_names.topic(prefix, logical)] = config
    compacted = set(compacted)
    for physical in [*extra, *sorted(compacted)]:
        configs.setdefault(physical, _base_config(settings, compact=physical in compacted))
    return configs


def _base_config(settings: Settings, *, compact: bool) -> dict[str, str]:
    config = {"cleanup.policy": "compact" if compact else "delete"}
    if settings.replication >= 3:
        # With three replicas, acks=all survives one broker down without losing a write.
        config["min.insync.replicas"] = "2"
    return config


def ensure_topics(
    settings: Settings,
    bootstrap: str,
    names: Iterable[str] | None = None,
    *,
    compacted: Iterable[str] = (),
    audit_retention_ms: int = -1,
    timeout: float = 30.0,
) -> list[str]:
    """Create the pipeline topics (and ``names``/``compacted`` extras) unless they exist.

    Idempotent: topics that exist are left as they are (a differing partition count
    is logged, never changed). Returns the physical names this call created.
    """
    wanted = topic_configs(settings, names or (), compacted=compacted,
                           audit_retention_ms=audit_retention_ms)
    conf: dict[str, str | int | float | bool] = {**settings.kafka_common(bootstrap)}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout
    existing = set(_metadata(admin, bootstrap, deadline).topics)
    missing = [name for name in wanted if name not in existing]
    created = _create(admin, settings, {name: wanted[name] for name in missing}, timeout)
    led = _wait_until_led(admin, bootstrap, wanted, settings.partitions, deadline)
    _wait_until_served(admin, bootstrap, led, deadline)
    return created


def _create(admin: AdminClient, settings: Settings, configs: Mapping[str, dict[str, str]],
            timeout: float) -> list[str]:
    if not configs:
        return []
    new = [NewTopic(name, num_partitions=settings.partitions,
                    replication_factor=settings.replication, config=config)
           for name, config in configs.items()]
    created = []
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:  # another process won
                continue
            hint = ""
            if error.code() == KafkaError.INVALID_REPLICATION_FACTOR:
                hint = " Set DOCSTREAMS_REPLICATION to at most the number of brokers."
            raise DocstreamsError(f"Could not create topic {name}: {error.str()}.{hint}",
                                  reason="topic_creation", retryable=error.retriable()) from None
    _log.info("created %d topics: %s", len(created), ", ".join(sorted(created)))
    return sorted(created)


def _wait_until_led(admin: AdminClient, bootstrap: str, wanted: Iterable[str],
                    partitions: int, deadline: float) -> list[TopicPartition]:
    """Wait until every topic shows all its partitions with a leader in metadata; return
    those partitions."""
    pending = set(wanted)
    led: list[TopicPartition] = []
    while True:
        topics = _metadata(admin, bootstrap, deadline).topics
        for name in list(pending):
            meta = topics.get(name)
            if meta is None or meta.error is not None or not meta.partitions:
                continue
            if all(p.leader >= 0 and p.error is None for p in meta.partitions.values()):
                pending.discard(name)
                led += [TopicPartition(name, p) for p in meta.partitions]
                if len(meta.partitions) != partitions:
                    _log.warning("topic %s has %d partitions, settings ask for %d (left as is)",
                                 name, len(meta.partitions), partitions)
        if not pending:
            return led
        if time.monotonic() >= deadline:
            raise DocstreamsError(
                f"Topics not ready on {bootstrap} in time: {', '.join(sorted(pending))}",
                reason="broker_unavailable", retryable=True)
        time.sleep(0.2)


def _wait_until_served(admin: AdminClient, bootstrap: str, partitions: list[TopicPartition],
                       deadline: float) -> None:
    """Wait until each partition's leader answers for it (its log exists there).

    Metadata names a new partition's leader before that broker has created the
    partition's log. Seen once, with three workers and a publisher creating a fresh
    set of topics at once: the publisher's first transaction committed while a
    partition of docs.submitted held its records from sequence 2 on; the first two
    were missing, though their audit events were committed (the partition's log was
    created about 0.1 s after they were sent). The reading, not reproduced: the first
    batch met a partition without a log and was retried, a later one (in flight behind
    it) was accepted first, as a broker takes any first sequence from a producer it has
    no state for, and the retried batch was then answered as a duplicate. A ListOffsets
    answer means the log is there, so nothing is written before it."""
    pending = list(partitions)
    while pending:
        futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in pending},
                                     request_timeout=10)
        waiting = []
        for tp, future in futures.items():
            try:
                future.result()
            except KafkaException:
                waiting.append(tp)
        pending = waiting
        if not pending:
            return
        if time.monotonic() >= deadline:
            names_ = sorted({f"{tp.topic}[{tp.partition}]" for tp in pending})
            raise DocstreamsError(f"Partitions not served on {bootstrap} in time: "
                                  f"{', '.join(names_[:10])}", reason="broker_unavailable",
                                  retryable=True)
        time.sleep(0.2)


def check_reachable(settings: Settings, bootstrap: str, timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds, with the usual reason, if the cluster does not
    answer (an admin command should not sit out the 30 s of its Kafka calls first)."""
    _metadata(AdminClient(settings.kafka_common(bootstrap)), bootstrap,
              time.monotonic() + timeout)


def _metadata(admin: AdminClient, bootstrap: str, deadline: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
    except KafkaException as exc:
        raise DocstreamsError(
            f"Kafka at {bootstrap} did not answer a metadata request: {exc.args[0].str()}. "
            "Is the broker running (`docstreams broker status`)?",
            reason="broker_unavailable", retryable=True) from None
