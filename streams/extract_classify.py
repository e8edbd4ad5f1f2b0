"""Document-type classification by weighted, explainable cues.

Each type has a list of cues (a pattern and a weight). A cue counts once however often
it matches, so long documents do not win by volume; cues found in the *heading* (the
first rows of the first page that has text) count double, because a title says what a
document is and body text only mentions things. Every matched cue becomes a signal,
so a reviewer can see why a document was called what it was.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from streams.extract_layout import Layout

SCHEMA_TYPES = ("invoice", "contract", "bank_statement", "w2", "w9", "w4", "form_1040")

# Below this score no schema type is plausible and the document is "other".
_MIN_SCORE = 5.0
# Under this many characters on image-bearing pages a "text layer" is scanner noise.
_THIN_TEXT_CHARS = 40


@dataclass(frozen=True)
class Cue:
    name: str
    pattern: re.Pattern[str]
    weight: float


def _cues(*items: tuple[str, str, float]) -> tuple[Cue, ...]:
    return tuple(Cue(name, re.compile(rx, re.IGNORECASE), w) for name, rx, w in items)


_CUES: dict[str, tuple[Cue, ...]] = {
    "invoice": _cues(
        ("invoice word", r"\b(?:tax\s+)?invoices?\b|\bfacture\b|\brechnung\b|\bfactuur\b"
         r"|\bfattura\b|\bfactura\b", 3),
        ("invoice number label", r"\binvoice\s*(?:no|number|nr|#)|\bfacture\s*n\s*[°o]"
         r"|\brechnungs-?(?:nr|nummer)|\bfactuurnummer|\bn[°o]\s*de\s*facture", 3),
        ("invoice date label", r"\binvoice\s*date|\brechnungsdatum|\bfactuurdatum"
         r"|\bdate\s*de\s*facture", 2),
        ("total label", r"\bgrand\s+total\b|\btotal\s+(?:ttc|amount|due|eur|for this invoice)"
         r"|\bamount\s+due\b|\bbedrag\s+inclusief|\bgesamtbetrag|\bmontant\s+ttc", 2),
        ("tax on sale", r"\b(?:vat|gst|tva|mwst|btw|ust)\b", 1),
        ("line items", r"\b(?:unit\s+price|qty|quantity|menge|désignation|aantal|prix)\b", 1),
        ("billing party", r"\b(?:bill\s+to|billing\s+address|sold\s+by|kundennr|klantnummer"
         r"|customer\s+(?:no|number))\b", 1),
    ),
    "contract": _cues(
        ("agreement word", r"\bagreement\b|\bcontract\b|\bcontrat\b|\bvertrag\b", 3),
        ("party recital", r"\bby\s+and\s+(?:between|among)\b|\bparty\s+a\b|\bparty\s+b\b"
         r"|\bhereinafter\b|\bconfirm\s+their\s+agreement", 2),
        ("this agreement", r"\bthis\s+(?:\w+\s+){0,3}agreement\b", 2),
        ("execution clause", r"\bin\s+witness\s+whereof\b|\(seal\)|\(signature\)", 2),
        ("governing law",
         r"\b(?:governed|construed)\s+(?:\w+\s+){0,4}(?:by|with)\s+the\s+laws?\b", 2),
        ("term clause", r"\bterm\s+(?:and|of)\s+(?:termination|this\s+agreement)\b"
         r"|\bterminat\w+\s+this\s+agreement\b", 1),
        ("obligation words", r"\b(?:hereby|hereto|hereunder|herein)\b", 1),
    ),
    "bank_statement": _cues(
        ("statement title", r"\b(?:bank|account|consolidated|checking|savings)\s+statement\b"
         r"|\bstatement\s+of\s+account\b|\bkontoauszug\b|\brelevé\s+de\s+compte\b", 4),
        ("balance lines", r"\b(?:opening|closing|previous|new|beginning|ending|available)"
         r"\s+balance\b", 3),
        ("movements", r"\bwithdrawals?\b.*\bdeposits?\b|\bdebits?\b.*\bcredits?\b", 2),
        ("account number", r"\baccount\s+(?:number|no)\b", 1),
        ("bank words", r"\bcredit\s+union\b|\bmember\s+fdic\b|\bchecks?\s+paid\b|\bcheck\s*#", 1),
    ),
    "w2": _cues(
        ("W-2 title", r"\bwage\s+and\s+tax\s+statement\b", 6),
        ("W-2 form id", r"\bform\s+w-2\b|\bw-2\b", 3),
        ("W-2 boxes", r"\bsocial\s+security\s+wages\b|\bmedicare\s+wages\b", 2),
    ),
    "w9": _cues(
        # The W-9 title wraps over two rows, so either half identifies it.
        ("W-9 title",
         r"\brequest\s+for\s+taxpayer\b|\bidentification\s+number\s+and\s+certification", 6),
        ("W-9 form id", r"\bform\s+w-9\b|\bw-9\b", 3),
        ("W-9 terms", r"\bbackup\s+withholding\b|\bexempt\s+payee\s+code\b", 1),
    ),
    "w4": _cues(
        ("W-4 title", r"\bemployee[’']s\s+withholding\s+(?:certificate|allowance)", 6),
        ("W-4 form id", r"\bform\s+w-4\b|\bw-4\b", 3),
        ("W-4 steps", r"\bmultiple\s+jobs\s+worksheet\b", 1),
    ),
    "form_1040": _cues(
        ("1040 title", r"\bindividual\s+income\s+tax\b", 5),
        ("1040 form id", r"\b(?:form|tax)\s+1040\b", 3),
        ("1040 lines", r"\bfiling\s+status\b|\badjusted\s+gross\s+income\b", 1),
    ),
}


@dataclass(frozen=True)
class Classification:
    doc_type: str
    confidence: float
    signals: tuple[str, ...]


def _heading(layout: Layout, rows: int = 12) -> str:
    for number in sorted(layout.rows):
        if layout.rows[number]:
            return "\n".join(" ".join(s.text for s in row) for row in layout.rows[number][:rows])
    return ""


def _unreadable(parsed: dict, layout: Layout) -> str | None:
    pages = parsed.get("pages") or []
    if parsed.get("needs_ocr") or layout.word_count == 0:
        if pages and not any(p.get("image_count") or p.get("error") for p in pages):
            # Nothing to OCR either: blank pages, not a scan.
            return f"blank: no text and no images on any of {len(pages)} page(s)"
        return f"no text layer on any of {len(pages)} page(s)"
    chars = sum(len(w) for w in layout.text.split())
    if chars < _THIN_TEXT_CHARS and pages and all(p.get("image_count", 0) > 0 for p in pages):
        return f"only {chars} characters of text over scanned page images"
    return None


def _score(layout: Layout, heading: str) -> dict[str, tuple[float, list[str]]]:
    scores: dict[str, tuple[float, list[str]]] = {}
    for doc_type, cues in _CUES.items():
        total, hits = 0.0, []
        for cue in cues:
            if cue.pattern.search(heading):
                total += 2 * cue.weight
                hits.append(f"{doc_type}: {cue.name} in heading (+{2 * cue.weight:g})")
            elif cue.pattern.search(layout.text):
                total += cue.weight
                hits.append(f"{doc_type}: {cue.name} (+{cue.weight:g})")
        scores[doc_type] = (total, hits)
    return scores


def classify(parsed: dict, layout: Layout) -> Classification:
    reason = _unreadable(parsed, layout)
    if reason is not None:
        return Classification("unreadable", 1.0, (f"unreadable: {reason}",))
    scores = _score(layout, _heading(layout))
    ranked = sorted(scores.items(), key=lambda kv: kv[1][0], reverse=True)
    (best, (top, hits)), (runner_up, (second, _)) = ranked[0], ranked[1]
    summary = f"scores: {best} {top:g}, {runner_up} {second:g}"
    if top < _MIN_SCORE:
        # Confident it is "other" in proportion to how weak the best schema's case is.
        confidence = round(1.0 - 0.5 * top / _MIN_SCORE, 2)
        return Classification("other", confidence, (*hits, summary, "no schema type fits"))
    strength = 1.0 - math.exp(-top / 6.0)  # saturates: 6 -> 0.63, 12 -> 0.86, 18 -> 0.95
    margin = (top - second) / top  # 1.0 when nothing else scored
    confidence = round(strength * (0.6 + 0.4 * margin), 2)
    return Classification(best, confidence, (*hits, summary))
