"""``docstreams run``: the main job, end to end, on one machine.

Start the local broker unless one is configured, start worker processes for every
stage, publish the documents (those the job does not have yet), follow the audit log
with a progress bar per stage until every document is terminal, write the outputs'
summary, stop the workers. Running it again resumes the same job from Kafka's
committed state: nothing committed is redone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams import broker
from streams.admin import wait_for_acks
from streams.blobs import sha256_hex
from streams.control import (
    PAUSED,
    RESUMED,
    ControlClient,
    ControlView,
    paused_since,
    scope_flags,
)
from streams.errors import DocstreamsError
from streams.kafka import quiet_client_logging
from streams.publish import Publisher, collect, doc_id_for
from streams.settings import Settings
from streams.sink import safe_name
from streams.status import PIPELINE, Follower
from streams.worker import ensure_pipeline_topics, worker_id_in_use

# The reason `run` gives the job pause it makes when interrupted: the only job pause
# that re-running the job lifts by itself (anyone else's is theirs to lift).
INTERRUPT_REASON = "Ctrl-C in docstreams run"
# What interrupts `run` (its terminal's Ctrl-C, a scheduler's stop, a closed terminal):
# each is a safe pause of the job, raised as KeyboardInterrupt (see catch_interrupts).
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def catch_interrupts() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, as SIGINT already is."""
    for sig in INTERRUPTS:
        signal.signal(sig, signal.default_int_handler)


@dataclass
class WorkerProcs:
    """The worker subprocesses of a run; a worker that dies is restarted."""

    settings: Settings
    bootstrap: str
    count: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: int = 0

    def _spawn(self, worker_id: str) -> None:
        logs = self.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DOCSTREAMS_BOOTSTRAP": self.bootstrap,
               "DOCSTREAMS_HOME": str(self.settings.home)}
        with open(logs / f"worker-{worker_id}.log", "ab") as log:
            self.procs[worker_id] = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker", "--worker-id", worker_id,
                 "--stop-with-parent", str(os.getpid())],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal goes to `run`, which decides
            )

    def start(self, console: Console | None = None) -> None:
        """Start ``count`` workers under the first free ids w1, w2, ...: an id held by a
        worker of another `docstreams run` on this home is skipped (that worker serves
        every job, this one's too), instead of being started twice and failing."""
        taken, i = [], 0
        while len(self.procs) < self.count:
            i += 1
            worker_id = f"w{i}"
            if worker_id_in_use(self.settings, worker_id):
                taken.append(worker_id)
                continue
            self._spawn(worker_id)
        if taken and console is not None:
            console.print(f"worker(s) {', '.join(taken)} already run here (another "
                          f"`docstreams run`?) and serve this job too; starting "
                          f"{', '.join(self.procs)}")

    def check(self, console: Console) -> None:
        for worker_id, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.restarts += 1
                console.print(f"[yellow]worker {worker_id} exited with {proc.returncode}; "
                              f"restarting (see {self.settings.home}/logs/worker-{worker_id}.log)")
                self._spawn(worker_id)

    def stop(self, timeout: float = 30.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def plan(paths: Sequence[Path], job_id: str, console: Console | None = None
         ) -> list[tuple[Path, str, str]]:
    """(path, source, doc_id) of every document the paths name; what the folders hold
    that is not a document is reported on ``console``."""
    skipped: list[tuple[Path, str]] = []
    docs = [(p, src, doc_id_for(job_id, src, sha256_hex(p.read_bytes())))
            for p, src in collect(paths, skipped)]
    if console is not None:
        for path, why in skipped:
            console.print(f"[yellow]skipped[/] {path}: {why}")
    return docs


def run_job(settings: Settings, paths: Sequence[Path], job_id: str,
            passwords: dict[str, str], workers: int, console: Console) -> dict[str, Any]:
    started = time.monotonic()
    settings = quiet_client_logging(settings)
    docs = plan(paths, job_id, console)
    if not docs:
        raise DocstreamsError(f"no files found under {', '.join(map(str, paths))}",
                              reason="not_found")
    with console.status("starting the broker" if not settings.bootstrap else "connecting"):
        bootstrap = broker.resolve_bootstrap(settings)
        ensure_pipeline_topics(settings, bootstrap)
    console.print(f"broker [bold]{bootstrap}[/]  job [bold]{job_id}[/]  "
                  f"{len(docs)} documents  state in {settings.home}")
    _resume_if_paused(settings, bootstrap, job_id, console)
    follower = Follower(settings, bootstrap)
    procs = WorkerProcs(settings, bootstrap, workers)
    try:
        follower.catch_up()
        known = set(follower.tracker.view(job_id).submitted)
        todo = [d for d in docs if d[2] not in known]
        procs.start(console)
        if todo:
            with Publisher(settings, bootstrap) as pub:
                pub.publish_paths([p for p, _, _ in todo], job_id=job_id, passwords=passwords,
                                  sources={p: s for p, s, _ in todo})
        console.print(f"published {len(todo)} new, {len(docs) - len(todo)} already in the job")
        try:
            snapshot = _follow(follower, procs, job_id, console)
        except KeyboardInterrupt:
            raise _pause_on_interrupt(settings, bootstrap, job_id, console) from None
    finally:
        procs.stop()
        follower.close()
    return _summarise(settings, snapshot, time.monotonic() - started, procs.restarts)


class JobInterrupted(DocstreamsError):
    """Ctrl-C in ``run``: the job was paused safely (drained and committed)."""


def _resume_if_paused(settings: Settings, bootstrap: str, job_id: str, console: Console) -> None:
    """Re-running a job is how a user resumes it after interrupting `run`. Any other
    pause is someone's decision (a hold, an outage): a pause of this job stops the run
    with who paused it and how to lift it; a pause of everything or of a stage is
    reported, and the run waits for it."""
    view = ControlView(settings, bootstrap)
    try:
        desired = view.load_to_end()
    finally:
        view.close()
    for entry in desired.paused():
        if entry["scope"] == f"job:{job_id}" and entry["reason"] != INTERRUPT_REASON:
            raise DocstreamsError(
                f"job {job_id} is paused {_held_by(entry)}; `docstreams run` lifts only "
                f"the pause of an interrupted run. Lift this one with "
                f"`docstreams resume --job {job_id}`, then run again",
                reason="paused")
        if entry["scope"] == f"job:{job_id}":
            ControlClient(settings, bootstrap).set_state(
                entry["scope"], RESUMED, reason="re-run with docstreams run")
            console.print(f"resumed job {job_id} (paused by {entry['by']}"
                          + (f": {entry['reason']}" if entry["reason"] else "") + ")")
        elif not entry["scope"].startswith("job:"):
            console.print(f"[yellow]{entry['scope']} is paused by {entry['by']}"
                          + (f" ({entry['reason']})" if entry["reason"] else "")
                          + f": nothing will move until `docstreams resume "
                          f"{scope_flags(entry['scope'])}`")


def _held_by(entry: dict[str, Any]) -> str:
    """'by WHO since WHEN (WHY)' of a pause entry."""
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(paused_since(entry) / 1000))
    return f"by {entry['by']} since {since}" + (f" ({entry['reason']})" if entry["reason"] else "")


def _pause_on_interrupt(settings: Settings, bootstrap: str, job_id: str,
                        console: Console) -> JobInterrupted:
    console.print(f"\n[yellow]interrupted: pausing job {job_id} (the batch in flight "
                  "commits first; another Ctrl-C is ignored)...")
    # A second Ctrl-C (or a SIGTERM after it) must not cut the pause, or the workers'
    # stop after it, short: it would exit without saying whether the pause holds or how
    # to resume. `run` ends right after, so the handlers are not put back.
    for sig in INTERRUPTS:
        signal.signal(sig, signal.SIG_IGN)
    scope = f"job:{job_id}"
    view = ControlView(settings, bootstrap)
    try:
        desired = view.load_to_end()
    finally:
        view.close()
    held = desired.entries.get(scope)
    if held is not None and held["state"] == PAUSED and held["reason"] != INTERRUPT_REASON:
        # Someone paused the job while it ran (a hold): theirs stays, who, why and since
        # when, so that running the job again does not lift it. The workers have
        # acknowledged it already (`run` showed it).
        return JobInterrupted(
            f"job {job_id} stays paused {_held_by(held)}. Nothing committed is lost or "
            f"redone. Lift it with `docstreams resume --job {job_id}`, then run the same "
            "command again.", reason="interrupted")
    entry = ControlClient(settings, bootstrap).set_state(
        scope, PAUSED, reason=INTERRUPT_REASON, paused_since_ms=desired.paused_since(scope))
    report = wait_for_acks(settings, bootstrap, entry, timeout=30)
    state = ("every worker acknowledged" if report.complete
             else f"not acknowledged by {report.missing()} in 30 s; the pause still holds")
    return JobInterrupted(
        f"job {job_id} paused ({state}). Nothing committed is lost or redone. Resume with the "
        f"same `docstreams run` command, or `docstreams resume --job {job_id}` with a "
        "worker running.", reason="interrupted")


def _follow(follower: Follower, procs: WorkerProcs, job_id: str,
            console: Console) -> dict[str, Any]:
    columns = (TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("exec {task.fields[executions]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {s: progress.add_task(s, total=None, executions=0) for s in PIPELINE}
        held: dict[str, str] = {}
        while True:
            follower.poll(0.5)
            now_held = follower.tracker.holding(job_id)
            if now_held != held:  # say why the bars stand still, and when they go on
                for scope in sorted(now_held.keys() - held.keys()):
                    progress.console.print(
                        f"[yellow]paused: {scope}[/] ({now_held[scope]}): this job waits "
                        f"until `docstreams resume {scope_flags(scope)}`")
                for scope in sorted(held.keys() - now_held.keys()):
                    progress.console.print(f"resumed: {scope}")
                held = now_held
            snap = follower.tracker.view(job_id).snapshot()
            for stage, task in tasks.items():
                st = snap["stages"][stage]
                progress.update(task, total=st["expected"], completed=st["done"],
                                executions=st["executions"])
            if snap["complete"]:
                return snap
            procs.check(console)


def _summarise(settings: Settings, snap: dict[str, Any], seconds: float,
               restarts: int) -> dict[str, Any]:
    out = settings.out_dir / safe_name(snap["job"])
    pages = 0
    for path in out.glob("d*.json"):
        pages += json.loads(path.read_text()).get("pages") or 0
    # Throughput over the job's own active time (its audit events, less idle gaps such
    # as a pause), so neither a pause nor a re-run with nothing to do makes up a rate.
    busy = float(snap.get("active_s") or 0.0)
    summary = {
        **snap,
        "pages": pages,
        "elapsed_s": round(seconds, 2),
        "processing_s": round(busy, 2),
        "documents_per_s": round(snap["documents"] / busy, 3) if busy else None,
        "pages_per_s": round(pages / busy, 3) if busy else None,
        "worker_restarts": restarts,
        "outputs": str(out),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
