"""Chaos harness: documents flow through several worker processes while workers are
killed with SIGKILL (at random moments, and at the runtime's commit fault points), the
broker is restarted, and the whole pipeline or the job is paused and resumed (a job pause
parks its records); then every document is checked for exactly one outcome, read back
with read_committed, and one sink row.

    python -m tests.chaos.harness --seed 1 --docs 100 --kills 5 [--broker-restarts 1] [--pauses 3]

It runs on its own: its own broker on a temporary home (the Kafka jars linked from
``<repo>/.docstreams/broker/libs``, which ``make setup`` fetches), its own
DOCSTREAMS_HOME, and ``--workers`` worker processes with stable ids, each restarted with
the same id whenever it dies. ``--kills`` counts the harness's own kills; workers are
also started armed with ``DOCSTREAMS_FAULT_AT=*:<point>:<p>`` now and then, so that some
die mid-commit by themselves (at most half as many as ``--kills``; they count as kills too).

The last line is exactly
``chaos: documents=N lost=L duplicated=D sink_duplicates=S kills=K broker_restarts=B pauses=P``
and the exit code is 0 only when L, D and S are 0. The same seed gives the same
documents and the same plan of events; timings, and so interleavings, vary.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams import broker
from streams.admin import AckReport, wait_for_acks
from streams.blobs import sha256_hex
from streams.control import PAUSED, RESUMED, ControlClient
from streams.publish import Publisher, doc_id_for
from streams.settings import Settings
from streams.status import Follower
from streams.worker import ensure_pipeline_topics
from tests.corpus import CORPUS, password_from_name
from tests.integration.pipeline import (
    REPO,
    ExactlyOnce,
    exactly_once,
    kill_worker,
    reap_group,
    spawn_worker,
    stop_worker,
)

FAULT_POINTS = ("before_process", "after_produce", "before_commit", "after_commit")
JOB = "chaos"


@dataclass(frozen=True)
class Options:
    seed: int
    docs: int
    kills: int
    broker_restarts: int = 1
    pauses: int = 3
    workers: int = 3
    gap_s: tuple[float, float] = (2.0, 7.0)
    timeout_s: float | None = None
    keep: bool = False
    kafka_libs: Path = REPO / ".docstreams" / "broker" / "libs"


@dataclass
class Tally:
    kills: int = 0            # SIGKILLs sent by the harness
    fault_kills: int = 0      # workers that SIGKILLed themselves at an armed fault point
    other_exits: list[str] = field(default_factory=list)
    broker_restarts: int = 0
    pauses: int = 0
    moved_while_paused: int = 0
    unacked_pauses: int = 0


# --- the documents -----------------------------------------------------------------------

def corpus_files() -> list[Path]:
    files = sorted((CORPUS / "real").glob("*.pdf")) + sorted((CORPUS / "bad").glob("*.pdf"))
    if not files:
        raise SystemExit(f"chaos: no corpus under {CORPUS} (set DOCSTREAMS_CORPUS)")
    return files


def plan_documents(rng: random.Random, count: int) -> list[tuple[Path, str]]:
    """``count`` real corpus files (repeats allowed), each under a source name of its own,
    so every one is a distinct document with its own doc_id."""
    files = corpus_files()
    picks = [files[i % len(files)] for i in range(count)]  # every file before repeats
    rng.shuffle(picks)
    return [(path, f"chaos/{i:05d}/{path.parent.name}/{path.name}")
            for i, path in enumerate(picks)]


def plan_events(rng: random.Random, opts: Options) -> list[str]:
    """Kills, broker restarts and pause/resume pairs in a seeded order; a kill or a broker
    restart may fall inside a pause (a restarted worker must come up paused)."""
    units = ["kill"] * opts.kills + ["broker"] * opts.broker_restarts + ["pause"] * opts.pauses
    rng.shuffle(units)
    events: list[str] = []
    while units:
        unit = units.pop(0)
        if unit != "pause":
            events.append(unit)
            continue
        events.append("pause")
        if units and units[0] != "pause" and rng.random() < 0.5:
            events.append(units.pop(0))
        events.append("resume")
    return events


# --- the worker processes ----------------------------------------------------------------

class Fleet:
    """Worker subprocesses with stable ids; one that dies is started again with its id."""

    def __init__(self, settings: Settings, bootstrap: str, count: int, rng: random.Random,
                 tally: Tally, fault_budget: int, say: Any) -> None:
        self.settings, self.bootstrap, self.rng, self.tally = settings, bootstrap, rng, tally
        self.ids = [f"c{i}" for i in range(1, count + 1)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.armed: dict[str, str | None] = {}
        self.due: dict[str, float] = {}  # worker id -> when to start it again
        self.fault_budget = fault_budget
        self.arming = True
        self.hold = False  # no starts while the broker is down (a start would fail closed)
        self.say = say

    def _fault_spec(self) -> str | None:
        armed_now = sum(1 for w, spec in self.armed.items()
                        if spec and w in self.procs and self.procs[w].poll() is None)
        if (not self.arming or self.tally.fault_kills + armed_now >= self.fault_budget
                or self.rng.random() < 0.4):
            return None
        return f"*:{self.rng.choice(FAULT_POINTS)}:{self.rng.choice((0.02, 0.05))}"

    def spawn(self, worker_id: str) -> None:
        spec = self._fault_spec()
        self.armed[worker_id] = spec
        self.procs[worker_id] = spawn_worker(self.settings, self.bootstrap, worker_id,
                                             fault_at=spec)
        self.due.pop(worker_id, None)
        if spec:
            self.say(f"worker {worker_id} started armed: DOCSTREAMS_FAULT_AT={spec}")

    def start(self) -> None:
        for worker_id in self.ids:
            self.spawn(worker_id)

    def alive(self) -> list[str]:
        return [w for w in self.ids if w in self.procs and self.procs[w].poll() is None
                and w not in self.due]

    def kill(self, worker_id: str, restart_after: float) -> None:
        proc = self.procs[worker_id]
        if proc.poll() is None:
            kill_worker(proc)
            self.tally.kills += 1
            self.say(f"kill -9 worker {worker_id} (pid {proc.pid}); restart in "
                     f"{restart_after:.1f}s")
        self.due[worker_id] = time.monotonic() + restart_after

    def check(self) -> None:
        """Notice workers that died by themselves; start those that are due."""
        for worker_id, proc in self.procs.items():
            if worker_id in self.due or proc.poll() is None:
                continue
            reap_group(proc)
            if proc.returncode == -signal.SIGKILL:
                self.tally.fault_kills += 1
                self.say(f"worker {worker_id} died at its fault point "
                         f"({self.armed.get(worker_id)}); restarting")
            else:
                self.tally.other_exits.append(f"{worker_id}:{proc.returncode}")
                self.say(f"worker {worker_id} exited with {proc.returncode}; restarting "
                         f"(log: {self.settings.home}/logs/worker-{worker_id}.log)")
            self.due[worker_id] = time.monotonic() + 0.5
        if self.hold:
            return
        for worker_id, when in list(self.due.items()):
            if time.monotonic() >= when:
                self.spawn(worker_id)

    def restart_all(self, bootstrap: str) -> None:
        """The broker came back on another port: every worker needs the new address."""
        self.bootstrap = bootstrap
        for worker_id, proc in self.procs.items():
            stop_worker(proc, 10)
            self.due[worker_id] = 0.0

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            stop_worker(proc, 30)


# --- the run -------------------------------------------------------------------------------

class Chaos:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.tally = Tally()
        self.started = time.monotonic()
        self.home = Path(tempfile.mkdtemp(prefix=f"docstreams-chaos-{opts.seed}-"))
        self.broker_settings = Settings(home=self.home, bootstrap=None)
        self.bootstrap = ""
        self.settings: Settings | None = None
        self.fleet: Fleet | None = None
        self.follower: Follower | None = None
        self.docs = plan_documents(self.rng, opts.docs)
        self.events = plan_events(self.rng, opts)
        self.published: dict[str, str] = {}  # doc_id -> source
        self.last_progress = 0.0
        self.pause_acks: Future[AckReport] | None = None
        self.paused_at = 0.0
        self.pause_scope = "all"
        self.paused_baseline: tuple[int, int] | None = None
        self.executor = ThreadPoolExecutor(1)

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)

    # -- set-up and tear-down ------------------------------------------------------------
    def _start_broker(self) -> None:
        libs = self.opts.kafka_libs.resolve()
        if not (libs / f"kafka_2.13-{broker.KAFKA_VERSION}.jar").is_file():
            raise SystemExit(f"chaos: Kafka jars missing in {libs}: run `make setup`")
        (self.home / "broker").mkdir(parents=True)
        (self.home / "broker" / "libs").symlink_to(libs)
        info = broker.start(self.broker_settings, timeout=120)
        self.bootstrap = info.bootstrap
        self.settings = Settings.from_env({"DOCSTREAMS_HOME": str(self.home),
                                           "DOCSTREAMS_BOOTSTRAP": info.bootstrap}
                                          ).replace(parse_workers=1, kafka_log_level=2)
        # kafka_log_level: the harness's own clients stay quiet while the broker is down on
        # purpose (it is not passed on: worker logs keep librdkafka's errors).
        ensure_pipeline_topics(self.settings, self.bootstrap)
        self.say(f"broker {self.bootstrap} (pid {info.pid}) home {self.home}")

    def close(self, ok: bool) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        if self.follower is not None:
            self.follower.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        broker.stop(self.broker_settings)
        if ok and not self.opts.keep:
            shutil.rmtree(self.home, ignore_errors=True)
        else:
            print(f"chaos: state, worker logs and broker logs kept in {self.home}", flush=True)

    # -- waiting while watching ----------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        assert self.follower is not None
        return self.follower.tracker.view(JOB).snapshot()

    def idle(self, seconds: float) -> None:
        """Let time pass while restarting dead workers and following the audit log."""
        assert self.fleet is not None and self.follower is not None
        deadline = time.monotonic() + seconds
        while True:
            self.fleet.check()
            self.follower.poll(min(0.5, max(0.05, deadline - time.monotonic())))
            if time.monotonic() - self.last_progress >= 15:
                self.last_progress = time.monotonic()
                snap = self._snapshot()
                done = sum(snap["outcomes"].values())
                execs = {s: v["executions"] for s, v in snap["stages"].items()}
                self.say(f"progress: {done}/{len(self.published)} published recorded; "
                         f"executions {execs}")
            if time.monotonic() >= deadline:
                return

    # -- events ---------------------------------------------------------------------------
    def publish(self, docs: list[tuple[Path, str]]) -> None:
        assert self.settings is not None
        items = []
        for path, source in docs:
            data = path.read_bytes()
            items.append((data, source, password_from_name(path.name)))
            self.published[doc_id_for(JOB, source, sha256_hex(data))] = source
        for attempt in range(1, 4):  # doc ids are stable: publishing again is a no-op
            try:
                with Publisher(self.settings, self.bootstrap, submitted_by="chaos") as pub:
                    pub.publish_many(items, job_id=JOB)
                break
            except Exception as exc:  # noqa: BLE001 - the publisher is not under test here
                self.say(f"publish attempt {attempt} failed ({exc}); retrying")
                self.idle(5)
        else:
            raise RuntimeError("could not publish documents")
        self.say(f"published {len(docs)} documents ({len(self.published)} so far)")

    def kill(self) -> None:
        """kill -9 a running worker, chosen at random (waiting for one to be up)."""
        assert self.fleet is not None
        pick = self.rng.random()
        delay = self.rng.uniform(0.2, 3.0)
        deadline = time.monotonic() + 60
        while not (alive := self.fleet.alive()) and time.monotonic() < deadline:
            self.idle(0.5)
        if alive:
            self.fleet.kill(alive[int(pick * len(alive))], delay)

    def restart_broker(self) -> None:
        assert self.fleet is not None
        how = self.rng.choice(("SIGTERM", "SIGKILL"))
        down = self.rng.uniform(2.0, 6.0)
        self.say(f"broker restart: stop with {how}, down for {down:.1f}s")
        self.fleet.hold = True
        if how == "SIGTERM":
            broker.stop(self.broker_settings, timeout=20)
        else:
            pid = broker.status(self.broker_settings)["pid"]
            if pid:
                os.kill(pid, signal.SIGKILL)
            while broker.status(self.broker_settings)["running"]:
                time.sleep(0.1)
        self.idle(down)
        info = broker.start(self.broker_settings, timeout=120)
        self.fleet.hold = False
        self.tally.broker_restarts += 1
        self.say(f"broker back on {info.bootstrap} after {info.ready_seconds:.1f}s")
        if info.bootstrap != self.bootstrap:
            self.say("broker port changed: restarting every worker with the new address")
            assert self.settings is not None and self.follower is not None
            self.bootstrap = info.bootstrap
            self.settings = self.settings.replace(bootstrap=info.bootstrap)
            self.fleet.settings = self.settings
            self.fleet.restart_all(info.bootstrap)
            self.follower.close()
            self.follower = Follower(self.settings, self.bootstrap)

    def _counts(self) -> tuple[int, int]:
        """(documents recorded by the sink, executions of every stage), caught up."""
        assert self.follower is not None
        self.follower.catch_up(timeout=15)
        snap = self._snapshot()
        return (sum(snap["outcomes"].values()),
                sum(v["executions"] for v in snap["stages"].values()))

    def pause(self) -> None:
        """Pause everything, or the job (its records are then parked as they are read,
        and re-injected after the resume: kills and broker restarts may fall in both)."""
        assert self.settings is not None
        self.pause_scope = self.rng.choice(["all", f"job:{JOB}"])
        entry = ControlClient(self.settings, self.bootstrap).set_state(
            self.pause_scope, PAUSED, reason=f"chaos seed {self.opts.seed}", by="chaos")
        self.paused_at = time.monotonic()
        self.paused_baseline = None
        settings, bootstrap = self.settings, self.bootstrap
        self.say(f"pause {self.pause_scope} sent")
        # Wait for the acks here (restarting dead workers meanwhile), so that no admin
        # request of the harness is in flight across a broker restart: librdkafka 2.16.1
        # has aborted the process then (rd_kafka_enq_once_del_source_return assertion).
        self.pause_acks = self.executor.submit(wait_for_acks, settings, bootstrap, entry, 45.0)
        while not self.pause_acks.done():
            self.idle(0.5)

    def resume(self) -> None:
        assert self.settings is not None and self.pause_acks is not None
        self.idle(max(0.0, 3.0 - (time.monotonic() - self.paused_at)))
        while not self.pause_acks.done():
            self.idle(0.5)
        report = self.pause_acks.result()
        if report.complete:
            # Every live worker has drained and acknowledged: nothing may move now.
            baseline = self._counts()
            self.idle(self.rng.uniform(2.0, 5.0))
            after = self._counts()
            moved = (after[0] - baseline[0]) + (after[1] - baseline[1])
            self.tally.moved_while_paused += moved
            self.say(f"paused: {len(report.acks)} acks in {report.seconds:.1f}s; "
                     f"moved while paused: {moved}")
        else:
            self.tally.unacked_pauses += 1
            self.say(f"pause not acknowledged by {report.missing()} (a worker was down)")
        ControlClient(self.settings, self.bootstrap).set_state(
            self.pause_scope, RESUMED, reason=f"chaos seed {self.opts.seed}", by="chaos")
        self.tally.pauses += 1
        self.say(f"resume {self.pause_scope} sent")

    # -- the whole run -------------------------------------------------------------------
    def run(self) -> ExactlyOnce:
        opts = self.opts
        self._start_broker()
        assert self.settings is not None
        self.follower = Follower(self.settings, self.bootstrap)
        self.fleet = Fleet(self.settings, self.bootstrap, opts.workers, self.rng, self.tally,
                           fault_budget=max(1, opts.kills // 2) if opts.kills else 0,
                           say=self.say)
        self.fleet.start()
        self.say(f"{opts.workers} workers; plan: {' '.join(self.events) or 'no events'}")
        first = (len(self.docs) + 1) // 2
        rest = self.docs[first:]
        per_event = -(-len(rest) // max(1, len(self.events)))
        chunks = [rest[i:i + per_event] for i in range(0, len(rest), per_event)]
        self.publish(self.docs[:first])
        actions = {"kill": self.kill, "broker": self.restart_broker, "pause": self.pause,
                   "resume": self.resume}
        for i, event in enumerate(self.events):
            self.idle(self.rng.uniform(*opts.gap_s))
            actions[event]()
            if i < len(chunks):
                self.publish(chunks[i])
        for chunk in chunks[len(self.events):]:
            self.publish(chunk)
        self.fleet.arming = False  # from here on, restarted workers run unarmed
        self._wait_complete()
        self.fleet.stop()
        self.say("workers stopped; verifying with read_committed consumers and the sink")
        return exactly_once(self.settings, self.bootstrap, set(self.published), JOB)

    def _wait_complete(self) -> None:
        timeout = self.opts.timeout_s or 600 + 3 * self.opts.docs
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.idle(1.0)
            snap = self._snapshot()
            if snap["documents"] >= len(self.published) and snap["complete"]:
                self.say(f"complete: outcomes {snap['outcomes']}")
                return
        self.say(f"NOT complete after {timeout:.0f}s: {self._snapshot()}")

    def report(self, check: ExactlyOnce) -> str:
        snap = self._snapshot()
        t = self.tally
        print(f"chaos: seed={self.opts.seed} workers={self.opts.workers} "
              f"harness_kills={t.kills} fault_point_kills={t.fault_kills} "
              f"other_worker_exits={len(t.other_exits)} {t.other_exits} "
              f"moved_while_paused={t.moved_while_paused} unacked_pauses={t.unacked_pauses} "
              f"intermediate_duplicates={check.intermediate_duplicates}", flush=True)
        print(f"chaos: outcomes={snap['outcomes']} redone={snap['redone']} "
              f"elapsed={time.monotonic() - self.started:.0f}s", flush=True)
        if check.lost:
            print(f"chaos: lost documents: {[self.published.get(d, d) for d in check.lost]}",
                  flush=True)
        return (f"chaos: documents={len(self.published)} lost={len(check.lost)} "
                f"duplicated={check.duplicated} sink_duplicates={check.sink_duplicates} "
                f"kills={t.kills + t.fault_kills} broker_restarts={t.broker_restarts} "
                f"pauses={t.pauses}")


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.harness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--docs", type=int, default=100)
    p.add_argument("--kills", type=int, default=5, help="worker kills by the harness")
    p.add_argument("--broker-restarts", type=int, default=1)
    p.add_argument("--pauses", type=int, default=3, help="pause --all / resume cycles")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for completion after the last event")
    p.add_argument("--keep", action="store_true", help="keep the temporary home")
    p.add_argument("--kafka-libs", type=Path, default=Options.kafka_libs,
                   help="the Kafka jars (make setup fetches them)")
    a = p.parse_args(argv)
    if a.docs < 1 or a.workers < 1 or min(a.kills, a.broker_restarts, a.pauses) < 0:
        p.error("--docs and --workers must be positive; counts must not be negative")
    return Options(seed=a.seed, docs=a.docs, kills=a.kills, broker_restarts=a.broker_restarts,
                   pauses=a.pauses, workers=a.workers, timeout_s=a.timeout, keep=a.keep,
                   kafka_libs=a.kafka_libs)


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (a CI timeout, say) unwinds like Ctrl-C: the workers and the broker this
    # harness started are stopped in Chaos.close, never left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chaos = Chaos(parse_args(argv))
    ok = False
    try:
        check = chaos.run()
        line = chaos.report(check)
        ok = not check.lost and not check.duplicated and not check.sink_duplicates
    finally:
        chaos.close(ok)
    print(line, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
