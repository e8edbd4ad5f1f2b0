"""A stage runner's side of pause and resume: what the desired state asks of this
stage, what the runner has applied, and which commands it has acknowledged.

The Kafka calls (pause, seek, resume, the ack record) stay in the runtime; this class
only decides, so that the decisions can be unit-tested without a broker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from streams.control import ControlView, Desired


@dataclass
class PauseGate:
    stage: str
    control: ControlView | None
    stage_paused: bool = False          # applied to the consumer
    paused_jobs: frozenset[str] = frozenset()
    acked: set[str] = field(default_factory=set)
    drained: int = 0                    # documents committed by the batch in flight
    aborted: bool = False               # the batch in flight was aborted (--now)

    def desired(self) -> Desired:
        return self.control.desired() if self.control is not None else Desired()

    def version(self) -> int:
        return self.desired().version

    def wants_stage_paused(self, desired: Desired) -> bool:
        return desired.stage_pause(self.stage) is not None

    def unacked(self, desired: Desired) -> list[dict[str, Any]]:
        return [e for e in desired.entries.values() if e["command_id"] not in self.acked]

    def abort_requested(self, since_version: int) -> bool:
        """A ``--now`` pause touching this stage arrived while the batch was in flight."""
        desired = self.desired()
        if desired.version == since_version:
            return False
        return any(e["state"] == "paused" and e.get("mode") == "now"
                   and desired.applies_to(e, self.stage) for e in self.unacked(desired))

    def note_batch(self, since_version: int, documents: int) -> None:
        if self.version() != since_version:
            self.drained += documents

    def acked_all(self, entries: list[dict[str, Any]]) -> None:
        self.acked.update(e["command_id"] for e in entries)
        self.drained, self.aborted = 0, False


def retention_warning(paused_at_ms: int, retention_ms: int, now_ms: int | None = None,
                      fraction: float = 0.8) -> str | None:
    """A warning once a pause has lasted ``fraction`` of the retention of a topic it holds
    back: past the retention, unread records would be deleted before resume."""
    if retention_ms is None or retention_ms < 0:
        return None
    age = (now_ms if now_ms is not None else int(time.time() * 1000)) - paused_at_ms
    if age >= fraction * retention_ms:
        return (f"paused for {age / 3_600_000:.1f} h, {age / retention_ms:.0%} of the topic "
                f"retention ({retention_ms / 3_600_000:.1f} h): resume before records expire")
    return None
