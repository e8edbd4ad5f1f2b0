"""Pause and resume at each scope, on the real broker, with a job of 200 real documents.

Each test pauses mid-way, while documents are in flight, and shows from what is
committed (read with read_committed, and the stage groups' committed offsets) that the
paused scope commits nothing for at least ten seconds, that everything outside it keeps
flowing, and that after resume the job completes with every stage's executions equal
to its finished documents and exactly one terminal record per document.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from streams import names
from streams.control import PAUSED, RESUMED
from streams.settings import Settings
from tests.integration.pause_support import (
    REPO,
    Audit,
    acked_offsets,
    assert_exactly_once,
    assert_nothing_moves,
    assert_parse_order_kept,
    command,
    committed,
    ends,
    paced,
    publish_copies,
    read_located,
    worker_env,
)
from tests.integration.pipeline import running_worker

DOCS = 200
HOLD_S = 10.0


def queued(settings: Settings, bootstrap: str, stages: list[str]) -> int:
    """Records waiting at the given stages: input ends minus committed offsets."""
    high, done = ends(settings, bootstrap, stages), committed(settings, bootstrap, stages)
    return sum(high[s][tp] - done[s][tp] for s in stages for tp in high[s])


def test_pause_all_holds_everything_and_resume_completes_the_job(settings, bootstrap):
    s, job = paced(settings), "scope-all"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    try:
        with running_worker(s, bootstrap, "w1"):
            audit.wait(job, lambda x: x["stages"]["sink"]["done"] >= 30, what="30 through")
            _, report = command(s, bootstrap, "all", PAUSED)
            assert set(report.acks) == {(st, "w1") for st in names.STAGES}

            held = assert_nothing_moves(s, bootstrap, audit, job, names.STAGES, HOLD_S)
            # What the workers acknowledged is exactly what stays committed: the batch
            # in flight had committed before the ack, and nothing was committed after.
            for stage in names.STAGES:
                assert held["committed"][stage] == acked_offsets(report, stage), stage
            at_pause = audit.snapshot(job)
            assert at_pause["stages"]["sink"]["done"] < DOCS - 20, "not paused mid-way"
            assert queued(s, bootstrap, list(names.STAGES)) > 0

            command(s, bootstrap, "all", RESUMED)
            audit.wait_complete(job, DOCS)
        assert_exactly_once(s, bootstrap, audit, job, docs)
    finally:
        audit.close()


def test_pause_one_stage_holds_it_while_the_others_keep_flowing(settings, bootstrap):
    s, job, stage = paced(settings), "scope-stage", "extract"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    try:
        with running_worker(s, bootstrap, "w1") as worker:
            audit.wait(job, lambda x: x["stages"][stage]["done"] >= 20, what="20 extracted")
            _, report = command(s, bootstrap, f"stage:{stage}", PAUSED)
            assert report.expected == {(stage, "w1")}  # --wait waits for that stage only

            held = assert_nothing_moves(s, bootstrap, audit, job, [stage], HOLD_S)
            assert held["committed"][stage] == acked_offsets(report, stage)
            # Upstream keeps working; downstream finishes what extract had emitted.
            snap = audit.wait(job, lambda x: x["stages"]["parse"]["done"] == DOCS
                              and x["stages"]["sink"]["done"] == x["stages"][stage]["done"],
                              timeout=60, what="parse done and downstream drained")
            assert snap["stages"][stage]["done"] < DOCS - 20, "not paused mid-way"
            assert snap["stages"][stage]["executions"] == held["executions"][stage]
            assert committed(s, bootstrap, [stage])[stage] == held["committed"][stage]
            # What extract has not done waits, whole, beyond its committed offsets.
            audit.catch_up()
            extracted = {e["subject"] for e in audit.events
                         if e["stage"] == stage and e["job_id"] == job}
            offsets = committed(s, bootstrap, [stage])[stage]
            waiting = {key for part, off, key, _, _ in read_located(s, bootstrap, names.PARSED)
                       if off >= offsets[(names.PARSED, part)]}
            assert waiting == set(docs) - extracted and len(waiting) > 20

            command(s, bootstrap, f"stage:{stage}", RESUMED)
            audit.wait_complete(job, DOCS)
            # Downstream stood idle through the pause; records that landed on it after
            # the resume are no fetch stall (the watch once took them for one).
            assert {r.stage.name: r.fetch_restarts for r in worker.runners
                    if r.fetch_restarts} == {}
        assert_exactly_once(s, bootstrap, audit, job, docs)
    finally:
        audit.close()


def cli(settings: Settings, bootstrap: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "streams", *args, "--json"],
                          env=worker_env(settings, bootstrap), cwd=REPO, capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


def test_pause_one_job_parks_it_while_another_job_on_its_partitions_completes(
        settings, bootstrap):
    s, job, other = paced(settings), "job-a", "job-b"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    try:
        with running_worker(s, bootstrap, "w1"):
            audit.wait(job, lambda x: x["stages"]["sink"]["done"] >= 30, what="30 through")
            out = cli(s, bootstrap, "pause", "--job", job, "--reason", "test", "--wait")
            assert out["acknowledged"] and out["command"]["scope"] == f"job:{job}"
            assert out["workers"] == sorted(f"{st}.w1" for st in names.STAGES)

            others = publish_copies(s, bootstrap, other, 60, first=DOCS)
            held = assert_nothing_moves(s, bootstrap, audit, job, names.STAGES, HOLD_S,
                                        offsets=False)
            audit.wait_complete(other, len(others), timeout=120)
            assert audit.moved(job, names.STAGES) == (held["executions"], held["done"])
            snap = audit.snapshot(job)
            assert not snap["complete"] and snap["stages"]["sink"]["done"] < DOCS - 20

            # Job B's documents shared partitions with job A's parked ones.
            located = {key: part for part, _, key, _, _ in
                       read_located(s, bootstrap, names.SUBMITTED)}
            parked = audit.transitions(job, "parked")
            assert parked, "no record of the paused job was parked"
            assert {located[d] for d in others} & {located[e["subject"]] for e in parked
                                                   if e["stage"] == "parse"}

            # Asked again once parking has settled, every worker reports what it holds.
            again = cli(s, bootstrap, "pause", "--job", job, "--wait")
            audit.catch_up()
            assert again["parked"] == {job: len(audit.transitions(job, "parked"))}
            status = cli(s, bootstrap, "status", "--job", job)
            assert [p["scope"] for p in status["paused"]] == [f"job:{job}"]
            # The second pause says who and why anew, but the pause (and the retention
            # clock of what it holds back) still dates from the first.
            began = out["command"]["at_ms"]
            assert again["command"]["at_ms"] > began
            assert again["command"]["paused_since_ms"] == began
            assert status["paused"][0]["paused_since_ms"] == began
            assert status["paused"][0]["command_id"] == again["command"]["command_id"]

            resumed = cli(s, bootstrap, "resume", "--job", job, "--wait")
            assert resumed["acknowledged"] and resumed["command"]["paused_since_ms"] is None
            audit.wait_complete(job, DOCS)
        assert_exactly_once(s, bootstrap, audit, job, docs)
        assert_exactly_once(s, bootstrap, audit, other, others)
        assert_parse_order_kept(s, bootstrap, audit, job)
    finally:
        audit.close()


def test_pause_wait_sees_every_ack_even_those_written_while_it_starts_reading(
        settings, bootstrap, monkeypatch):
    """`pause --wait` must not miss an acknowledgement that lands while it positions
    itself on the acks topic. A worker acknowledges within a poll (~0.2 s) of the
    command; on a busy machine, looking up the start offsets takes as long. Here each
    end-offset lookup takes 0.5 s (a slow round trip), and every ack must still count."""
    from streams import admin
    from streams.control import ControlClient

    real = admin.high_watermark

    def slow_round_trip(*args: Any, **kwargs: Any) -> int:
        import time
        time.sleep(0.5)
        return real(*args, **kwargs)

    with running_worker(settings, bootstrap, "w1"):
        wait_members_started(settings, bootstrap)
        entry = ControlClient(settings, bootstrap).set_state("all", PAUSED, by="pytest")
        monkeypatch.setattr(admin, "high_watermark", slow_round_trip)
        report = admin.wait_for_acks(settings, bootstrap, entry, timeout=10)
        monkeypatch.setattr(admin, "high_watermark", real)
        on_topic = [r for _, _, _, _, r in read_located(settings, bootstrap, names.CONTROL_ACKS)
                    if r["command_id"] == entry["command_id"]]
    assert len(on_topic) == len(names.STAGES)  # every worker did acknowledge ...
    assert report.complete, f"... but --wait missed {report.missing()}"


def wait_members_started(settings: Settings, bootstrap: str) -> None:
    from tests.integration.pause_support import wait_members
    wait_members(settings, bootstrap, {"w1"})
