"""What a stage returns: outcomes are data, routed by the runtime.

A stage never talks to Kafka. It returns one of these per input record and the
runtime turns it into produced records, lifecycle events and state changes, all
inside one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Emit:
    """Pass the document on: ``record`` (of schema ``schema``) goes to the stage's output
    topic, or to ``topic`` when the stage has several (route → review tasks)."""

    schema: str
    record: dict[str, Any]
    transition: str
    detail: str = ""
    topic: str | None = None


@dataclass(frozen=True)
class Retry:
    """A transient failure: try again after a backoff, without blocking the partition."""

    reason: str
    message: str


@dataclass(frozen=True)
class DeadLetter:
    """The document cannot go on; ``reason`` is a stable code, ``message`` says why."""

    reason: str
    message: str
    error_class: str = "DocumentError"
    page_count: int = 0


@dataclass(frozen=True)
class Note:
    """Nothing to pass on, but a transition to audit (a re-published duplicate, the sink's
    record written)."""

    transition: str
    detail: str = ""


@dataclass
class StageResult:
    """Outcome plus the extra records a stage asked for (e.g. the sink's own records)."""

    outcome: Emit | Retry | DeadLetter | Note
    extra: list[Emit] = field(default_factory=list)


Outcome = Emit | Retry | DeadLetter | Note
