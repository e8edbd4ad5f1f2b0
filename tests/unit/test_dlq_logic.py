"""Dead letters without a broker: the state folded from the audit trail, retry planning
(idempotent generations), password carry-over, parse's (doc_id, generation) check, the
DocumentSubmitted schema evolution, and the command line's usage errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest
from click.testing import CliRunner

from streams import dlq, records
from streams.cli_dlq import dlq as dlq_cli
from streams.inputs import InputRecord, retry_key
from streams.publish import RESUBMISSION_SEQ, password_ref_for
from streams.secrets import SecretStore
from streams.stages import ParseStage, seen_key
from streams.state import MemoryState


def ref(doc_id: str = "d1", job: str = "j", source: str = "bad/enc.pdf") -> dict:
    return {"doc_id": doc_id, "job_id": job, "source": source, "sha256": "a" * 64,
            "blob_ref": "blob://sha256/" + "a" * 64, "size_bytes": 10, "submitted_at_ms": 1}


def letter(doc_id: str = "d1", *, reason: str = "encrypted", stage: str = "parse",
           at: int = 100, job: str = "j") -> dict:
    return {"doc": ref(doc_id, job), "stage": stage, "reason": reason,
            "error_class": "ParseFailure", "message": "needs a password",
            "attempts": [{"attempt": 1, "at_ms": at, "reason": reason, "message": "m"}],
            "source_topic": "docs.submitted", "source_partition": 0, "source_offset": 0,
            "page_count": 0, "pipeline_version": "v", "dead_lettered_at_ms": at}


def event(transition: str, stage: str, doc_id: str = "d1", detail: str = "",
          seq: int = 101) -> dict:
    return {"event_id": "e", "subject": doc_id, "job_id": "j", "seq": seq, "stage": stage,
            "transition": transition, "detail": detail, "source": "bad/enc.pdf",
            "worker": "me@host", "at_ms": 5, "pipeline_version": "v"}


DEAD = [event("dead_lettered", "parse"), event("recorded", "sink", detail="dead_letter")]


def resubmitted(generation: int, doc_id: str = "d1") -> dict:
    return event("resubmitted", "submit", doc_id, f"retry generation {generation}",
                 seq=generation * RESUBMISSION_SEQ)


def test_a_recorded_dead_letter_is_dead_and_retried_as_generation_one():
    docs = dlq.fold([letter()], [event("submitted", "submit", seq=0), *DEAD])
    doc = docs["d1"]
    assert (doc.state, doc.generation, doc.outcome) == (dlq.DEAD, 0, "dead_letter")
    assert doc.letters[0]["generation"] == 0
    plan = dlq.plan_retry(docs, ["d1"])[0]
    assert (plan.action, plan.generation) == (dlq.RESUBMIT, 1)


def test_states_follow_the_audit_trail():
    assert dlq.fold([letter()], DEAD[:1])["d1"].state == dlq.RECORDING
    assert dlq.fold([letter()], [*DEAD, resubmitted(1)])["d1"].state == dlq.RETRYING
    resolved = dlq.fold([letter()], [*DEAD, resubmitted(1),
                                     event("recorded", "sink", detail="decided")])["d1"]
    assert (resolved.state, resolved.outcome, resolved.generation) == (dlq.RESOLVED, "decided", 1)
    # No audit trail left (retention): the dead letter stands.
    assert dlq.fold([letter()], [])["d1"].state == dlq.DEAD


def test_repeated_retries_and_sink_replays_do_not_move_the_state():
    trail = [*DEAD, resubmitted(1), resubmitted(1),  # two racing `dlq retry` runs
             event("recorded", "sink", detail="review"),
             event("recorded", "sink", detail="dead_letter")]  # a sink replay of the old one
    doc = dlq.fold([letter()], trail)["d1"]
    assert (doc.state, doc.generation, len(doc.resubmissions)) == (dlq.RESOLVED, 1, 1)


def test_each_dead_letter_gets_its_generation_and_the_latest_is_shown():
    letters = [letter(at=100), letter(reason="timeout", at=200)]
    trail = [*DEAD, resubmitted(1), *DEAD]
    doc = dlq.fold(letters, trail)["d1"]
    assert [x["generation"] for x in doc.letters] == [0, 1]
    summary = doc.summary()
    assert (summary["reason"], summary["dead_letters"], summary["retries"]) == ("timeout", 2, 1)
    assert dlq.plan_for(doc).generation == 2
    detail = doc.detail()
    assert [h["reason"] for h in detail["history"]] == ["encrypted", "timeout"]
    assert detail["history"][0]["attempts"][0]["attempt"] == 1
    assert detail["resubmissions"][0]["by"] == "me@host"
    json.dumps(detail)  # --json must serialise


def test_retry_is_a_no_op_unless_the_document_is_dead():
    docs = dlq.fold([letter("d1"), letter("d2"), letter("d3")],
                    [*DEAD, resubmitted(1),
                     event("dead_lettered", "parse", "d2"),
                     *[{**e, "subject": "d3"} for e in DEAD], resubmitted(1, "d3"),
                     event("recorded", "sink", "d3", "decided")])
    plans = {p.doc_id: p for p in dlq.plan_retry(docs, ["d1", "d2", "d3", "nope", "d1"])}
    assert [p.action for p in plans.values()] == [dlq.SKIP, dlq.SKIP, dlq.SKIP, dlq.NOT_FOUND]
    assert "already re-submitted as generation 1" in plans["d1"].why
    assert "sink has not recorded" in plans["d2"].why
    assert "already resolved by retry generation 1: decided" in plans["d3"].why


def test_retry_by_job_narrows_by_reason_and_stage_and_skips_the_resolved():
    letters = [letter("d1", at=300), letter("d2", reason="zero_pages", at=200),
               letter("d3", stage="route", reason="unusable", at=100), letter("d4", job="other")]
    events = [{**e, "subject": d} for d in ("d1", "d2", "d3", "d4") for e in DEAD]
    docs = dlq.fold(letters, events)
    assert [p.doc_id for p in dlq.plan_retry(docs, job="j")] == ["d3", "d2", "d1"]  # oldest first
    assert [p.doc_id for p in dlq.plan_retry(docs, job="j", reason="zero_pages")] == ["d2"]
    assert [p.doc_id for p in dlq.plan_retry(docs, job="j", stage="route")] == ["d3"]
    docs["d1"].state = dlq.RESOLVED
    assert [d.doc_id for d in dlq.select(docs, job="j")] == ["d2", "d3"]  # newest first
    assert "d1" in {d.doc_id for d in dlq.select(docs, include_resolved=True)}


def test_an_undecodable_record_cannot_be_retried():
    bad = letter("topic:0:5")
    bad["doc"] = {**bad["doc"], "job_id": "", "blob_ref": "", "sha256": ""}
    docs = dlq.fold([bad], [])
    plan = dlq.plan_retry(docs, ["topic:0:5"])[0]
    assert plan.action == dlq.SKIP and "could not be decoded" in plan.why


def test_password_refs_are_per_generation_and_carry_over(tmp_path: Path):
    secrets = SecretStore(tmp_path)
    doc = ref()
    assert dlq.password_ref(secrets, doc, 1, None) is None
    new = dlq.password_ref(secrets, doc, 1, "foo")
    assert new == password_ref_for("j", "d1", 1) and secrets.get(new) == "foo"
    assert dlq.password_ref(secrets, doc, 2, None) == new  # gen 2 without a new one: gen 1's
    secrets.put(password_ref_for("j", "d1"), "orig")
    assert dlq.password_ref(secrets, {**doc, "doc_id": "d1"}, 1, None) == "j/d1"


def _submitted(generation: int | None, *, retrying: bool = False) -> InputRecord:
    record = {"doc": ref(), "submitted_by": "me", "password_ref": None,
              "media_type": "application/pdf"}
    if generation is not None:
        record["resubmission"] = generation
    return InputRecord("docs.submitted", 0, 0, "d1", "DocumentSubmitted", record, b"",
                       state_key=retry_key(1, "d1") if retrying else None)


def test_parse_admits_each_doc_and_generation_once():
    stage = ParseStage(None, None, None)  # type: ignore[arg-type] - already_done needs none
    state = MemoryState()
    assert stage.already_done(_submitted(None), state) is None
    assert state.get("seen/d1") is not None  # generation 0 keeps the key it always had
    assert stage.already_done(_submitted(0), state) == "already submitted to this job"
    assert stage.already_done(_submitted(1), state) is None
    assert state.get(seen_key("d1", 1)) is not None
    assert "generation 1 already submitted" in stage.already_done(_submitted(1), state)
    assert stage.already_done(_submitted(2), state) is None
    assert stage.already_done(_submitted(2, retrying=True), state) is None  # its own retry


def test_document_submitted_written_before_retries_reads_as_generation_zero():
    v1 = records.history()["DocumentSubmitted"][0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, v1, {"doc": ref(), "submitted_by": "me",
                                         "password_ref": None, "media_type": "application/pdf"})
    data = records.MARKER + records._fingerprint(v1) + buf.getvalue()
    name, rec = records.decode(data)
    assert name == "DocumentSubmitted" and rec["resubmission"] == 0
    assert rec["doc"]["generation"] == 0 and len(records.history()["DocumentSubmitted"]) >= 2


@pytest.mark.parametrize("args, message", [
    (["retry"], "either DOC_IDS or --job"),
    (["retry", "d1", "--job", "j"], "either DOC_IDS or --job"),
    (["retry", "d1", "--reason", "encrypted"], "narrow --job"),
])
def test_retry_usage_errors(args, message):
    result = CliRunner().invoke(dlq_cli, args)
    assert result.exit_code == 2 and message in result.output


def test_help_texts():
    runner = CliRunner()
    for args in ([], ["list"], ["show"], ["retry"]):
        result = runner.invoke(dlq_cli, [*args, "--help"])
        assert result.exit_code == 0 and len(result.output) > 200, args
    assert "idempotent" in runner.invoke(dlq_cli, ["retry", "--help"]).output.lower()


def test_present_counts_what_a_filter_could_have_matched():
    docs = dlq.fold([letter("d1", reason="encrypted"), letter("d2", reason="parse_timeout"),
                     letter("d3", reason="encrypted", job="k")], [])
    there = dlq.present(docs)
    assert there["reason"] == {"encrypted": 2, "parse_timeout": 1}
    assert there["job"] == {"j": 2, "k": 1} and there["stage"] == {"parse": 3}
