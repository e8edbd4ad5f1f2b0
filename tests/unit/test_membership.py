"""The runner's watches over its consumer: when it rebuilds its clients (MembershipWatch)
and when it restarts a partition's fetch (FetchStallWatch). Pure logic."""

from streams.runtime import MembershipWatch
from streams.watches import FetchStallWatch


def test_rebuilds_only_after_three_checks_in_a_row_without_being_listed() -> None:
    watch = MembershipWatch()
    assert [watch.observe(False), watch.observe(False)] == [False, False]
    assert watch.observe(False)


def test_being_listed_again_starts_the_count_over() -> None:
    watch = MembershipWatch()
    for listed in (False, False, True, False, False):
        assert not watch.observe(listed)  # a rebalance can hide a member for a moment


def test_a_check_that_cannot_tell_counts_neither_way() -> None:
    watch = MembershipWatch()
    for listed in (False, None, None, False):  # the broker away between two misses
        assert not watch.observe(listed)
    assert watch.observe(False)


# -- FetchStallWatch -------------------------------------------------------------------------
KEY = ("t.docs.submitted", 0)


def test_a_look_is_due_once_the_position_stood_still_for_the_wait() -> None:
    watch = FetchStallWatch(after_s=10.0)
    assert not watch.due(KEY, 7, now=100.0)
    assert not watch.due(KEY, 7, now=105.0)
    assert watch.due(KEY, 7, now=110.0)
    assert not watch.due(KEY, 7, now=115.0)  # the next look is after_s after this one
    assert watch.due(KEY, 7, now=120.0)


def test_a_position_that_moves_starts_the_wait_over() -> None:
    watch = FetchStallWatch(after_s=10.0)
    watch.due(KEY, 7, now=100.0)
    assert not watch.due(KEY, 9, now=109.0)
    assert not watch.due(KEY, 9, now=118.0)
    assert watch.due(KEY, 9, now=119.0)


def test_a_restart_takes_records_waiting_at_two_looks_in_a_row() -> None:
    watch = FetchStallWatch(after_s=10.0)
    watch.due(KEY, -1001, now=100.0)  # no position: the fetch never started
    assert watch.due(KEY, -1001, now=110.0)
    assert not watch.looked(KEY, -1001, waiting=True)  # first sighting
    assert watch.due(KEY, -1001, now=120.0)
    assert watch.looked(KEY, -1001, waiting=True)
    assert not watch.due(KEY, -1001, now=125.0)  # restarted: a new wait begins


def test_records_that_just_landed_on_a_long_idle_partition_are_no_stall() -> None:
    """A partition idle for minutes; an upstream stage resumes and records land on it
    just before a look. They are fetched before the next look: no restart."""
    watch = FetchStallWatch(after_s=10.0)
    watch.due(KEY, 16, now=0.0)
    assert watch.due(KEY, 16, now=300.0)
    assert not watch.looked(KEY, 16, waiting=True)
    assert not watch.due(KEY, 22, now=305.0)  # fetched and processed: it moved
    assert not watch.due(KEY, 22, now=310.0)
    assert watch.due(KEY, 22, now=315.0)
    assert not watch.looked(KEY, 22, waiting=True)  # a new first sighting, not a second


def test_nothing_waiting_clears_a_first_sighting() -> None:
    watch = FetchStallWatch(after_s=10.0)
    watch.due(KEY, 7, now=0.0)
    assert watch.due(KEY, 7, now=10.0)
    assert not watch.looked(KEY, 7, waiting=True)
    assert watch.due(KEY, 7, now=20.0)
    assert not watch.looked(KEY, 7, waiting=False)  # an open transaction was committed...
    assert watch.due(KEY, 7, now=30.0)
    assert not watch.looked(KEY, 7, waiting=True)  # ...so this is a first sighting again


def test_waiting_only_when_committed_records_lie_past_the_position() -> None:
    assert FetchStallWatch.waiting(position=12, committed=11, end=20)
    assert FetchStallWatch.waiting(position=-1001, committed=11, end=20)  # never fetched
    assert not FetchStallWatch.waiting(position=12, committed=11, end=12)  # caught up
    # An open transaction upstream: the last stable offset stops before it.
    assert not FetchStallWatch.waiting(position=-1001, committed=11, end=11)
