"""One name per step, reused for its topic, consumer group, transactional id and metric label."""

from __future__ import annotations

STAGES = ("parse", "extract", "validate", "route", "sink")

# Topic each stage consumes (the sink reads all three terminal topics).
SUBMITTED = "docs.submitted"
PARSED = "docs.parsed"
EXTRACTED = "docs.extracted"
VALIDATED = "docs.validated"
ROUTED = "docs.routed"
REVIEW_TASKS = "docs.review.tasks"
REVIEW_DECISIONS = "docs.review.decisions"
DEADLETTER = "docs.deadletter"
EVENTS = "docs.events"
EXECUTIONS = "docs.executions"
CONTROL = "docs.control"
CONTROL_ACKS = "docs.control.acks"

STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "parse": (SUBMITTED,),
    "extract": (PARSED,),
    "validate": (EXTRACTED,),
    "route": (VALIDATED, REVIEW_DECISIONS),
    "sink": (ROUTED, REVIEW_TASKS, DEADLETTER),
}
STAGE_OUTPUT: dict[str, str | None] = {
    "parse": PARSED,
    "extract": EXTRACTED,
    "validate": VALIDATED,
    "route": ROUTED,
    "sink": None,
}

ALL_TOPICS = (
    SUBMITTED, PARSED, EXTRACTED, VALIDATED, ROUTED, REVIEW_TASKS, REVIEW_DECISIONS,
    DEADLETTER, EVENTS, EXECUTIONS, CONTROL, CONTROL_ACKS,
)
COMPACTED_TOPICS = frozenset({CONTROL})


def topic(prefix: str, name: str) -> str:
    """The physical topic name: ``prefix`` lets tests and tenants share one cluster."""
    return f"{prefix}{name}"


def group_id(prefix: str, stage: str) -> str:
    return f"{prefix}docstreams.{stage}"


def transactional_id(prefix: str, stage: str, worker_id: str) -> str:
    return f"{prefix}docstreams.{stage}.{worker_id}"


def changelog_topic(prefix: str, stage: str, source: str) -> str:
    """The changelog of ``stage``'s state for input topic ``source`` (logical name).

    State is owned per input topic-partition: a stage that reads two topics gets their
    partitions assigned independently (cooperative-sticky does not co-partition), so
    one store per partition *number* could have two owners."""
    return f"{prefix}docstreams.{stage}.{source}.state-changelog"


def changelogs(prefix: str) -> set[str]:
    return {changelog_topic(prefix, stage, source)
            for stage, sources in STAGE_INPUTS.items() for source in sources}
