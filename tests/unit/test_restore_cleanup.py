"""A state restore cut short releases its RocksDB store (no broker needed: the failure
is injected where the restore first asks the broker for the changelog's end)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams import runtime
from streams.runtime import StageRunner
from streams.settings import Settings
from streams.stages import ValidateStage
from streams.state import PartitionStore


class _Reader:
    def close(self) -> None:
        pass


def test_a_failed_restore_leaves_the_store_openable_again(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env({"DOCSTREAMS_HOME": str(tmp_path)})
    runner = StageRunner(ValidateStage(), settings, "unused:9092", "w1")

    def broker_down(*_args: object, **_kw: object) -> int:
        raise KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))

    monkeypatch.setattr(runtime, "reader", lambda *_a, **_k: _Reader())
    monkeypatch.setattr(runtime, "high_watermark", broker_down)
    with pytest.raises(KafkaException) as failed:
        runner._restore(("docs.extracted", 0))
    # Before the fix the store stayed open and RocksDB refused every later open
    # ("lock hold by current process"), so the partition never restored again.
    path = settings.state_dir / "w1" / "validate" / "docs.extracted" / "p0"
    # The failure is still referenced (its traceback holds the restore's frame), as it
    # is in the worker while the error is logged and the clients are rebuilt.
    assert failed.tb is not None
    PartitionStore(path).close()
