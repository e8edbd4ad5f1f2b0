"""Runtime adapters of the five stages: decode the record, call the pure stage
function, wrap its answer in an outcome. No Kafka here, and no pymupdf either: parse
runs in the process pool (streams.parse_pool), behind ``ParsePool.parse_many``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from streams import extract, fields, route, validate
from streams.blobs import BlobStore
from streams.errors import DocstreamsError
from streams.inputs import StoreKey
from streams.outcomes import DeadLetter, Emit, Note, Retry, StageResult
from streams.parse import PARSER_VERSION, ParseFailure
from streams.parse_pool import ParsePool, ParseRequest
from streams.runtime import InputRecord, process_each
from streams.secrets import SecretStore
from streams.settings import Settings
from streams.sink import DecisionsStore, write_output
from streams.state import StatePort

SEEN_PREFIX = "seen/"


def seen_key(doc_id: str, generation: int = 0) -> str:
    """Generation 0 keeps the key it always had, so state written before retries existed
    still marks those documents as seen."""
    return f"{SEEN_PREFIX}{doc_id}" + (f"/{generation}" if generation else "")


def _unexpected(item: InputRecord, expected: str) -> StageResult | None:
    if item.schema != expected:
        detail = item.record.get("error", "") if item.schema == "Undecodable" else item.schema
        return StageResult(DeadLetter("unsupported_record",
                                      f"expected {expected}, got {detail}", "SchemaError"))
    return None


def parsed_summary(doc: dict[str, Any], parsed_ref: str, parsed: dict[str, Any]) -> dict[str, Any]:
    pages = parsed["pages"]
    return {
        "doc": doc, "parsed_ref": parsed_ref, "parser_version": parsed["parser_version"],
        "page_count": parsed["page_count"],
        "pages_without_text": sum(1 for p in pages if not p["has_text_layer"]),
        "needs_ocr": bool(parsed["needs_ocr"]), "encrypted": bool(parsed["encrypted"]),
        "table_count": sum(len(p.get("tables", [])) for p in pages),
        "widget_count": sum(len(p.get("widgets", [])) for p in pages),
    }


class ParseStage:
    """Parse in the isolated pool, once per content digest (artifacts are cached by
    digest, so a retry, resume or replay never parses the same bytes twice)."""

    name = "parse"

    def __init__(self, blobs: BlobStore, secrets: SecretStore, pool: ParsePool) -> None:
        self.blobs, self.secrets, self.pool = blobs, secrets, pool

    def already_done(self, item: InputRecord, state: StatePort) -> str | None:
        """A document re-published to the same job (same name, same bytes) is ignored; so
        is a repeat of one `dlq retry` generation: each (doc_id, generation) is admitted once."""
        if not item.retrying and item.schema == "DocumentSubmitted":
            generation = int(item.record.get("resubmission") or 0)
            key = seen_key(item.doc["doc_id"], generation)
            if state.get(key) is not None:
                return ("already submitted to this job" if generation == 0
                        else f"retry generation {generation} already submitted")
            state.put(key, item.doc["sha256"].encode())  # in the batch: catches a twin in it
        return None

    @staticmethod
    def _cache_name(doc: dict[str, Any], password: str | None) -> str:
        """The artifact cache key: digest, parser version, and the password used, so an
        artifact decrypted with a password never serves a request without it (or with a
        wrong one). Only a hash of the password is part of the name."""
        secret = hashlib.sha256((password or "").encode()).hexdigest()[:16]
        return f"{doc['sha256']}:{PARSER_VERSION}:{secret}"

    def _cached(self, doc: dict[str, Any], password: str | None) -> StageResult | None:
        ref = self.blobs.lookup("parsed", self._cache_name(doc, password))
        if ref is None:
            return None
        parsed = json.loads(self.blobs.get(ref))
        return StageResult(Emit("DocumentParsed", parsed_summary(doc, ref, parsed), "parsed",
                                f"{parsed['page_count']} pages (cached artifact)"))

    def _first_look(self, item: InputRecord, state: StatePort) -> StageResult | ParseRequest:
        bad = _unexpected(item, "DocumentSubmitted")
        if bad:
            return bad
        doc = item.doc
        password = self.secrets.get(item.record.get("password_ref"))
        cached = self._cached(doc, password)
        if cached:
            return cached
        data = self.blobs.get(doc["blob_ref"])
        return ParseRequest(data=data, expected_sha256=doc["sha256"], password=password)

    def process_batch(self, items: list[InputRecord],
                      states: Mapping[StoreKey, StatePort]) -> list[StageResult]:
        results: list[StageResult | None] = []
        requests: list[tuple[int, ParseRequest]] = []
        for i, item in enumerate(items):
            try:
                first = self._first_look(item, states[item.store])
            except DocstreamsError as exc:
                first = StageResult(Retry(exc.reason, str(exc)) if exc.retryable
                                    else DeadLetter(exc.reason, str(exc), type(exc).__name__))
            if isinstance(first, ParseRequest):
                requests.append((i, first))
                results.append(None)
            else:
                results.append(first)
        answers = self.pool.parse_many([r for _, r in requests]) if requests else []
        for (i, request), answer in zip(requests, answers, strict=True):
            results[i] = self._outcome(items[i], answer, request.password)
        return [r for r in results if r is not None]

    def _outcome(self, item: InputRecord, answer: Any, password: str | None) -> StageResult:
        doc = item.doc
        if isinstance(answer, ParseFailure):
            return StageResult(DeadLetter(answer.reason, answer.message, "ParseFailure"))
        if isinstance(answer, DocstreamsError):
            if answer.retryable:
                return StageResult(Retry(answer.reason, str(answer)))
            return StageResult(DeadLetter(answer.reason, str(answer), type(answer).__name__))
        ref = self.blobs.put(json.dumps(answer, separators=(",", ":")).encode())
        self.blobs.bind("parsed", self._cache_name(doc, password), ref)
        flags = " (no text layer: needs OCR)" if answer["needs_ocr"] else ""
        return StageResult(Emit("DocumentParsed", parsed_summary(doc, ref, answer), "parsed",
                                f"{answer['page_count']} pages{flags}"))


class ExtractStage:
    name = "extract"

    def __init__(self, blobs: BlobStore, extractor: extract.Extractor) -> None:
        self.blobs, self.extractor = blobs, extractor

    def process_batch(self, items: list[InputRecord],
                      states: Mapping[StoreKey, StatePort]) -> list[StageResult]:
        return process_each(items, states, self.process)

    def process(self, item: InputRecord, state: StatePort) -> StageResult:
        bad = _unexpected(item, "DocumentParsed")
        if bad:
            return bad
        rec = item.record
        parsed = json.loads(self.blobs.get(rec["parsed_ref"]))
        ex = self.extractor.extract(parsed)
        out = {
            "doc": rec["doc"], "parsed_ref": rec["parsed_ref"], "page_count": rec["page_count"],
            "needs_ocr": rec["needs_ocr"], "doc_type": ex["doc_type"],
            "doc_type_confidence": float(ex["doc_type_confidence"]),
            "extractor": ex["extractor"], "fields": fields.to_avro(ex["fields"]),
            "signals": [str(s) for s in ex.get("signals", [])],
        }
        return StageResult(Emit("DocumentExtracted", out, "extracted",
                                f"{ex['doc_type']} ({len(ex['fields'])} fields)"))


def extraction_of(extracted: dict[str, Any]) -> dict[str, Any]:
    """The pure stages' view of a DocumentExtracted record."""
    return {
        "doc_type": extracted["doc_type"],
        "doc_type_confidence": extracted["doc_type_confidence"],
        "extractor": extracted["extractor"], "needs_ocr": extracted["needs_ocr"],
        "page_count": extracted["page_count"],
        "fields": fields.from_avro(extracted["fields"]), "signals": extracted["signals"],
    }


class ValidateStage:
    name = "validate"

    def process_batch(self, items: list[InputRecord],
                      states: Mapping[StoreKey, StatePort]) -> list[StageResult]:
        return process_each(items, states, self.process)

    def process(self, item: InputRecord, state: StatePort) -> StageResult:
        bad = _unexpected(item, "DocumentExtracted")
        if bad:
            return bad
        # "Today" is the submission date, so a replay next year validates the same way.
        submitted = dt.datetime.fromtimestamp(item.doc["submitted_at_ms"] / 1000, dt.UTC).date()
        checks = validate.validate(extraction_of(item.record), today=submitted)
        failed = sum(1 for c in checks if not c["ok"])
        return StageResult(Emit("DocumentValidated", {"extracted": item.record, "checks": checks},
                                "validated", f"{len(checks)} checks, {failed} failed"))


class RouteStage:
    name = "route"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def process_batch(self, items: list[InputRecord],
                      states: Mapping[StoreKey, StatePort]) -> list[StageResult]:
        return process_each(items, states, self.process)

    def process(self, item: InputRecord, state: StatePort) -> StageResult:
        bad = _unexpected(item, "DocumentValidated")
        if bad:
            return bad
        ext, checks = item.record["extracted"], item.record["checks"]
        decision = route.decide(extraction_of(ext), checks, self.settings.thresholds)
        reasons = list(decision.reasons)
        if decision.outcome == "dead_letter":
            code, _, first = (reasons[0] if reasons else "unusable: ").partition(": ")
            return StageResult(DeadLetter(code, "; ".join([first, *reasons[1:]]),
                                          "RouteDecision", page_count=ext["page_count"]))
        record = {
            "doc": ext["doc"], "page_count": ext["page_count"], "doc_type": ext["doc_type"],
            "doc_type_confidence": ext["doc_type_confidence"], "fields": ext["fields"],
            "checks": checks, "outcome": decision.outcome, "reasons": reasons,
            "pipeline_version": self.settings.pipeline_version,
            "decided_at_ms": int(time.time() * 1000),
        }
        if decision.outcome == "review":
            task = {"task_id": f"review-{ext['doc']['doc_id']}", "decision": record,
                    "created_at_ms": record["decided_at_ms"]}
            return StageResult(Emit("ReviewTask", task, "review_requested", "; ".join(reasons),
                                    topic="docs.review.tasks"))
        return StageResult(Emit("RoutingDecision", record, "decided", ext["doc_type"]))


def result_of(schema: str, record: dict[str, Any], pipeline_version: str) -> dict[str, Any]:
    """The per-document output contract, from any terminal record."""
    if schema == "ReviewTask":
        record = record["decision"]
        schema = "RoutingDecision"
    doc = record["doc"]
    base = {"doc_id": doc["doc_id"], "job_id": doc["job_id"], "source": doc["source"],
            "sha256": doc["sha256"], "pipeline_version": pipeline_version,
            "generation": doc.get("generation", 0)}
    if schema == "DeadLetter":
        return {**base, "pages": record["page_count"], "doc_type": None, "fields": {},
                "outcome": "dead_letter", "reasons": [f"{record['reason']}: {record['message']}"],
                "stage": record["stage"], "attempts": record["attempts"],
                "pipeline_version": record["pipeline_version"]}
    return {**base, "pages": record["page_count"], "doc_type": record["doc_type"],
            "doc_type_confidence": record["doc_type_confidence"],
            "fields": fields.public(fields.from_avro(record["fields"])),
            "checks": record["checks"], "outcome": record["outcome"],
            "reasons": record["reasons"], "pipeline_version": record["pipeline_version"]}


class SinkStage:
    """Terminal records → decisions table and per-document JSON, both idempotent."""

    name = "sink"

    def __init__(self, settings: Settings, sink: DecisionsStore) -> None:
        self.settings, self.sink = settings, sink

    def process_batch(self, items: list[InputRecord],
                      states: Mapping[StoreKey, StatePort]) -> list[StageResult]:
        return process_each(items, states, self.process)

    def process(self, item: InputRecord, state: StatePort) -> StageResult:
        if item.schema not in ("RoutingDecision", "ReviewTask", "DeadLetter"):
            # Never dead-letter here: the sink reads docs.deadletter itself.
            return StageResult(Note("ignored_unsupported", item.schema))
        result = result_of(item.schema, item.record, self.settings.pipeline_version)
        self.sink.upsert(result, int(time.time() * 1000))
        write_output(self.settings.out_dir, result)
        return StageResult(Note("recorded", result["outcome"]))
