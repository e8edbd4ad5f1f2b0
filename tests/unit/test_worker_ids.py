"""`docstreams run` picks worker ids that no live worker on this home holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.job import WorkerProcs
from streams.settings import Settings
from streams.worker import Worker, worker_id_in_use


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DOCSTREAMS_HOME": str(tmp_path)})


def test_an_id_is_in_use_only_while_its_worker_holds_the_lock(settings: Settings) -> None:
    assert not worker_id_in_use(settings, "w1")  # never used
    holder = Worker(settings, "unused:9092", "w1")
    holder._claim_id()
    assert worker_id_in_use(settings, "w1")
    assert not worker_id_in_use(settings, "w2")
    holder._lock.close()  # the process exits: its lock goes with it
    assert not worker_id_in_use(settings, "w1")


def test_run_skips_ids_held_by_another_run(settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    holder = Worker(settings, "unused:9092", "w1")
    holder._claim_id()
    spawned: list[str] = []
    procs = WorkerProcs(settings, "unused:9092", 2)
    monkeypatch.setattr(procs, "_spawn",
                        lambda wid: (spawned.append(wid), procs.procs.__setitem__(wid, None)))
    procs.start()
    assert spawned == ["w2", "w3"]
    holder._lock.close()
