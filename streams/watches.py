"""A stage runner's watches over its own consumer (pure decisions; the runtime makes the
Kafka calls). Each guards against a client state that does not heal by itself."""

from __future__ import annotations

from dataclasses import dataclass, field

# How long an idle partition may stand still, with committed records to read past its
# position, before its fetch is restarted. Well above a fetch round trip and an offset
# lookup after an assignment (both well under a second here), well below a test's patience.
STALL_AFTER_S = 10.0

PartitionKey = tuple[str, int]


@dataclass
class MembershipWatch:
    """Decides when a runner whose group no longer lists it rebuilds its consumer.

    Seen once after a broker restart: a runner's consumer dropped out of its group and
    never rejoined (7 minutes and counting) while its loop kept turning, so the group's
    other members did all the work, or none was done if it was alone. A rejoin takes
    seconds; absent at ``misses`` checks in a row (MEMBERSHIP_CHECK_S apart) means it
    will not come back by itself. A check that cannot tell (the broker is away) counts
    neither way."""

    misses: int = 3
    missed: int = 0

    def observe(self, listed: bool | None) -> bool:
        """Note one check; return whether to rebuild the consumer now."""
        if listed is not None:
            self.missed = 0 if listed else self.missed + 1
        return self.missed >= self.misses


@dataclass
class FetchStallWatch:
    """Decides when an assigned, unpaused partition that is not being fetched gets its
    fetch restarted.

    Twice in clean-clone CI a rebalance regression test timed out with records left on
    partitions that had come back to a runner after a rebalance around a pause; it was
    not reproduced locally and its cause is not known. Whatever client state leaves a
    partition unfetched (a pause flag kept from before a rebalance, a fetcher that never
    started), it looks the same from the runner: the runner is idle, the partition's
    position stands still, and its last stable offset is past it. This watch bounds such
    a stall to about two ``after_s`` instead of forever.

    The runtime tells ``due`` the position at each idle check; once it has stood still
    for ``after_s`` since the last look, the runtime asks the broker for the partition's
    last stable offset and tells ``looked`` what it found. A restart takes records
    waiting past the same position at two looks in a row, ``after_s`` apart: records
    that have only just landed on a partition idle for long (a stage upstream resumed,
    say) are fetched before the second look, and do not count as a stall."""

    after_s: float = STALL_AFTER_S
    _still: dict[PartitionKey, tuple[int, float]] = field(default_factory=dict)
    _waiting: dict[PartitionKey, int] = field(default_factory=dict)

    def due(self, key: PartitionKey, position: int, now: float) -> bool:
        """Whether to look at the partition's end now."""
        seen = self._still.get(key)
        if seen is None or seen[0] != position:
            self._still[key] = (position, now)
            self._waiting.pop(key, None)
            return False
        if now - seen[1] < self.after_s:
            return False
        self._still[key] = (position, now)  # the next look, after_s from this one
        return True

    def looked(self, key: PartitionKey, position: int, waiting: bool) -> bool:
        """Note whether committed records waited past ``position``; return whether to
        restart the fetch (they waited there at the previous look too)."""
        if not waiting:
            self._waiting.pop(key, None)
            return False
        if self._waiting.get(key) == position:
            self.forget(key)
            return True
        self._waiting[key] = position
        return False

    def forget(self, key: PartitionKey) -> None:
        """The partition was restarted or left this runner."""
        self._still.pop(key, None)
        self._waiting.pop(key, None)

    @staticmethod
    def waiting(position: int, committed: int, end: int) -> bool:
        """Whether committed records wait past where the partition stands. ``position``
        is negative when the client has none (its fetch never started); ``committed``
        is negative when the group has no commit (the caller then passes the log start)."""
        return end > max(position, committed)
