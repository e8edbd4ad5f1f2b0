"""When a runner that its group no longer lists rebuilds its consumer (pure logic)."""

from streams.runtime import MembershipWatch


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
