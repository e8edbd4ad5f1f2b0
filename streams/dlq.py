"""Dead letters: what is in ``docs.deadletter``, what became of each document since, and
re-submission after a fix (``docstreams dlq list|show|retry``).

A document's dead-letter state is folded from its audit trail (``docs.events``, in order:
one partition per doc_id), read with read_committed:

- ``recording``: dead-lettered, but the sink has not recorded that outcome yet;
- ``dead``: the dead letter is recorded: this is what ``dlq retry`` re-submits;
- ``retrying``: re-submitted as generation g (a ``resubmitted`` event), not finished yet;
- ``resolved``: after a retry it reached a terminal outcome other than a dead letter
  (decided, review). ``dlq list`` hides these unless asked (``--all``).

Retry is idempotent. The next generation is computed from the trail: only a ``dead``
document is re-submitted, as generation g+1 (g = its latest generation), so running the
same ``dlq retry`` twice resubmits once (the second run sees ``retrying`` or ``resolved``);
and two runs racing both publish generation g+1, which the parse stage admits once.
Retry waits for ``dead`` rather than ``recording`` so that the sink always records the old
dead letter before the new outcome, never after it (it reads the two from different topics).
"""

from __future__ import annotations

import getpass
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams import names, records
from streams.blobs import BlobStore
from streams.errors import DocstreamsError
from streams.kafka import high_watermark, reader
from streams.publish import RESUBMISSION_SEQ, Publisher, Resubmission, password_ref_for
from streams.secrets import SecretStore
from streams.settings import Settings

__all__ = [
    "DEAD", "RECORDING", "RESOLVED", "RETRYING", "DeadDocument", "RetryPlan", "fold", "load",
    "plan_retry", "retry", "select",
]

RECORDING, DEAD, RETRYING, RESOLVED = "recording", "dead", "retrying", "resolved"
STATES = (RECORDING, DEAD, RETRYING, RESOLVED)
RESUBMIT, SKIP, NOT_FOUND = "resubmit", "skip", "not_found"


@dataclass
class DeadDocument:
    """Every dead letter of one document, oldest first, and what became of it since."""

    doc_id: str
    job_id: str
    source: str
    letters: list[dict[str, Any]] = field(default_factory=list)
    resubmissions: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0  # the latest retry generation submitted
    state: str | None = None
    outcome: str | None = None  # the last outcome the sink recorded
    _dead_generations: list[int] = field(default_factory=list, repr=False)

    @property
    def latest(self) -> dict[str, Any]:
        return self.letters[-1]

    @property
    def retryable(self) -> bool:
        """An undecodable record has no document behind it to send again."""
        return bool(self.latest["doc"]["blob_ref"] and self.job_id)

    def apply(self, event: Mapping[str, Any]) -> None:
        """One lifecycle event of this document, in order."""
        stage, transition = event["stage"], event["transition"]
        if stage == "submit" and transition == "resubmitted":
            generation = int(event["seq"]) // RESUBMISSION_SEQ
            if generation > self.generation:  # a repeat of a generation is ignored by parse
                self.generation, self.state = generation, RETRYING
                self.resubmissions.append({"generation": generation, "at_ms": event["at_ms"],
                                           "by": event["worker"], "detail": event["detail"]})
        elif transition == "dead_lettered":
            self._dead_generations.append(self.generation)
            self.state = RECORDING
        elif stage == "sink" and transition == "recorded":
            # A sink replay re-records old outcomes: only the expected step moves the state.
            if event["detail"] == "dead_letter":
                if self.state == RECORDING:
                    self.state, self.outcome = DEAD, "dead_letter"
            elif self.state in (None, RETRYING):
                self.state, self.outcome = RESOLVED, event["detail"]

    def finish(self) -> None:
        """Give each dead letter the generation it belongs to (the n-th dead_lettered event
        and the n-th dead letter are written in one transaction); without an audit trail
        (expired by retention), the dead letter stands."""
        gens = self._dead_generations[-len(self.letters):]
        offset = len(self.letters) - len(gens)
        for i, letter in enumerate(self.letters):
            letter["generation"] = gens[i - offset] if i >= offset else None
        if self.state is None:
            self.state = DEAD

    def summary(self) -> dict[str, Any]:
        last = self.latest
        return {
            "doc_id": self.doc_id, "job_id": self.job_id, "source": self.source,
            "state": self.state, "generation": self.generation, "outcome": self.outcome,
            "stage": last["stage"], "reason": last["reason"], "error_class": last["error_class"],
            "message": last["message"], "attempts": len(last["attempts"]),
            "dead_lettered_at_ms": last["dead_lettered_at_ms"],
            "dead_letters": len(self.letters), "retries": len(self.resubmissions),
        }

    def detail(self) -> dict[str, Any]:
        """Everything: the document, each dead letter with its attempts, each retry."""
        history = [{k: letter[k] for k in (
            "generation", "stage", "reason", "error_class", "message", "attempts",
            "source_topic", "source_partition", "source_offset", "page_count",
            "pipeline_version", "dead_lettered_at_ms")} for letter in self.letters]
        return {**self.summary(), "doc": dict(self.latest["doc"]), "history": history,
                "resubmissions": list(self.resubmissions)}


def fold(letters: Iterable[Mapping[str, Any]],
         events: Iterable[Mapping[str, Any]]) -> dict[str, DeadDocument]:
    """Dead letters (in topic order) and the audit events of their documents (in topic
    order) into one :class:`DeadDocument` per doc_id."""
    docs: dict[str, DeadDocument] = {}
    for letter in letters:
        ref = letter["doc"]
        doc = docs.get(ref["doc_id"])
        if doc is None:
            doc = docs[ref["doc_id"]] = DeadDocument(ref["doc_id"], ref["job_id"], ref["source"])
        doc.letters.append(dict(letter))
    for event in events:
        if event["subject"] in docs:
            docs[event["subject"]].apply(event)
    for doc in docs.values():
        doc.finish()
    return docs


def select(docs: Mapping[str, DeadDocument], *, job: str | None = None,
           stage: str | None = None, reason: str | None = None,
           include_resolved: bool = False) -> list[DeadDocument]:
    """Documents whose latest dead letter matches, most recent first."""
    out = [d for d in docs.values()
           if (job is None or d.job_id == job)
           and (stage is None or d.latest["stage"] == stage)
           and (reason is None or d.latest["reason"] == reason)
           and (include_resolved or d.state != RESOLVED)]
    return sorted(out, key=lambda d: (-d.latest["dead_lettered_at_ms"], d.doc_id))


def present(docs: Mapping[str, DeadDocument], include_resolved: bool = False
            ) -> dict[str, Counter[str]]:
    """Counts of the jobs, stages and reasons the dead letters hold (by latest letter),
    to tell a user whose filter matched nothing what would have matched."""
    shown = [d for d in docs.values() if include_resolved or d.state != RESOLVED]
    return {"job": Counter(d.job_id for d in shown),
            "stage": Counter(d.latest["stage"] for d in shown),
            "reason": Counter(d.latest["reason"] for d in shown)}


@dataclass(frozen=True)
class RetryPlan:
    doc_id: str
    action: str  # resubmit | skip | not_found
    why: str
    generation: int | None = None  # the generation to submit, or the latest one
    document: DeadDocument | None = None

    def report(self) -> dict[str, Any]:
        doc = self.document
        return {"doc_id": self.doc_id, "action": self.action, "why": self.why,
                "generation": self.generation, "job_id": doc.job_id if doc else None,
                "source": doc.source if doc else None,
                "reason": doc.latest["reason"] if doc else None}


def plan_for(doc: DeadDocument) -> RetryPlan:
    g = doc.generation
    if not doc.retryable:
        return RetryPlan(doc.doc_id, SKIP, "the record could not be decoded: there is no "
                         "document to send again", g, doc)
    if doc.state == DEAD:
        return RetryPlan(doc.doc_id, RESUBMIT, f"re-submitted as retry generation {g + 1}",
                         g + 1, doc)
    if doc.state == RECORDING:
        return RetryPlan(doc.doc_id, SKIP, "dead-lettered, but the sink has not recorded it "
                         "yet (is the sink stage running?); retry once it has", g, doc)
    if doc.state == RETRYING:
        return RetryPlan(doc.doc_id, SKIP, f"already re-submitted as generation {g}, "
                         "not finished yet", g, doc)
    return RetryPlan(doc.doc_id, SKIP, f"already resolved by retry generation {g}: "
                     f"{doc.outcome}", g, doc)


def plan_retry(docs: Mapping[str, DeadDocument], doc_ids: Sequence[str] = (), *,
               job: str | None = None, stage: str | None = None,
               reason: str | None = None) -> list[RetryPlan]:
    """What ``dlq retry`` does to each document: named ones in the order given, else every
    unresolved document of ``job`` whose latest dead letter matches ``stage``/``reason``."""
    if doc_ids:
        return [plan_for(docs[d]) if d in docs
                else RetryPlan(d, NOT_FOUND, "no dead letter for this document")
                for d in dict.fromkeys(doc_ids)]
    matching = select(docs, job=job, stage=stage, reason=reason)
    return [plan_for(d) for d in sorted(matching, key=lambda d: (d.latest["dead_lettered_at_ms"], d.doc_id))]


# -- reading the topics ------------------------------------------------------------------


def _scan(settings: Settings, bootstrap: str, logical: str,
          keep: Callable[[bytes | None], bool] | None = None,
          timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every committed record of a topic up to its end as of now, in partition order;
    ``keep`` filters on the key before decoding. A missing topic reads as empty."""
    topic = names.topic(settings.topic_prefix, logical)
    consumer = reader(settings, bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        ends = {tp.partition: high_watermark(consumer, tp) for tp in parts}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([tp for tp in parts if tp.partition in todo])
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise DocstreamsError(
                    f"could not read {topic} to its end in {timeout:.0f} s (a transaction "
                    "left open?); try again", reason="read_timeout", retryable=True)
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() or (keep is not None and not keep(msg.key())):
                    continue
                try:
                    out.append(records.decode(msg.value() or b"")[1])
                except DocstreamsError:
                    continue  # not ours to judge here; the stages dead-letter such records
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= ends[tp.partition]:
                    todo.discard(tp.partition)
        return out
    finally:
        consumer.close()


def load(settings: Settings, bootstrap: str, *, doc_ids: Iterable[str] = (),
         job: str | None = None) -> dict[str, DeadDocument]:
    """Read ``docs.deadletter`` (only ``doc_ids`` if given, only ``job``'s if given) and the
    audit trail of those documents, and fold them."""
    wanted = {d.encode() for d in doc_ids}
    letters = _scan(settings, bootstrap, names.DEADLETTER,
                    (lambda key: key in wanted) if wanted else None)
    if job is not None:
        letters = [x for x in letters if x["doc"]["job_id"] == job]
    keys = {x["doc"]["doc_id"].encode() for x in letters}
    events = _scan(settings, bootstrap, names.EVENTS, lambda key: key in keys) if keys else []
    return fold(letters, events)


# -- retry -------------------------------------------------------------------------------


def password_ref(secrets: SecretStore, doc: Mapping[str, Any], generation: int,
                 password: str | None) -> str | None:
    """A new password gets this generation's own secret; without one, the newest earlier
    generation's secret (the one the document was first published with, say) carries over."""
    if password is not None:
        ref = password_ref_for(doc["job_id"], doc["doc_id"], generation)
        secrets.put(ref, password)
        return ref
    for g in range(generation - 1, -1, -1):
        ref = password_ref_for(doc["job_id"], doc["doc_id"], g)
        if secrets.get(ref) is not None:
            return ref
    return None


def _password_for(source: str, password: str | None,
                  passwords: Mapping[str, str] | None) -> str | None:
    if password is not None or not passwords:
        return password
    return passwords.get(source, passwords.get(PurePosixPath(source).name))


def retry(settings: Settings, bootstrap: str, doc_ids: Sequence[str] = (), *,
          job: str | None = None, stage: str | None = None, reason: str | None = None,
          password: str | None = None, passwords: Mapping[str, str] | None = None,
          note: str = "", dry_run: bool = False,
          submitted_by: str | None = None) -> list[dict[str, Any]]:
    """Re-submit dead-lettered documents from parse, each at most once per generation.
    Returns one report per document considered (see :meth:`RetryPlan.report`)."""
    if not doc_ids and not job:
        raise DocstreamsError("name the documents to retry, or a --job", reason="bad_request")
    docs = load(settings, bootstrap, doc_ids=doc_ids, job=None if doc_ids else job)
    plans = plan_retry(docs, doc_ids, job=job, stage=stage, reason=reason)
    blobs, secrets = BlobStore(settings.blob_dir), SecretStore(settings.home / "secrets")
    final: list[RetryPlan] = []
    todo: list[Resubmission] = []
    for plan in plans:
        generation = plan.generation or 0
        if plan.action == RESUBMIT and plan.document is not None and generation:
            ref = plan.document.latest["doc"]
            if not blobs.exists(ref["blob_ref"]):
                plan = replace(plan, action=SKIP, why=f"its bytes ({ref['blob_ref']}) are "
                               f"missing from the blob store {blobs.root}")
            elif not dry_run:
                pw = _password_for(ref["source"], password, passwords)
                todo.append(Resubmission(dict(ref), generation,
                                         password_ref(secrets, ref, generation, pw), note))
            else:
                plan = replace(plan, why=f"would be {plan.why} (dry run)")
        final.append(plan)
    if todo:
        by = submitted_by or f"{getpass.getuser()}@{socket.gethostname()}"
        with Publisher(settings, bootstrap, submitted_by=by) as pub:
            pub.resubmit_many(todo)
    return [p.report() for p in final]
