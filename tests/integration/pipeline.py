"""Helpers for pipeline integration tests: run workers in-process, wait for a job,
read topics back with read_committed."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams import names, records
from streams.kafka import high_watermark, reader
from streams.settings import Settings
from streams.status import Follower
from streams.worker import Worker


@contextmanager
def running_worker(settings: Settings, bootstrap: str, worker_id: str = "t1"):
    worker = Worker(settings, bootstrap, worker_id)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def wait_for_job(settings: Settings, bootstrap: str, job: str, documents: int,
                 timeout: float = 180) -> dict[str, Any]:
    follower = Follower(settings, bootstrap)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            follower.poll(0.5)
            snap = follower.tracker.view(job).snapshot()
            if snap["documents"] >= documents and snap["complete"]:
                return snap
        raise AssertionError(f"job {job} not complete after {timeout}s: {snap}")
    finally:
        follower.close()


def read_topic(settings: Settings, bootstrap: str, logical: str,
               timeout: float = 15) -> list[tuple[str, str, dict[str, Any]]]:
    """Every committed record of a topic: (key, schema name, record)."""
    topic = names.topic(settings.topic_prefix, logical)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        ends = {tp.partition: high_watermark(consumer, tp) for tp in parts}
        consumer.assign(parts)
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if not msg.error():
                    schema, rec = records.decode(msg.value())
                    out.append((msg.key().decode(), schema, rec))
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                break
        return out
    finally:
        consumer.close()
