"""A worker process: one :class:`StageRunner` thread per stage it runs.

Partitions are the unit of parallelism: start as many workers as you like, anywhere,
with the same ``DOCSTREAMS_BOOTSTRAP``; each stage's consumer group spreads the
partitions over them. A worker id names its local state folder and its transactional
ids, so a restarted worker with the same id fences its own zombie and restores its
state incrementally.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams import names, topics
from streams.blobs import BlobStore
from streams.control import ControlView
from streams.errors import DocstreamsError
from streams.extract import RuleExtractor
from streams.parse_pool import ParsePool
from streams.runtime import Stage, StageRunner
from streams.secrets import SecretStore
from streams.settings import Settings
from streams.sink import DecisionsStore
from streams.sink_postgres import open_sink
from streams.stages import ExtractStage, ParseStage, RouteStage, SinkStage, ValidateStage

log = logging.getLogger("docstreams.worker")


def ensure_pipeline_topics(settings: Settings, bootstrap: str) -> None:
    changelogs = names.changelogs(settings.topic_prefix)
    topics.ensure_topics(settings, bootstrap, changelogs, compacted=changelogs)


def worker_lock_path(settings: Settings, worker_id: str) -> Path:
    """The file a worker holds locked (flock) for as long as it runs under that id."""
    return settings.state_dir / worker_id / ".worker.lock"


def worker_id_in_use(settings: Settings, worker_id: str) -> bool:
    """Whether a live process holds this worker id's lock (see Worker._claim_id)."""
    lock = worker_lock_path(settings, worker_id)
    if not lock.exists():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


class Worker:
    def __init__(self, settings: Settings, bootstrap: str, worker_id: str,
                 stages: Sequence[str] = names.STAGES) -> None:
        unknown = set(stages) - set(names.STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s): {', '.join(sorted(unknown))}")
        self.settings, self.bootstrap, self.worker_id = settings, bootstrap, worker_id
        self.stage_names = list(stages)
        self.pool: ParsePool | None = None
        self.sink: DecisionsStore | None = None
        self.control: ControlView | None = None
        self.runners: list[StageRunner] = []
        self.threads: list[threading.Thread] = []

    def _stage(self, name: str) -> Stage:
        s = self.settings
        blobs = BlobStore(s.blob_dir)
        if name == "parse":
            self.pool = ParsePool(s.parse_workers, s.parse_timeout_s, s.parse_memory_mb,
                                  allow_faults=s.allow_fault_injection)
            return ParseStage(blobs, SecretStore(s.home / "secrets"), self.pool)
        if name == "extract":
            return ExtractStage(blobs, RuleExtractor())
        if name == "validate":
            return ValidateStage()
        if name == "route":
            return RouteStage(s)
        self.sink = open_sink(s)
        return SinkStage(s, self.sink)

    def _claim_id(self) -> None:
        """One process per worker id on a machine: the id names the RocksDB folders (which
        RocksDB locks) and the transactional ids (which would fence each other)."""
        lock = worker_lock_path(self.settings, self.worker_id)
        folder = lock.parent
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(lock, "w")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise DocstreamsError(
                f"worker id {self.worker_id!r} is already in use by another process on this "
                f"machine (state {folder}); give each worker its own --worker-id",
                reason="worker_id_in_use") from None

    def start(self) -> None:
        self._claim_id()
        ensure_pipeline_topics(self.settings, self.bootstrap)
        # Fail closed: know the pause state before consuming anything.
        self.control = ControlView(self.settings, self.bootstrap)
        self.control.load_to_end()
        self.control.follow()
        for name in self.stage_names:
            runner = StageRunner(self._stage(name), self.settings, self.bootstrap, self.worker_id,
                                 control=self.control)
            thread = threading.Thread(target=runner.run, name=f"stage-{name}", daemon=True)
            self.runners.append(runner)
            self.threads.append(thread)
            thread.start()
        log.info("worker %s running stages %s", self.worker_id, ", ".join(self.stage_names))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in flight, commit it, leave the groups."""
        for runner in self.runners:
            runner.stop()
        for thread in self.threads:
            thread.join(timeout)
        if self.control is not None:
            self.control.close()
        if self.pool is not None:
            self.pool.close()
        if self.sink is not None:
            self.sink.close()
        if getattr(self, "_lock", None) is not None:
            self._lock.close()

    def describe(self) -> list[dict[str, Any]]:
        """Each stage runner's state (see :meth:`StageRunner.describe`), for diagnostics."""
        return [{**runner.describe(), "thread_alive": thread.is_alive()}
                for runner, thread in zip(self.runners, self.threads, strict=True)]

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)


def stop_with_parent(parent_pid: int, stop: threading.Event) -> None:
    """Have the kernel send this worker SIGTERM when the `run` that started it dies,
    however it dies (Linux), so that no worker is left working on its own; SIGTERM
    commits the batch in flight and stops. A parent already gone stops it now."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:
        stop.set()
