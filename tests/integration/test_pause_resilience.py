"""A pause holds through what happens to a real deployment while it is paused: a worker
killed with SIGKILL and restarted, a second worker joining (a rebalance) and leaving,
and the broker itself restarting. Each test pauses a 200-document job mid-way, checks
for at least ten seconds after the disturbance that the paused scope commits nothing,
resumes, and checks that nothing was lost, doubled or redone.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest

from streams import broker, names
from streams.control import PAUSED, RESUMED
from streams.settings import Settings
from tests.integration.pause_support import (
    Audit,
    acked_offsets,
    assert_exactly_once,
    assert_nothing_moves,
    assert_parse_order_kept,
    command,
    committed,
    kill9,
    log_tail,
    paced,
    publish_copies,
    read_located,
    running_worker,
    spawn_worker,
    stop_worker,
    terminal_counts,
    wait_members,
    waiting,
)

DOCS = 200
HOLD_S = 10.0


def acks_of(settings: Settings, bootstrap: str, command_id: str) -> Counter[tuple[str, str]]:
    """How many times each (stage, worker) acknowledged a command."""
    return Counter((r["stage"], r["worker"]) for _, _, _, _, r in
                   read_located(settings, bootstrap, names.CONTROL_ACKS)
                   if r["command_id"] == command_id)


def wait_acks(settings: Settings, bootstrap: str, command_id: str, times: int,
              worker: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = acks_of(settings, bootstrap, command_id)
        if all(got[(s, worker)] >= times for s in names.STAGES):
            return
        assert time.monotonic() < deadline, f"acks of {worker}: {got}"
        time.sleep(0.5)


def parked_subjects(audit: Audit, job: str) -> Counter[tuple[str, str]]:
    """How many times each (document, stage) was parked."""
    return Counter((e["subject"], e["stage"]) for e in audit.transitions(job, "parked"))


def settle_parking(settings: Settings, bootstrap: str, audit: Audit, job: str,
                   timeout: float = 60.0) -> None:
    """Wait until no stage has input left to consume and the parked events have all
    been read, so that nothing can be parked later."""
    deadline = time.monotonic() + timeout
    while True:
        left = waiting(settings, bootstrap, names.STAGES)
        if not any(left.values()):
            break
        assert time.monotonic() < deadline, f"input left while parking: {left}"
        time.sleep(0.5)
    audit.catch_up()


def test_job_pause_holds_through_sigkill_and_restart_of_the_worker(settings, bootstrap):
    """Parked records live in local state with a changelog: a worker killed with
    SIGKILL while holding them comes back, acknowledges the standing pause, holds them,
    and after resume hands every one back exactly once and in order."""
    s, job = paced(settings), "killed"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    proc = spawn_worker(s, bootstrap, "w1")
    try:
        audit.wait(job, lambda x: x["stages"]["sink"]["done"] >= 30, what="30 through")
        entry, _ = command(s, bootstrap, f"job:{job}", PAUSED)
        # The job's records keep arriving at every stage after the pause: the parse stage
        # parks its input, and extract, validate and route park what was already on its
        # way to them. Parking has settled when every stage has consumed its input.
        settle_parking(s, bootstrap, audit, job)
        parked_before = Counter(e["stage"] for e in audit.transitions(job, "parked"))

        kill9(proc)
        time.sleep(1.0)
        proc = spawn_worker(s, bootstrap, "w1")
        wait_acks(s, bootstrap, entry["command_id"], 2, "w1")  # came back paused

        held = assert_nothing_moves(s, bootstrap, audit, job, names.STAGES, HOLD_S,
                                    offsets=False)
        twice = [k for k, n in parked_subjects(audit, job).items() if n > 1]
        assert not twice, f"parked again after the restart: {twice[:5]}"
        parked_after = Counter(e["stage"] for e in audit.transitions(job, "parked"))
        assert parked_after == parked_before, "parked per stage, after the restart vs before"
        snap = audit.snapshot(job)
        assert not snap["complete"] and snap["stages"]["sink"]["done"] < DOCS - 20
        assert held["executions"] == {st: snap["stages"][st]["executions"]
                                      for st in names.STAGES if snap["stages"][st]["executions"]}

        command(s, bootstrap, f"job:{job}", RESUMED)
        audit.wait_complete(job, DOCS)
        assert_exactly_once(s, bootstrap, audit, job, docs)
        assert_parse_order_kept(s, bootstrap, audit, job)
    except BaseException:
        print(log_tail(s, "w1"))
        raise
    finally:
        stop_worker(proc)
        audit.close()


def runner_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Stage runners that failed and reconnected (the runtime must never crash-loop)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "docstreams.runtime" and r.levelno >= logging.ERROR]


def test_pause_holds_while_a_second_worker_joins(settings, bootstrap, caplog):
    """A worker that joins a paused pipeline comes up paused: the rebalance moves half
    the partitions of every stage to it, and neither worker commits anything. After
    resume both work, and every partition where records were waiting moves on to its
    end (none left paused by the move, none without a position)."""
    caplog.set_level(logging.ERROR, logger="docstreams.runtime")
    s, job = paced(settings), "joined"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    try:
        with running_worker(s, bootstrap, "w1"):
            audit.wait(job, lambda x: x["stages"]["sink"]["done"] >= 30, what="30 through")
            entry, first = command(s, bootstrap, "all", PAUSED)
            before = {st: acked_offsets(first, st) for st in names.STAGES}

            with running_worker(s, bootstrap, "w2"):
                wait_members(s, bootstrap, {"w1", "w2"})
                wait_acks(s, bootstrap, entry["command_id"], 1, "w2")  # came up paused
                held = assert_nothing_moves(s, bootstrap, audit, job, names.STAGES, HOLD_S)
                assert held["committed"] == before  # the rebalance committed nothing
                assert audit.snapshot(job)["stages"]["sink"]["done"] < DOCS - 20
                behind = waiting(s, bootstrap, names.STAGES)
                assert sum(sum(c.values()) for c in behind.values()) > 20

                command(s, bootstrap, "all", RESUMED)
                audit.wait_complete(job, DOCS)
                left = waiting(s, bootstrap, names.STAGES)
                after = committed(s, bootstrap, names.STAGES)
        stuck = [(st, tp) for st, counts in behind.items() for tp in counts
                 if after[st][tp] <= held["committed"][st][tp]]
        assert not stuck, f"partitions that made no progress after resume: {stuck}"
        assert not any(left.values()), f"records left behind: {left}"
        workers = Counter(r["worker"] for _, r in audit.executions if r["job_id"] == job)
        assert workers["w2"] > 0, "the newcomer never worked"
        assert not runner_failures(caplog), runner_failures(caplog)
        assert_exactly_once(s, bootstrap, audit, job, docs)
    finally:
        audit.close()


def test_job_pause_holds_while_a_worker_joins_and_takes_parked_work(settings, bootstrap,
                                                                    caplog):
    """Records parked at a stage that reads two topics (route: validated and review
    decisions) sit in the state of the partitions they came from. A worker that joins
    during the job pause takes some of those partitions with their parked records; while
    another job flows through both workers the paused job does not move; after resume
    every parked record is handed back exactly once, by whichever worker owns it."""
    caplog.set_level(logging.ERROR, logger="docstreams.runtime")
    s, job, other = paced(settings), "parked-moves", "flows"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    try:
        with running_worker(s, bootstrap, "w1"):
            # Hold route while the job piles up in front of it, then pause the job and
            # let route park everything that waits: most of the job is parked at route.
            audit.wait(job, lambda x: x["stages"]["validate"]["done"] >= 20, what="20 valid")
            command(s, bootstrap, "stage:route", PAUSED)
            audit.wait(job, lambda x: x["stages"]["validate"]["done"] == DOCS,
                       timeout=90, what="all validated")
            entry, _ = command(s, bootstrap, f"job:{job}", PAUSED)
            command(s, bootstrap, "stage:route", RESUMED)

            def at_route(snap: dict[str, object]) -> int:
                return sum(1 for e in audit.transitions(job, "parked") if e["stage"] == "route")

            snap = audit.wait(job, lambda x: at_route(x) + x["stages"]["route"]["done"] == DOCS,
                              timeout=60, what="parked at route")
            assert at_route(snap) > DOCS // 2

            with running_worker(s, bootstrap, "w2"):
                wait_members(s, bootstrap, {"w1", "w2"})
                wait_acks(s, bootstrap, entry["command_id"], 1, "w2")
                others = publish_copies(s, bootstrap, other, 60, first=DOCS)
                held = assert_nothing_moves(s, bootstrap, audit, job, names.STAGES, HOLD_S,
                                            offsets=False)
                audit.wait_complete(other, len(others), timeout=120)
                assert audit.moved(job, names.STAGES) == (held["executions"], held["done"])

                command(s, bootstrap, f"job:{job}", RESUMED)
                audit.wait_complete(job, DOCS, timeout=120)
                time.sleep(2.0)  # a second hand-back would show up by now
        assert_exactly_once(s, bootstrap, audit, other, others)
        assert_exactly_once(s, bootstrap, audit, job, docs)
        assert not runner_failures(caplog), runner_failures(caplog)
    finally:
        audit.close()


# -- the broker restarts while paused ------------------------------------------------------
def test_pause_holds_through_a_broker_restart(settings, own_broker):
    info = broker.start(own_broker, timeout=120)
    bootstrap = info.bootstrap
    s, job = paced(settings.replace(bootstrap=bootstrap)), "broker"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    try:
        with running_worker(s, bootstrap, "w1", stop_timeout=5.0):
            audit.wait(job, lambda x: x["stages"]["sink"]["done"] >= 30, what="30 through")
            _, report = command(s, bootstrap, "all", PAUSED)
            acked = {st: acked_offsets(report, st) for st in names.STAGES}

            assert broker.stop(own_broker)
            time.sleep(2.0)
            again = broker.start(own_broker, timeout=120)
            assert again.launched and again.bootstrap == bootstrap
            wait_members(s, bootstrap, {"w1"}, timeout=90)

            held = assert_nothing_moves(s, bootstrap, audit, job, names.STAGES, HOLD_S)
            assert held["committed"] == acked
            assert audit.snapshot(job)["stages"]["sink"]["done"] < DOCS - 20

            command(s, bootstrap, "all", RESUMED)
            # Unpaused, the rest of the job takes seconds; a runner whose first
            # transaction after the restart hangs never finishes it.
            audit.wait_complete(job, DOCS, timeout=90)
        assert_exactly_once(s, bootstrap, audit, job, docs)
    finally:
        audit.close()


# -- the broker goes away with transactions in flight ----------------------------------------
def test_broker_restart_mid_flight_recovers_promptly_and_exactly_once(settings, own_broker):
    """Not paused this time: the broker stops while every stage has a transaction open or
    committing. librdkafka's transactional calls then hang past their own timeouts
    (confluentinc/librdkafka#5511); the runner gives up on a call once its producer has
    reported the broker lost, rather than waiting out the 45 s watchdog, and starts its
    next transaction on a new producer. The job then finishes exactly once."""
    info = broker.start(own_broker, timeout=120)
    bootstrap = info.bootstrap
    s, job = paced(settings.replace(bootstrap=bootstrap)), "midflight"
    docs = publish_copies(s, bootstrap, job, DOCS)
    audit = Audit(s, bootstrap)
    try:
        with running_worker(s, bootstrap, "w1", stop_timeout=5.0):
            audit.wait(job, lambda x: x["stages"]["sink"]["done"] >= 30, what="30 through")
            assert broker.stop(own_broker)
            time.sleep(5.0)
            assert broker.start(own_broker, timeout=120).bootstrap == bootstrap
            restarted = time.monotonic()
            # Unpaused, the rest of the job takes well under a minute; each runner whose
            # call hung until the watchdog would add 45 s, one stage after another.
            audit.wait_complete(job, DOCS, timeout=120)
            print(f"job complete {time.monotonic() - restarted:.1f} s after the restart")
        audit.catch_up()
        snap = audit.snapshot(job)
        assert snap["complete"] and sum(snap["outcomes"].values()) == DOCS, snap
        for stage, st in snap["stages"].items():
            # The transactions open when the broker went away were aborted: their work
            # is redone and counted (a batch, or two if the first retry also met the
            # outage), while every document is finished once.
            assert st["done"] == st["expected"], (stage, st)
            assert st["done"] <= st["executions"] <= st["done"] + 2 * s.batch_max_docs, \
                (stage, st)
        terminal = terminal_counts(s, bootstrap)
        assert {terminal[d] for d in docs} == {1}, Counter(terminal[d] for d in docs)
    finally:
        audit.close()
