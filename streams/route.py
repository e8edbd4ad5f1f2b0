"""The route stage: decide, send to review, or dead-letter, with reasons.

Every reason starts with a stable code (``low_confidence:``, ``failed_check:``...) that
dashboards and the review inbox can group by, followed by words a reviewer can act on.
Thresholds are configuration (``Thresholds`` in streams.settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streams.settings import Thresholds

__all__ = ["RouteDecision", "decide"]

Outcome = Literal["decided", "review", "dead_letter"]

# Signals the extractor emits with these prefixes are read here (see streams.extract).
_UNREADABLE_SIGNAL = "unreadable:"
_UNREAD_PAGES_SIGNAL = "unread_pages:"


@dataclass(frozen=True)
class RouteDecision:
    outcome: Outcome
    reasons: tuple[str, ...]


def _no_text_layer(extraction: dict) -> str:
    detail = next((s[len(_UNREADABLE_SIGNAL):].strip() for s in extraction.get("signals", [])
                   if isinstance(s, str) and s.startswith(_UNREADABLE_SIGNAL)), "")
    if detail.startswith("blank:"):
        return ("blank_document: the document has nothing to read"
                f" ({detail[len('blank:'):].strip()}); check that the right file was sent")
    detail = f" ({detail})" if detail else ""
    return ("no_text_layer: the document is scanned or image-only" + detail
            + "; reading it needs OCR, which this pipeline does not run")


def _field_reasons(fields: dict, review_below: float) -> list[str]:
    reasons = []
    for name, entry in fields.items():
        confidence = entry.get("confidence") if isinstance(entry, dict) else None
        if not isinstance(confidence, int | float):
            reasons.append(f"low_confidence: {name} has no confidence score")
        elif confidence < review_below:
            reasons.append(f"low_confidence: {name} {confidence:.2f} < {review_below:.2f}")
    return reasons


def _check_reasons(checks: list[dict]) -> list[str]:
    reasons = []
    for check in checks:
        if not check.get("ok", False):
            where = f" {check['field']}" if check.get("field") else ""
            reasons.append(f"failed_check: {check.get('rule', '?')}{where}: "
                           f"{check.get('message', '')}".rstrip(": "))
    return reasons


def decide(extraction: dict, checks: list[dict], thresholds: Thresholds) -> RouteDecision:
    """Route one document from its extraction and its validation results."""
    doc_type = extraction.get("doc_type")
    if doc_type == "unreadable" or extraction.get("needs_ocr"):
        return RouteDecision("dead_letter", (_no_text_layer(extraction),))
    if not isinstance(doc_type, str) or not isinstance(extraction.get("fields"), dict):
        return RouteDecision("dead_letter", (
            "malformed_extraction: the extractor returned no doc_type or no fields mapping",))
    reasons: list[str] = []
    if doc_type == "other":
        reasons.append("no_schema: the document fits none of the extraction schemas "
                       "(invoice, contract, bank statement, W-2, W-9, W-4, 1040); "
                       "a person should say what it is")
    else:
        confidence = extraction.get("doc_type_confidence")
        if not isinstance(confidence, int | float) or confidence < thresholds.classify_below:
            shown = f"{confidence:.2f}" if isinstance(confidence, int | float) else "missing"
            reasons.append(f"low_classification_confidence: {doc_type} {shown} "
                           f"< {thresholds.classify_below:.2f}")
    reasons += _check_reasons(checks)
    reasons += _field_reasons(extraction["fields"], thresholds.review_below)
    reasons += [f"unread_pages: pages {s[len(_UNREAD_PAGES_SIGNAL):].strip()} have no text "
                "layer and were not read" for s in extraction.get("signals", [])
                if isinstance(s, str) and s.startswith(_UNREAD_PAGES_SIGNAL)]
    if reasons:
        return RouteDecision("review", tuple(reasons))
    count = len(extraction["fields"])
    return RouteDecision("decided", (
        f"confident_and_valid: {doc_type}, {count} fields all >= {thresholds.review_below:.2f}, "
        f"{len(checks)} checks passed",))
