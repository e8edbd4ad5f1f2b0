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


def test_a_partition_standing_still_is_reported_once_its_position_held_long_enough() -> None:
    watch = FetchStallWatch(after_s=10.0)
    assert not watch.observe(KEY, 7, now=100.0)
    assert not watch.observe(KEY, 7, now=105.0)
    assert watch.observe(KEY, 7, now=110.0)


def test_a_position_that_moves_starts_the_wait_over() -> None:
    watch = FetchStallWatch(after_s=10.0)
    watch.observe(KEY, 7, now=100.0)
    assert not watch.observe(KEY, 9, now=109.0)
    assert not watch.observe(KEY, 9, now=118.0)
    assert watch.observe(KEY, 9, now=119.0)


def test_forgetting_a_partition_starts_the_wait_over() -> None:
    watch = FetchStallWatch(after_s=10.0)
    watch.observe(KEY, -1001, now=100.0)  # no position: the fetch never started
    watch.forget(KEY)
    assert not watch.observe(KEY, -1001, now=120.0)
    assert watch.observe(KEY, -1001, now=130.0)


def test_stalled_only_when_committed_records_lie_past_the_position() -> None:
    assert FetchStallWatch.stalled(position=12, committed=11, end=20)
    assert FetchStallWatch.stalled(position=-1001, committed=11, end=20)  # never fetched
    assert not FetchStallWatch.stalled(position=12, committed=11, end=12)  # caught up
    # An open transaction upstream: the last stable offset stops before it.
    assert not FetchStallWatch.stalled(position=-1001, committed=11, end=11)
