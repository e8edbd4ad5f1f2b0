"""Underwriting documents: IRS forms (W-2, W-9, W-4, 1040) and bank statements.

Only what is cheap and real for now: the AcroForm values a filler typed in, the form's
tax year or revision, and a statement's date, account holder and account numbers. The
box-by-box schemas (wages, withholding, transactions) are a later issue; until then a
blank form yields no ``form_values`` and validation calls it incomplete.
"""

from __future__ import annotations

import re

from streams.extract_layout import Layout, Segment, Word, after_label, cite, field
from streams.extract_values import find_dates, guess_language

_EMPTY_WIDGET_VALUES = {"", "off", "no", "none", "false", "0"}
_YEAR_WORD = re.compile(r"^\(?((?:19|20)\d\d)[),.]?$")
_REVISION = re.compile(
    r"\bRev\.\s*(?P<month>[A-Z][a-z]+)\.?\s+(?P<year>(?:19|20)\d\d)", re.IGNORECASE
)
_FORM_TITLES = {
    "w2": re.compile(r"\bwage\s+and\s+tax\s+statement\b", re.IGNORECASE),
    "w9": re.compile(r"\brequest\s+for\s+taxpayer\b", re.IGNORECASE),
    "w4": re.compile(r"\bwithholding\s+certificate\b", re.IGNORECASE),
    "form_1040": re.compile(r"\bindividual\s+income\s+tax\b", re.IGNORECASE),
}


def _form_values(parsed: dict) -> dict | None:
    """Every AcroForm field a person filled in: {field name: value}, cited by widget box."""
    values, citations = {}, []
    for page in parsed.get("pages") or []:
        for widget in page.get("widgets") or []:
            value = widget.get("value")
            if value is None or str(value).strip().lower() in _EMPTY_WIDGET_VALUES:
                continue
            values[str(widget.get("name"))] = value
            bbox = [round(float(v), 2) for v in widget["bbox"]]
            citations.append({"page": int(page["number"]), "bbox": bbox, "text": str(value)})
    if not values:
        return None
    # Widget values are exactly what was typed; what each box *means* is not mapped yet.
    return {"value": values, "raw": "; ".join(f"{k}={v}" for k, v in values.items()),
            "confidence": 0.95, "citations": citations}


def _title_rows(layout: Layout, doc_type: str) -> list[list[Segment]]:
    """The rows around the form's title on the first page that carries it."""
    title = _FORM_TITLES[doc_type]
    for _, rows in sorted(layout.rows.items()):
        for i, row in enumerate(rows):
            if title.search(" ".join(s.text for s in row)):
                return rows[max(0, i - 3) : i + 4]
    return []


def _tax_year(layout: Layout, doc_type: str) -> dict | None:
    words = [w for row in _title_rows(layout, doc_type) for s in row for w in s.words]
    years: dict[int, Word] = {}
    for word in words:
        m = _YEAR_WORD.match(word.text)
        if m:
            years.setdefault(int(m[1]), word)
    if len(years) != 1:  # none, or several candidates: do not pick one
        return None
    year, word = next(iter(years.items()))
    return field(year, word.text, 0.85, [word])


def _revision(layout: Layout) -> dict | None:
    for segment in layout.segments():
        m = _REVISION.search(segment.text)
        if m:
            dates = find_dates(f"1 {m['month']} {m['year']}")
            if dates:
                value = dates[0].value.strftime("%Y-%m")
                return field(value, m.group(0), 0.9, segment.words_in(*m.span()))
    return None


def extract_form(parsed: dict, layout: Layout, doc_type: str) -> dict[str, dict]:
    found = {
        "form_values": _form_values(parsed),
        "form_revision" if doc_type == "w9" else "tax_year":
            _revision(layout) if doc_type == "w9" else _tax_year(layout, doc_type),
    }
    return {name: f for name, f in found.items() if f is not None}


# --- bank statements ------------------------------------------------------------------

_STATEMENT_LABEL = re.compile(r"\bstatement(?:\s+date)?\b\s*:?", re.IGNORECASE)
# The date may sit after the label or under it, introduced by "for", "as of", "ending".
_DATE_INTRO = re.compile(
    r"^(?:(?:date|for|as\s+of|ending|dated|period\s+ending)\b\s*:?\s*)?", re.IGNORECASE
)
_ACCOUNT_NUMBER = re.compile(r"\baccount\s+(?:number|no\.?|#)\s*:?", re.IGNORECASE)
_ACCOUNT_ID = re.compile(r"^[\dX*][\dX*\- ]{5,}\d$")
# Not "account name": on statements that column holds the product ("CHECKING").
_HOLDER_LABEL = re.compile(r"\b(?:account\s+(?:holder|owner)|customer\s+name)\s*:?", re.IGNORECASE)
_STREET = re.compile(r"^\d+[A-Z]?\s+[A-Za-z]")
_PERSON_OR_FIRM = re.compile(r"^[A-Z][A-Za-z.'’&-]*(?:\s+[A-Z][A-Za-z.'’&-]*){1,4}$")


def _statement_date(layout: Layout, day_first: bool) -> dict | None:
    for segment in layout.segments():
        m = _STATEMENT_LABEL.search(segment.text)
        if not m or len(segment.text.split()) > 8:  # a heading, not a sentence about statements
            continue
        for _, spot in after_label(layout, segment, m.end()):
            intro = _DATE_INTRO.match(spot.text)
            dates = find_dates(spot.text, day_first=day_first)
            if dates and intro and dates[0].start <= intro.end() + 1:
                d = dates[0]
                confidence = 0.9 * (0.75 if d.ambiguous else 1.0)
                return field(d.value.isoformat(), d.raw, confidence, spot.words_in(d.start, d.end))
    return None


def _account_numbers(layout: Layout) -> dict | None:
    for segment in layout.segments():
        m = _ACCOUNT_NUMBER.search(segment.text)
        if not m:
            continue
        inline = [s for where, s in after_label(layout, segment, m.end()) if where == "inline"]
        below = layout.below(segment, max_rows=12)  # a column of accounts under the header
        ids = [s for s in [*inline, *below] if _ACCOUNT_ID.match(s.text)]
        if ids:
            numbers = list(dict.fromkeys(s.text.replace(" ", "") for s in ids))
            out = field(numbers, "; ".join(s.text for s in ids), 0.85, [])
            out["citations"] = [c for s in ids for c in cite(s.words)]
            return out
    return None


def _account_holder(layout: Layout) -> dict | None:
    for segment in layout.segments():
        m = _HOLDER_LABEL.search(segment.text)
        if m:
            for _, spot in after_label(layout, segment, m.end()):
                if _PERSON_OR_FIRM.match(spot.text):
                    return field(spot.text, spot.text, 0.9, spot.words)
    # No label: the name line of the mailing address printed for a window envelope.
    first = min(layout.rows) if layout.rows else 1
    for segment in layout.segments(first):
        if not _PERSON_OR_FIRM.match(segment.text):
            continue
        under = layout.below(segment, max_rows=1)
        if under and _STREET.match(under[0].text) and abs(under[0].view[0] - segment.view[0]) < 15:
            return field(segment.text, segment.text, 0.7, segment.words)
    return None


def extract_statement(layout: Layout) -> dict[str, dict]:
    us_style = guess_language(layout.text) == "en" and "$" in layout.text
    found = {
        "statement_date": _statement_date(layout, day_first=not us_style),
        "account_holder": _account_holder(layout),
        "account_numbers": _account_numbers(layout),
    }
    return {name: f for name, f in found.items() if f is not None}
