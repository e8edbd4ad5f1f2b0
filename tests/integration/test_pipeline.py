"""The main job end to end on the real broker, with real corpus documents."""

from __future__ import annotations

import json
from collections import Counter

from streams import admin, names
from streams.publish import Publisher
from streams.sink import DecisionsSink
from streams.worker import ensure_pipeline_topics
from tests.corpus import corpus_file, password_from_name
from tests.integration.pipeline import read_topic, running_worker, wait_for_job

REAL = ["real/invoice_aws.pdf", "real/invoice_netpresse.pdf", "real/cuad_consulting_kiromic.pdf",
        "real/irs_fw9_blank_form.pdf"]
BAD = {
    "bad/empty_pdfplumber_zero_bytes.pdf": "empty_file",
    "bad/trunc_invoice_aws_first_1kb.pdf": "zero_pages",
    "bad/broken_pdfjs_poppler_85140_unopenable.pdf": "unopenable",
    "bad/enc_pdfminer_rc4-40_pw-foo.pdf": "encrypted",  # published without its password
}
WITH_PASSWORD = "bad/enc_pdfplumber_password_example_pw-test.pdf"
TERMINAL = (names.ROUTED, names.REVIEW_TASKS, names.DEADLETTER)


def _publish_all(settings, bootstrap, job):
    ensure_pipeline_topics(settings, bootstrap)
    with Publisher(settings, bootstrap) as pub:
        for rel in [*REAL, *BAD]:
            pub.publish_bytes(corpus_file(rel).read_bytes(), source=rel, job_id=job)
        path = corpus_file(WITH_PASSWORD)
        pub.publish_bytes(path.read_bytes(), source=WITH_PASSWORD, job_id=job,
                          password=password_from_name(path.name))
    return len(REAL) + len(BAD) + 1


def _terminal_records(settings, bootstrap):
    return [r for t in TERMINAL for r in read_topic(settings, bootstrap, t)]


def test_job_runs_end_to_end_exactly_once(settings, bootstrap):
    job = "e2e"
    n = _publish_all(settings, bootstrap, job)
    with running_worker(settings, bootstrap):
        snap = wait_for_job(settings, bootstrap, job, n)

    assert snap["documents"] == n and snap["complete"]
    assert sum(snap["outcomes"].values()) == n
    for stage, st in snap["stages"].items():
        assert st["executions"] == st["done"], (stage, st)
    assert snap["stages"]["parse"]["done"] == n and snap["stages"]["sink"]["done"] == n
    # Everything consumed: nothing queued, though each partition's end offset is one past
    # its committed offset (the last transaction's commit marker).
    assert admin.stage_lag(settings, bootstrap, names.STAGES) == dict.fromkeys(names.STAGES, 0)

    terminal = _terminal_records(settings, bootstrap)
    per_doc = Counter(key for key, _, _ in terminal)
    assert len(per_doc) == n and set(per_doc.values()) == {1}  # nothing lost, nothing doubled

    outputs = {}
    for path in (settings.out_dir / job).glob("d*.json"):
        out = json.loads(path.read_text())
        outputs[out["source"]] = out
        assert {"doc_id", "job_id", "source", "sha256", "pages", "doc_type", "fields", "outcome",
                "reasons", "pipeline_version"} <= out.keys()
    assert len(outputs) == n
    for rel, reason in BAD.items():
        assert outputs[rel]["outcome"] == "dead_letter", outputs[rel]
        assert outputs[rel]["reasons"][0].startswith(reason), outputs[rel]["reasons"]
    assert outputs[WITH_PASSWORD]["outcome"] != "dead_letter"
    assert outputs[WITH_PASSWORD]["pages"] == 4
    invoice = outputs["real/invoice_aws.pdf"]
    assert invoice["doc_type"] == "invoice"
    for field in invoice["fields"].values():
        assert 0 <= field["confidence"] <= 1
        for c in field["citations"]:
            assert c["page"] >= 1 and len(c["bbox"]) == 4
    contract = outputs["real/cuad_consulting_kiromic.pdf"]
    assert contract["doc_type"] == "contract"

    sink = DecisionsSink(settings.sink_path)
    assert len(sink.rows(job)) == n
    sink.close()


def test_republishing_a_finished_job_redoes_nothing(settings, bootstrap):
    job = "again"
    n = _publish_all(settings, bootstrap, job)
    with running_worker(settings, bootstrap):
        first = wait_for_job(settings, bootstrap, job, n)
        _publish_all(settings, bootstrap, job)
        events = []
        import time
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = [r for _, s, r in read_topic(settings, bootstrap, names.EVENTS)
                      if r["transition"] == "duplicate_ignored"]
            if len(events) == n:
                break
            time.sleep(1)
        assert len(events) == n
        second = wait_for_job(settings, bootstrap, job, n)
    assert second["stages"] == first["stages"]  # no execution anywhere
    per_doc = Counter(key for key, _, _ in _terminal_records(settings, bootstrap))
    assert set(per_doc.values()) == {1}


def test_worker_restart_mid_job_loses_and_doubles_nothing(settings, bootstrap):
    job = "restart"
    n = _publish_all(settings, bootstrap, job)
    with running_worker(settings, bootstrap, "a"):
        import time
        time.sleep(3)  # some of the job is done, some is not
    with running_worker(settings, bootstrap, "b"):
        snap = wait_for_job(settings, bootstrap, job, n)
    for stage, st in snap["stages"].items():
        assert st["executions"] == st["done"], (stage, st)
    per_doc = Counter(key for key, _, _ in _terminal_records(settings, bootstrap))
    assert len(per_doc) == n and set(per_doc.values()) == {1}


def test_cached_parse_never_bypasses_the_password(settings, bootstrap):
    """The parse artifact is cached by digest; a decrypted artifact must not serve the
    same bytes submitted later without their password, or with a wrong one."""
    ensure_pipeline_topics(settings, bootstrap)
    path = corpus_file(WITH_PASSWORD)
    data = path.read_bytes()
    with running_worker(settings, bootstrap), Publisher(settings, bootstrap) as pub:
        pub.publish_bytes(data, source="right.pdf", job_id="pw",
                          password=password_from_name(path.name))
        wait_for_job(settings, bootstrap, "pw", 1)  # the artifact is cached now
        pub.publish_bytes(data, source="none.pdf", job_id="pw")
        pub.publish_bytes(data, source="wrong.pdf", job_id="pw", password="WRONG")
        wait_for_job(settings, bootstrap, "pw", 3)
    outs = {json.loads(p.read_text())["source"]: json.loads(p.read_text())
            for p in (settings.out_dir / "pw").glob("d*.json")}
    assert outs["right.pdf"]["outcome"] != "dead_letter"
    for name in ("none.pdf", "wrong.pdf"):
        assert outs[name]["outcome"] == "dead_letter", outs[name]
        assert outs[name]["reasons"][0].startswith("encrypted"), outs[name]["reasons"]
