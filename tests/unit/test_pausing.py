"""Pause decisions without a broker: scopes, the desired state folded from the control
topic, what a stage runner's gate asks for, and the retention guardrail."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streams.control import PAUSED, RESUMED, Desired, paused_since, scope_key
from streams.errors import DocstreamsError
from streams.names import STAGES
from streams.pausing import PauseGate, retention_warning

HOUR = 3_600_000


def entry(scope: str, state: str = PAUSED, *, mode: str = "drain", at_ms: int = 1000,
          command_id: str | None = None) -> dict[str, Any]:
    return {"command_id": command_id or f"{scope}-{state}-{at_ms}", "scope": scope,
            "state": state, "mode": mode, "by": "ops@host", "reason": "", "at_ms": at_ms}


def desired(*entries: dict[str, Any]) -> Desired:
    out = Desired()
    for e in entries:
        out = out.with_entry(e)
    return out


class FakeControl:
    """Stands in for ControlView: the gate only asks it for ``desired()``."""

    def __init__(self, state: Desired | None = None) -> None:
        self.state = state or Desired()

    def desired(self) -> Desired:
        return self.state

    def write(self, e: dict[str, Any]) -> None:
        self.state = self.state.with_entry(e)


# -- scope_key ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, key", [
    ({"all_": True}, "all"),
    ({"stage": "extract"}, "stage:extract"),
    ({"job": "loan-17"}, "job:loan-17"),
])
def test_scope_key_names_one_scope(kwargs: dict[str, Any], key: str) -> None:
    assert scope_key(**kwargs) == key


@pytest.mark.parametrize("kwargs", [
    {},
    {"all_": True, "stage": "parse"},
    {"stage": "parse", "job": "j"},
    {"all_": True, "job": "j"},
    {"all_": False, "stage": "", "job": ""},
])
def test_scope_key_refuses_no_scope_or_several(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DocstreamsError) as caught:
        scope_key(**kwargs)
    assert caught.value.reason == "bad_request"


def test_scope_key_refuses_an_unknown_stage() -> None:
    with pytest.raises(DocstreamsError, match="unknown stage 'ocr'") as caught:
        scope_key(stage="ocr")
    assert caught.value.reason == "bad_request"
    assert all(s in str(caught.value) for s in STAGES)


# -- Desired -----------------------------------------------------------------------------
def test_empty_desired_state_pauses_nothing() -> None:
    d = Desired()
    assert d.version == 0 and d.paused() == [] and d.paused_jobs() == frozenset()
    assert all(d.stage_pause(s) is None for s in STAGES)


def test_pause_all_pauses_every_stage_and_takes_precedence_over_a_stage_pause() -> None:
    everything, one = entry("all", at_ms=2), entry("stage:parse", at_ms=1)
    d = desired(one, everything)
    assert all(d.stage_pause(s) == everything for s in STAGES)
    assert d.paused() == [one, everything]  # oldest first


def test_stage_pause_pauses_only_that_stage() -> None:
    d = desired(entry("stage:validate"))
    assert d.stage_pause("validate") is not None
    assert [s for s in STAGES if d.stage_pause(s) is not None] == ["validate"]
    assert d.paused_jobs() == frozenset()


def test_job_pause_pauses_no_stage_and_names_the_job() -> None:
    d = desired(entry("job:a"), entry("job:b"), entry("job:b", RESUMED, at_ms=2000))
    assert all(d.stage_pause(s) is None for s in STAGES)
    assert d.paused_jobs() == frozenset({"a"})
    assert [e["scope"] for e in d.paused()] == ["job:a"]


def test_latest_entry_of_a_scope_wins_like_a_compacted_topic() -> None:
    d = desired(entry("all", at_ms=1), entry("all", RESUMED, at_ms=2))
    assert d.version == 2
    assert d.stage_pause("parse") is None and d.paused() == []
    again = d.with_entry(entry("all", at_ms=3))
    assert again.version == 3 and again.stage_pause("sink") is not None
    assert d.stage_pause("sink") is None  # the earlier snapshot is unchanged
    assert set(again.entries) == {"all"}


def test_a_pause_of_a_paused_scope_keeps_since_when_it_has_been_paused() -> None:
    first = {**entry("job:a", at_ms=1000), "paused_since_ms": 1000}
    d = desired(first)
    assert d.paused_since("job:a") == 1000 and d.paused_since("job:b") is None
    # `pause` passes that along when it pauses the scope again (new who, why, command)
    again = {**entry("job:a", at_ms=9000), "by": "oncall", "paused_since_ms": d.paused_since("job:a")}
    d = d.with_entry(again)
    assert d.paused_since("job:a") == 1000 and paused_since(d.paused()[0]) == 1000
    assert d.entries["job:a"]["by"] == "oncall"
    # after a resume the next pause starts a new clock
    d = d.with_entry({**entry("job:a", RESUMED, at_ms=9500), "paused_since_ms": None})
    assert d.paused_since("job:a") is None


def test_paused_since_of_an_entry_written_before_the_field_is_its_own_time() -> None:
    assert paused_since(entry("all", at_ms=42)) == 42
    assert paused_since({**entry("all", at_ms=42), "paused_since_ms": None}) == 42


def test_resumed_stage_with_all_still_paused_stays_paused() -> None:
    d = desired(entry("stage:route", at_ms=1), entry("all", at_ms=2),
                entry("stage:route", RESUMED, at_ms=3))
    pause = d.stage_pause("route")
    assert pause is not None and pause["scope"] == "all"


def test_applies_to_every_stage_for_all_and_job_but_one_stage_for_stage() -> None:
    d = Desired()
    for s in STAGES:
        assert d.applies_to(entry("all"), s)
        assert d.applies_to(entry("job:x"), s)  # every stage parks a paused job's records
        assert d.applies_to(entry("stage:extract"), s) == (s == "extract")


# -- PauseGate ---------------------------------------------------------------------------
def test_gate_without_control_wants_nothing() -> None:
    gate = PauseGate("parse", None)
    assert gate.desired() == Desired() and gate.version() == 0
    assert not gate.wants_stage_paused(gate.desired())
    assert not gate.abort_requested(0)


def test_gate_wants_its_stage_paused_only_for_all_or_its_own_stage() -> None:
    control = FakeControl(desired(entry("stage:sink")))
    sink, parse = PauseGate("sink", control), PauseGate("parse", control)  # type: ignore[arg-type]
    assert sink.wants_stage_paused(sink.desired())
    assert not parse.wants_stage_paused(parse.desired())
    control.write(entry("all"))
    assert parse.wants_stage_paused(parse.desired())


def test_every_command_is_acknowledged_once_and_ack_resets_the_drain_report() -> None:
    control = FakeControl(desired(entry("all", command_id="c1"), entry("job:j", command_id="c2")))
    gate = PauseGate("extract", control)  # type: ignore[arg-type]
    assert {e["command_id"] for e in gate.unacked(gate.desired())} == {"c1", "c2"}
    gate.drained, gate.aborted = 7, True
    gate.acked_all(gate.unacked(gate.desired()))
    assert gate.unacked(gate.desired()) == [] and gate.drained == 0 and not gate.aborted
    control.write(entry("all", RESUMED, command_id="c3"))
    assert [e["command_id"] for e in gate.unacked(gate.desired())] == ["c3"]


def test_a_newly_started_gate_acknowledges_the_standing_state() -> None:
    """A worker that starts (or restarts) while paused acknowledges the pause it found."""
    control = FakeControl(desired(entry("all", command_id="old")))
    gate = PauseGate("route", control)  # type: ignore[arg-type]
    assert [e["command_id"] for e in gate.unacked(gate.desired())] == ["old"]


def test_drained_counts_only_batches_that_were_in_flight_when_the_state_changed() -> None:
    control = FakeControl()
    gate = PauseGate("parse", control)  # type: ignore[arg-type]
    before = gate.version()
    gate.note_batch(before, 5)
    assert gate.drained == 0  # nothing changed while it ran
    control.write(entry("all"))
    gate.note_batch(before, 5)
    gate.note_batch(before, 3)
    assert gate.drained == 8


@pytest.mark.parametrize("command, stage, wanted", [
    (entry("all", mode="now"), "parse", True),
    (entry("stage:parse", mode="now"), "parse", True),
    (entry("stage:parse", mode="now"), "extract", False),
    (entry("job:j", mode="now"), "validate", True),
    (entry("all", mode="drain"), "parse", False),
    (entry("all", RESUMED, mode="now"), "parse", False),
])
def test_abort_is_requested_only_by_an_unacked_now_pause_of_this_stage(
        command: dict[str, Any], stage: str, wanted: bool) -> None:
    control = FakeControl()
    gate = PauseGate(stage, control)  # type: ignore[arg-type]
    since = gate.version()
    assert not gate.abort_requested(since)
    control.write(command)
    assert gate.abort_requested(since) is wanted
    assert not gate.abort_requested(gate.version())  # arrived before the batch: no abort


def test_an_acknowledged_now_pause_does_not_abort_later_batches() -> None:
    control = FakeControl()
    gate = PauseGate("parse", control)  # type: ignore[arg-type]
    since = gate.version()
    control.write(entry("all", mode="now"))
    gate.acked_all(gate.unacked(gate.desired()))
    assert not gate.abort_requested(since)


# -- retention_warning -------------------------------------------------------------------
def test_no_warning_without_a_retention_limit() -> None:
    assert retention_warning(0, -1, now_ms=10 * HOUR * 1000) is None
    assert retention_warning(0, None, now_ms=10 * HOUR * 1000) is None  # type: ignore[arg-type]


def test_no_warning_well_inside_the_retention() -> None:
    assert retention_warning(0, 168 * HOUR, now_ms=100 * HOUR) is None  # 60 %


def test_warning_from_80_percent_of_the_retention() -> None:
    text = retention_warning(0, 100 * HOUR, now_ms=80 * HOUR)
    assert text is not None
    assert "80.0 h" in text and "80%" in text and "100.0 h" in text and "resume" in text
    over = retention_warning(0, 100 * HOUR, now_ms=150 * HOUR)
    assert over is not None and "150%" in over


def test_warning_fraction_is_configurable() -> None:
    assert retention_warning(0, 100 * HOUR, now_ms=50 * HOUR, fraction=0.5) is not None
    assert retention_warning(0, 100 * HOUR, now_ms=49 * HOUR, fraction=0.5) is None


def test_warning_uses_the_clock_by_default() -> None:
    now = int(time.time() * 1000)
    assert retention_warning(now - 90 * HOUR, 100 * HOUR) is not None
    assert retention_warning(now - HOUR, 100 * HOUR) is None
