"""Ctrl-C in ``docstreams run`` is a safe pause of its job; running it again resumes it.

``run`` is started as a user would start it from a terminal (a process group of its
own, its workers in theirs), interrupted with SIGINT to its group mid-job, then run
again. Asserted on the broker: the job's pause in the control topic and the audit log,
the exit code and message, and that the second run finishes every document with
executions equal to documents at every stage (the drained batch is not redone).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from streams import names
from streams.control import PAUSED, RESUMED, ControlClient, ControlView
from streams.worker import ensure_pipeline_topics as _ensure_topics
from tests.corpus import CORPUS
from tests.integration.pause_support import read_all
from tests.integration.pipeline import REPO, settings_env

JOB = "ctrlc"


def _run(settings, bootstrap) -> subprocess.Popen[str]:
    folders = [str(CORPUS / "real"), str(CORPUS / "bad")]
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "run", *folders, "--job", JOB,
         "--passwords", str(REPO / "samples" / "passwords.json"), "--json"],
        env={**settings_env(settings, bootstrap), "COLUMNS": "200"}, cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True)  # its own group, as a terminal's foreground job


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"docstreams run still running after {timeout}s:\n{err[-3000:]}"
                             ) from None
    return proc.returncode, out, err


def _executions(settings, bootstrap) -> Counter[str]:
    return Counter(r["stage"] for _, _, r in read_all(settings, bootstrap, names.EXECUTIONS))


def _started(settings, bootstrap) -> subprocess.Popen[str]:
    """A `docstreams run` of the corpus, once its parse is under way."""
    assert (CORPUS / "real").is_dir(), f"corpus not found at {CORPUS}"
    proc = _run(settings, bootstrap)
    deadline = time.monotonic() + 120
    while _executions(settings, bootstrap)["parse"] < 3:  # mid-job: parse under way
        assert proc.poll() is None, f"run ended early:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no parse started within 120 s"
        time.sleep(0.3)
    return proc


@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_pauses_the_job_and_running_it_again_finishes_it_without_rework(
        settings, bootstrap, interrupt):
    """Ctrl-C in the terminal (SIGINT to run's process group), or a scheduler's SIGTERM
    to run alone."""
    first = _started(settings, bootstrap)
    if interrupt == signal.SIGINT:
        os.killpg(first.pid, signal.SIGINT)
    else:
        first.send_signal(signal.SIGTERM)
    code, out, err = _finish(first, timeout=90)

    assert code == 130, f"exit {code}:\n{err[-3000:]}"
    assert out == "", "an interrupted run printed a summary"
    assert f"job {JOB} paused" in err and "docstreams run" in err, err[-3000:]
    view = ControlView(settings, bootstrap)
    try:
        desired = view.load_to_end()
    finally:
        view.close()
    assert [e["scope"] for e in desired.paused()] == [f"job:{JOB}"], desired.paused()
    entry = desired.entries[f"job:{JOB}"]
    assert entry is not None and entry["state"] == PAUSED, entry
    assert "Ctrl-C" in entry["reason"]
    executed = _executions(settings, bootstrap)
    documents = len([p for d in ("real", "bad") for p in (CORPUS / d).rglob("*") if p.is_file()])
    assert executed["sink"] < documents, "the job had finished before the interrupt"

    second = _run(settings, bootstrap)
    code, out, err = _finish(second, timeout=300)
    assert code == 0, f"exit {code}:\n{err[-3000:]}"
    assert f"resumed job {JOB}" in err
    summary = json.loads(out)
    assert summary["complete"] and summary["documents"] == documents
    assert sum(summary["outcomes"].values()) == documents
    for stage, st in summary["stages"].items():
        assert st["executions"] == st["done"], (stage, st)  # nothing redone
    print(f"executions at the interrupt {dict(executed)}, after the second run "
          f"{dict(_executions(settings, bootstrap))}, {documents} documents")

    control = [r for _, _, r in read_all(settings, bootstrap, names.EVENTS)
               if r["subject"] == f"control:job:{JOB}"]
    assert [r["transition"] for r in control] == [PAUSED, RESUMED]


def _workers_of(run_pid: int) -> list[int]:
    """Live (not zombie) worker processes started by the `run` with this pid."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"--stop-with-parent" in argv and str(run_pid).encode() in argv and state != "Z":
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_workers_stop_when_run_is_killed(settings, bootstrap):
    """`run` killed with SIGKILL cannot pause anything, but its workers must not go on
    working on their own: they stop (SIGTERM from the kernel: the batch in flight
    commits)."""
    first = _started(settings, bootstrap)
    workers = _workers_of(first.pid)
    assert workers, "no worker of the run found"
    first.kill()
    first.communicate()
    deadline = time.monotonic() + 60
    while _workers_of(first.pid):
        assert time.monotonic() < deadline, f"workers {_workers_of(first.pid)} outlived run"
        time.sleep(0.5)


def test_run_does_not_lift_a_job_pause_made_by_someone_else(settings, bootstrap):
    """A hold put on a job with `docstreams pause --job` stays: `run` of that job stops
    with who paused it and how to lift it, and publishes nothing."""
    assert (CORPUS / "real").is_dir(), f"corpus not found at {CORPUS}"
    _ensure_topics(settings, bootstrap)
    ControlClient(settings, bootstrap).set_state(f"job:{JOB}", PAUSED, by="legal",
                                                 reason="legal hold")
    code, out, err = _finish(_run(settings, bootstrap), timeout=120)
    assert code == 1, f"exit {code}:\n{err[-3000:]}"
    error = json.loads(out)  # with --json, the error is JSON on stdout
    assert error["reason"] == "paused", error
    assert "paused by legal" in error["error"] and "legal hold" in error["error"], error
    assert f"docstreams resume --job {JOB}" in error["error"], error
    view = ControlView(settings, bootstrap)
    try:
        entry = view.load_to_end().entries[f"job:{JOB}"]
    finally:
        view.close()
    assert entry["state"] == PAUSED and entry["reason"] == "legal hold"
    assert sum(_executions(settings, bootstrap).values()) == 0


def test_an_interrupted_run_keeps_a_hold_made_while_it_ran(settings, bootstrap):
    """Someone pauses the job while `run` follows it (a hold); then `run` is stopped.
    The hold stays as it was made (who, why, since when), and running the job again
    does not lift it (found by a breaker: the interrupt overwrote it with its own)."""
    first = _started(settings, bootstrap)
    hold = ControlClient(settings, bootstrap).set_state(f"job:{JOB}", PAUSED, by="legal",
                                                        reason="legal hold")
    time.sleep(2.0)
    first.send_signal(signal.SIGTERM)
    code, _, err = _finish(first, timeout=90)
    assert code == 130, f"exit {code}:\n{err[-3000:]}"
    assert "stays paused by legal" in err and "legal hold" in err, err[-2000:]
    view = ControlView(settings, bootstrap)
    try:
        entry = view.load_to_end().entries[f"job:{JOB}"]
    finally:
        view.close()
    assert entry["command_id"] == hold["command_id"], entry  # nothing written over it

    code, out, _ = _finish(_run(settings, bootstrap), timeout=120)
    assert code == 1 and json.loads(out)["reason"] == "paused", out
