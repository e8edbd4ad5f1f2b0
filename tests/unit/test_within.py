"""The watchdog around blocking client calls (streams.kafka.within)."""

from __future__ import annotations

import threading
import time

import pytest

from streams.kafka import ClientStuck, within


def test_returns_the_value_of_a_call_that_finishes_in_time() -> None:
    assert within(5, "quick", lambda: 42) == 42


def test_reraises_the_exception_of_the_call_in_the_caller() -> None:
    def fail() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        within(5, "failing", fail)


def test_a_call_blocked_past_the_deadline_raises_client_stuck_and_is_left_running() -> None:
    release = threading.Event()
    finished = threading.Event()

    def blocked() -> None:
        release.wait(30)
        finished.set()

    started = time.monotonic()
    with pytest.raises(ClientStuck, match="commit_transaction still blocked"):
        within(0.2, "commit_transaction", blocked)
    assert time.monotonic() - started < 5
    assert not finished.is_set()  # abandoned, not killed: the thread finishes on its own
    release.set()
    assert finished.wait(5)


def test_give_up_stops_the_wait_early_with_its_reason() -> None:
    release = threading.Event()
    asked: list[float] = []

    def give_up() -> str | None:
        asked.append(time.monotonic())
        return "broker connection lost" if len(asked) >= 2 else None

    started = time.monotonic()
    with pytest.raises(ClientStuck, match="abandoned .*broker connection lost"):
        within(30.0, "blocked", release.wait, give_up=give_up, check_after=0.2)
    assert time.monotonic() - started < 5.0  # long before the 30 s deadline
    assert asked and asked[0] - started >= 0.2  # not asked before check_after
    release.set()


def test_give_up_is_not_asked_of_a_call_that_finishes_quickly() -> None:
    def never() -> str | None:
        raise AssertionError("asked too early")

    assert within(5.0, "quick", lambda: 7, give_up=never) == 7
