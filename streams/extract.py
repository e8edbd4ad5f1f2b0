"""The extract stage: classify a parsed document and fill its type's fields.

``Extractor`` is the plug-in port: the default ``RuleExtractor`` is local and
deterministic; another extractor (an LLM endpoint, say) must return the same shape:

    {"doc_type": str, "doc_type_confidence": float, "extractor": "<name>/<version>",
     "fields": {name: {"value", "raw", "confidence", "citations": [{page, bbox, text}]}},
     "signals": [short strings explaining the classification]}

A field the document does not state is *omitted* from ``fields``, never present with
a null or invented value; validation reports a missing required field by name.
Doc types: invoice, contract, bank_statement, w2, w9, w4, form_1040, ``other`` (readable
but fits no schema) and ``unreadable`` (no text layer: a scan that needs OCR).
"""

from __future__ import annotations

from typing import Protocol

from streams.extract_classify import classify
from streams.extract_contract import extract_contract
from streams.extract_forms import extract_form, extract_statement
from streams.extract_invoice import extract_invoice
from streams.extract_layout import Layout

__all__ = ["Extractor", "RuleExtractor", "DOC_TYPES"]

DOC_TYPES = (
    "invoice", "contract", "bank_statement", "w2", "w9", "w4", "form_1040", "other", "unreadable",
)


class Extractor(Protocol):
    name: str
    version: str

    def extract(self, parsed: dict) -> dict: ...


class RuleExtractor:
    """Layout-aware rules over the parsed document's words; no network, no model."""

    name = "rules"
    version = "1.0.0"

    def extract(self, parsed: dict) -> dict:
        layout = Layout(parsed)
        kind = classify(parsed, layout)
        signals = list(kind.signals)
        if kind.doc_type == "invoice":
            fields = extract_invoice(layout)
        elif kind.doc_type == "contract":
            fields = extract_contract(layout)
        elif kind.doc_type == "bank_statement":
            fields = extract_statement(layout)
        elif kind.doc_type in ("w2", "w9", "w4", "form_1040"):
            fields = extract_form(parsed, layout, kind.doc_type)
            if "form_values" not in fields:
                signals.append("blank form: no fillable field carries a value")
        else:
            fields = {}
        unread = _unread_pages(parsed)
        if unread and kind.doc_type != "unreadable":
            signals.append(f"unread_pages: {_ranges(unread)}")  # a code the router reads
        return {
            "doc_type": kind.doc_type,
            "doc_type_confidence": kind.confidence,
            "extractor": f"{self.name}/{self.version}",
            "fields": fields,
            "signals": signals,
        }


def _unread_pages(parsed: dict) -> list[int]:
    """Pages that hold content we could not read: a scanned image, or a page MuPDF failed
    on. A page with neither text nor images is blank and there is nothing to miss."""
    return [
        p["number"] for p in parsed.get("pages") or []
        if not p.get("has_text_layer", True) and (p.get("image_count") or p.get("error"))
    ]


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
