"""The PostgreSQL decisions sink against a real PostgreSQL server (tools/postgres.sh):
idempotent upserts, concurrent writers, a broken connection, and a worker run on the
real broker whose sink is then replayed without making a second row."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

import streams.worker
from streams import names
from streams.publish import Publisher
from streams.settings import Settings
from streams.sink import DecisionsSink
from streams.sink_postgres import PostgresDecisionsSink, open_sink
from streams.worker import Worker, ensure_pipeline_topics
from tests.corpus import corpus_file
from tests.integration.conftest_postgres import pg_dsn, pg_server  # noqa: F401 - fixtures
from tests.integration.pipeline import read_topic, wait_for_job

TERMINAL = (names.ROUTED, names.REVIEW_TASKS, names.DEADLETTER)


def _result(doc_id="d1", outcome="decided", version="v1", job="job/1"):
    return {"doc_id": doc_id, "job_id": job, "source": "a.pdf", "sha256": "s",
            "pipeline_version": version, "outcome": outcome, "doc_type": "invoice",
            "reasons": ["low confidence: total"], "fields": {"x": {"value": 1}, "a": None}}


def test_same_key_twice_is_one_row_and_rows_match_sqlite(pg_dsn, tmp_path):  # noqa: F811
    pg = PostgresDecisionsSink(pg_dsn)
    lite = DecisionsSink(tmp_path / "d.sqlite")
    for sink in (pg, lite):
        sink.upsert(_result(), 1)
        sink.upsert(_result(), 2)
        sink.upsert(_result(outcome="review"), 3)
        sink.upsert(_result(version="v2"), 4)
        sink.upsert(_result(doc_id="d2", job="other"), 5)
    key = lambda r: (r["doc_id"], r["pipeline_version"])  # noqa: E731
    assert sorted(pg.rows(), key=key) == sorted(lite.rows(), key=key)
    rows = {key(r): r for r in pg.rows("job/1")}
    assert len(rows) == 2
    assert rows[("d1", "v1")]["outcome"] == "review"
    assert (rows[("d1", "v1")]["first_written_at_ms"], rows[("d1", "v1")]["last_written_at_ms"]) \
        == (1, 3)
    with psycopg.connect(pg_dsn) as conn:  # stored as JSONB, queryable as such
        assert conn.execute("SELECT fields->'x'->>'value' FROM decisions WHERE doc_id = 'd2'"
                            ).fetchone() == ("1",)
    pg.close()
    lite.close()


def test_concurrent_upserts_make_one_row_per_key(pg_dsn):  # noqa: F811
    keys = [f"d{i}" for i in range(40)]
    shared = PostgresDecisionsSink(pg_dsn)

    def writer(n: int) -> int:
        # Half the writers open their own sink (workers starting at once: concurrent DDL
        # too), half share one connection between threads (the threads of one worker).
        sink = PostgresDecisionsSink(pg_dsn) if n % 2 else shared
        order = keys if n % 3 else list(reversed(keys))
        for i, doc in enumerate(order):
            sink.upsert(_result(doc_id=doc, outcome=("decided", "review")[(n + i) % 2]),
                        1000 * n + i)
        if sink is not shared:
            sink.close()
        return len(order)

    with ThreadPoolExecutor(12) as pool:
        assert sum(pool.map(writer, range(12))) == 12 * len(keys)
    rows = shared.rows()
    assert Counter(r["doc_id"] for r in rows) == Counter(keys)
    assert {r["outcome"] for r in rows} <= {"decided", "review"}
    shared.close()


def test_a_broken_connection_is_reopened(pg_dsn):  # noqa: F811
    sink = PostgresDecisionsSink(pg_dsn)
    sink.upsert(_result(), 1)
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'docstreams-sink'")
    sink.upsert(_result(outcome="review"), 2)
    assert [r["outcome"] for r in sink.rows()] == ["review"]
    sink.close()


def test_open_sink_connects_to_postgresql(pg_dsn, tmp_path):  # noqa: F811
    sink = open_sink(Settings(home=tmp_path, bootstrap=None, sink_dsn=pg_dsn))
    assert isinstance(sink, PostgresDecisionsSink)
    sink.close()


# -- a worker with the PostgreSQL sink, then a replay of the sink ------------------------


def _rewind_group(settings, bootstrap, stage: str, timeout: float = 60.0) -> None:
    """Set the stage's consumer group back to the start of its input topics (a replay).
    The group must be empty: a stopped static member stays until its session expires."""
    admin = AdminClient(settings.kafka_common(bootstrap))
    group = names.group_id(settings.topic_prefix, stage)
    topics = [names.topic(settings.topic_prefix, t) for t in names.STAGE_INPUTS[stage]]
    meta = admin.list_topics(timeout=15).topics
    tps = [TopicPartition(t, p, 0) for t in topics for p in meta[t].partitions]
    deadline = time.monotonic() + timeout
    while True:
        try:
            futures = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
            done = futures[group].result(30)
            errors = [tp.error for tp in done.topic_partitions if tp.error is not None]
            if not errors:
                return
        except KafkaException as exc:
            errors = [exc]
        if time.monotonic() > deadline:
            raise AssertionError(f"could not rewind {group}: {errors[0]}")
        time.sleep(1)


def _sink_recorded(settings, bootstrap, job: str) -> list[dict]:
    return [r for _, _, r in read_topic(settings, bootstrap, names.EVENTS)
            if r["job_id"] == job and r["stage"] == "sink" and r["transition"] == "recorded"]


def _use_open_sink(monkeypatch, settings) -> None:
    """Until streams.worker builds its sink with open_sink, have it do so here."""
    if not hasattr(streams.worker, "open_sink"):
        monkeypatch.setattr(streams.worker, "DecisionsSink", lambda _path: open_sink(settings))


def test_worker_writes_to_postgresql_and_a_replay_makes_no_second_row(
        pg_dsn, settings, bootstrap, monkeypatch):  # noqa: F811
    settings = settings.replace(sink_dsn=pg_dsn)
    _use_open_sink(monkeypatch, settings)
    job, files = "pg", ["real/invoice_aws.pdf", "real/irs_fw9_blank_form.pdf",
                        "bad/enc_pdfminer_rc4-40_pw-foo.pdf"]  # the last: no password
    ensure_pipeline_topics(settings, bootstrap)
    with Publisher(settings, bootstrap) as pub:
        published = [pub.publish_bytes(corpus_file(f).read_bytes(), source=f, job_id=job)
                     for f in files]
    worker = Worker(settings, bootstrap, "pg1")
    worker.start()
    try:
        wait_for_job(settings, bootstrap, job, len(files))
    finally:
        worker.stop()
    sink = PostgresDecisionsSink(pg_dsn)
    before = {r["doc_id"]: r for r in sink.rows(job)}
    assert set(before) == {p.doc_id for p in published}
    assert Counter(r["outcome"] for r in before.values())["dead_letter"] == 1
    assert not settings.sink_path.exists()  # nothing went to SQLite

    # Replay: the sink consumes every terminal record again and upserts every row again.
    _rewind_group(settings, bootstrap, "sink")
    worker = Worker(settings, bootstrap, "pg1", stages=["sink"])
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while len(_sink_recorded(settings, bootstrap, job)) < 2 * len(files):
            assert time.monotonic() < deadline, "the replay did not re-record every document"
            time.sleep(1)
    finally:
        worker.stop()
    after = {r["doc_id"]: r for r in sink.rows(job)}
    assert len(sink.rows(job)) == len(files)
    for doc_id, row in after.items():
        assert row["outcome"] == before[doc_id]["outcome"]
        assert row["first_written_at_ms"] == before[doc_id]["first_written_at_ms"]
        assert row["last_written_at_ms"] > before[doc_id]["last_written_at_ms"]  # re-written
    terminal = Counter(k for t in TERMINAL for k, _, _ in read_topic(settings, bootstrap, t))
    assert set(terminal.values()) == {1}  # the replay produced nothing new upstream
    sink.close()

