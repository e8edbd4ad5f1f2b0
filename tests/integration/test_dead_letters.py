"""`docstreams dlq list|show|retry` on the real broker: an encrypted document published
without its password dead-letters; a retry without the fix dead-letters again (generation
1); a retry with the password resolves it (generation 2), once, however often it is asked."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

from click.testing import CliRunner

from streams import dlq as logic
from streams import names
from streams.cli_dlq import dlq
from streams.publish import Publisher, Resubmission, password_ref_for
from streams.sink import DecisionsSink
from streams.status import job_status
from streams.worker import Worker, ensure_pipeline_topics
from tests.corpus import corpus_file
from tests.integration.pipeline import read_topic, wait_for_job

ENCRYPTED = "bad/enc_pdfminer_rc4-40_pw-foo.pdf"  # password "foo"
TRUNCATED = "bad/trunc_invoice_aws_first_1kb.pdf"  # zero_pages
REAL = "real/invoice_aws.pdf"
TERMINAL = (names.ROUTED, names.REVIEW_TASKS, names.DEADLETTER)


def _wait(settings, bootstrap, doc_id: str, done: Callable[[logic.DeadDocument], bool],
          timeout: float = 120) -> logic.DeadDocument:
    deadline = time.monotonic() + timeout
    while True:
        doc = logic.load(settings, bootstrap, doc_ids=[doc_id]).get(doc_id)
        if doc is not None and done(doc):
            return doc
        assert time.monotonic() < deadline, f"{doc_id} never got there: {doc}"
        time.sleep(0.5)


def test_dlq_list_show_and_an_idempotent_retry(settings, bootstrap, tmp_path):
    job = "dlq"
    ensure_pipeline_topics(settings, bootstrap)
    with Publisher(settings, bootstrap) as pub:
        ids = {rel: pub.publish_bytes(corpus_file(rel).read_bytes(), source=rel,
                                      job_id=job).doc_id for rel in (ENCRYPTED, TRUNCATED, REAL)}
    enc = ids[ENCRYPTED]
    env = {"DOCSTREAMS_BOOTSTRAP": bootstrap, "DOCSTREAMS_HOME": str(settings.home),
           "DOCSTREAMS_TOPIC_PREFIX": settings.topic_prefix}

    def cli(*args: str, code: int = 0) -> str:
        result = CliRunner().invoke(dlq, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    def cli_json(*args: str) -> dict:
        return json.loads(cli(*args, "--json"))

    worker = Worker(settings, bootstrap, "dlq1")
    worker.start()
    try:
        wait_for_job(settings, bootstrap, job, 3)
        _wait(settings, bootstrap, enc, lambda d: d.state == logic.DEAD)
        listed = cli_json("list", "--job", job)
        assert listed["count"] == 2
        assert {d["doc_id"]: d["reason"] for d in listed["documents"]} == {
            enc: "encrypted", ids[TRUNCATED]: "zero_pages"}
        only = cli_json("list", "--job", job, "--reason", "encrypted", "--stage", "parse")
        assert [(d["doc_id"], d["state"], d["generation"]) for d in only["documents"]] == [
            (enc, "dead", 0)]
        assert "encrypted" in cli("list", "--job", job)  # the table
        shown = cli_json("show", enc)
        assert shown["doc"]["source"] == ENCRYPTED and len(shown["history"]) == 1
        assert shown["history"][0]["attempts"][0]["reason"] == "encrypted"
        assert "attempt 1" in cli("show", enc)

        # A retry without the fix: generation 1 dead-letters again.
        first = cli_json("retry", enc)["documents"]
        assert [(r["action"], r["generation"]) for r in first] == [("resubmit", 1)]
        _wait(settings, bootstrap, enc, lambda d: d.state == logic.DEAD and d.generation == 1)

        # The fix: the password, for the job's encrypted dead letters; asked twice at once.
        password = tmp_path / "pw.txt"
        password.write_text("foo\n")
        second = cli_json("retry", "--job", job, "--reason", "encrypted",
                          "--password-file", str(password), "--note", "password from client")
        assert [(r["doc_id"], r["action"], r["generation"]) for r in second["documents"]] == [
            (enc, "resubmit", 2)]
        again = cli_json("retry", enc, "--password-file", str(password))["documents"]
        assert again[0]["action"] == "skip" and again[0]["generation"] == 2, again
        # A retry racing the first one publishes the same generation: parse ignores it.
        doc_ref = shown["doc"]
        with Publisher(settings, bootstrap) as pub:
            pub.resubmit_many([Resubmission(doc_ref, 2, password_ref_for(job, enc, 2))])
        resolved = _wait(settings, bootstrap, enc, lambda d: d.state == logic.RESOLVED)
        deadline = time.monotonic() + 60
        while not [e for _, _, e in read_topic(settings, bootstrap, names.EVENTS)
                   if e["subject"] == enc and e["transition"] == "duplicate_ignored"]:
            assert time.monotonic() < deadline, "the repeated generation 2 was not ignored"
            time.sleep(0.5)
    finally:
        worker.stop()

    assert resolved.generation == 2 and resolved.outcome in ("decided", "review")
    # Parse ran once per generation: 0 (no password), 1 (still none), 2 (the password).
    executions = Counter(r["stage"] for _, _, r in read_topic(settings, bootstrap,
                                                                names.EXECUTIONS)
                         if r["doc_id"] == enc)
    assert executions["parse"] == 3 and executions["extract"] == 1, executions
    terminal = Counter(schema for t in TERMINAL
                       for key, schema, _ in read_topic(settings, bootstrap, t) if key == enc)
    assert terminal["DeadLetter"] == 2 and terminal["DeadLetter"] + 1 == sum(terminal.values())

    # The new outcome replaced the dead letter in the sink and the output, once per doc.
    sink = DecisionsSink(settings.sink_path)
    rows = {r["doc_id"]: r for r in sink.rows(job)}
    sink.close()
    assert len(rows) == 3 and rows[enc]["outcome"] == resolved.outcome
    output = json.loads((settings.out_dir / job / f"{enc}.json").read_text())
    assert output["outcome"] == resolved.outcome and output["pages"] >= 1
    snap = job_status(settings, bootstrap, [job])[0]
    assert snap["documents"] == 3 and snap["complete"]
    assert sum(snap["outcomes"].values()) == 3 and snap["outcomes"]["dead_letter"] == 1

    # The resolved document leaves the list (unless --all); its history stays.
    assert [d["doc_id"] for d in cli_json("list", "--job", job)["documents"]] == [ids[TRUNCATED]]
    everything = {d["doc_id"]: d for d in cli_json("list", "--job", job, "--all")["documents"]}
    assert everything[enc]["state"] == "resolved" and everything[enc]["dead_letters"] == 2
    shown = cli_json("show", enc)
    assert [h["generation"] for h in shown["history"]] == [0, 1]
    assert [r["generation"] for r in shown["resubmissions"]] == [1, 2]
    assert shown["resubmissions"][1]["detail"].endswith("password from client")
    third = cli_json("retry", enc)["documents"][0]
    assert third["action"] == "skip" and "already resolved" in third["why"]
    assert "no dead letter for dnope" in cli("retry", "dnope", code=1)
    assert "no dead letter" in cli("show", "dnope", code=1)
