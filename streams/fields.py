"""Conversions between the extractor's field dicts and their Avro form.

Extractors return ``{name: {value, raw, confidence, citations}}``; on Kafka a field is an
``ExtractedField`` whose value is JSON text, because field types differ (a date string,
a number, a list of parties).
"""

from __future__ import annotations

import json
from typing import Any


def to_avro(fields: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, f in fields.items():
        out.append({
            "name": name,
            "value_json": json.dumps(f.get("value"), ensure_ascii=False),
            "raw": str(f.get("raw") or ""),
            "confidence": float(f.get("confidence", 0.0)),
            "citations": [
                {"page": int(c["page"]), "bbox": [float(x) for x in c["bbox"]],
                 "text": str(c.get("text", ""))}
                for c in f.get("citations", [])
            ],
        })
    return out


def from_avro(fields: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f["name"]: {
            "value": json.loads(f["value_json"]),
            "raw": f["raw"],
            "confidence": f["confidence"],
            "citations": [dict(c) for c in f["citations"]],
        }
        for f in fields
    }


def public(fields: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The output contract: ``{value, confidence, citations}`` per field (plus ``raw``)."""
    return {
        name: {"value": f["value"], "confidence": round(f["confidence"], 3),
               "citations": f["citations"], "raw": f.get("raw", "")}
        for name, f in fields.items()
    }
