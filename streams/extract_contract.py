"""Contract fields: document_name, parties, agreement_date, effective_date,
expiration_date, governing_law.

Rules read the document's own recitals: the title line, the preamble that introduces
the parties with their defined terms ("Kiromic, Inc, a Delaware corporation (the
“Company”)"), dating clauses, and the governing-law clause. Dates are given only when
the text states them; an expiration computed from an effective date plus a stated
term ("for a period of two (2) years") is marked as computed, cites the term, and is
scored below the review threshold so a person confirms it.
"""

from __future__ import annotations

import calendar
import re
from datetime import date

from streams.extract_layout import Layout, Segment, Word, cite, field
from streams.extract_parties import find_parties
from streams.extract_values import DateMatch, find_dates

_TITLE_WORD = re.compile(
    r"\b(?:agreement|contract|lease|addendum|amendment|memorandum\s+of\s+understanding"
    r"|license|licence|deed|indenture)\b",
    re.IGNORECASE,
)
_DATE_PREFIX = re.compile(r"^\s*(?:dated|date|as\s+of)?\s*:?\s*$", re.IGNORECASE)
_DATING_CLAUSE = re.compile(
    r"\bthis\s+(?:[\w-]+\s+){0,4}agreement\b[^.]{0,120}?\b(?:dated|made|entered\s+into|executed)"
    r"\b[^.]{0,40}?\b(?:as\s+of|on|this)\s+(?:the\s+)?(?=\d|[A-Z])",
    re.IGNORECASE,
)
_EFFECTIVE_CLAUSE = re.compile(
    r"(?:\beffective\s+(?:as\s+of|on|from)|[“\"]Effective\s+Date[”\"]\s+(?:means|shall\s+mean))"
    r"\s+(?:the\s+)?(?=\d|[A-Z])",
    re.IGNORECASE,
)
_EFFECTIVE_DEFINED = re.compile(r"\(\s*(?:the\s+)?[“\"]Effective\s+Date[”\"]\s*\)")
_EFFECTIVE_AS_DATED = re.compile(
    r"\beffective\s+as\s+of\s+the\s+date\s+(?:first\s+(?:above\s+)?written(?:\s+above)?|hereof"
    r"|of\s+this\s+agreement)",
    re.IGNORECASE,
)
_ABOUT_THIS_AGREEMENT = re.compile(r"\b(?:agreement|term)\b", re.IGNORECASE)
_EXPIRY_CLAUSE = re.compile(
    r"\b(?:continue|remain\s+in\s+(?:full\s+)?force(?:\s+and\s+effect)?|expire|terminate|end)s?"
    r"\s+(?:on|until|through)\s+(?:the\s+)?(?=\d|[A-Z])",
    re.IGNORECASE,
)
_TERM_CLAUSE = re.compile(
    r"\b(?:term|period)\s+of\s+(?P<n>\d+|[a-z]+)\s*(?:\(\s*\d+\s*\)\s*)?(?P<unit>years?|months?)\b",
    re.IGNORECASE,
)
_NUMBER_NAMES = "zero one two three four five six seven eight nine ten eleven twelve"
_NUMBER_WORDS = {word: n for n, word in enumerate(_NUMBER_NAMES.split())}
_LAW_CLAUSE = re.compile(
    r"\b(?:governed|construed|interpreted|enforced)\s+(?:in\s+all\s+respects\s+|exclusively\s+)?"
    r"(?:by|in\s+accordance\s+with|under)\s+(?:and\s+construed\s+in\s+accordance\s+with\s+)?"
    r"the\s+(?:internal\s+|substantive\s+)?laws?\s+of\s+(?:the\s+)?"
    r"(?:(?:State|Commonwealth)\s+of\s+)?(?P<j>[A-Z][\w’']*(?:\s+(?:of\s+|and\s+)?[A-Z][\w’']*)*)"
)


def _title(layout: Layout) -> dict | None:
    """The first short, heading-like line of the first text page that names an agreement."""
    first = min((p for p, rows in layout.rows.items() if rows), default=None)
    if first is None:
        return None
    for row in layout.rows[first][:30]:
        for segment in row:
            text = segment.text
            words = text.split()
            if (
                _TITLE_WORD.search(text)
                and len(words) <= 20
                and not re.search(r"[.,;:]$|[“\"(]", text)
                and words[0].lower() != "this"
            ):
                confidence = 0.92 if text.isupper() else 0.85
                return field(text, text, confidence, segment.words)
    return None


def _date_after(
    layout: Layout, pattern: re.Pattern[str], text_end: int
) -> list[tuple[DateMatch, list[Word], int]]:
    """Dates that follow ``pattern`` directly, within the first ``text_end`` characters:
    (date, its words, where the clause starts in the text)."""
    found = []
    text = layout.text[:text_end]
    for m in pattern.finditer(text):
        dates = find_dates(text[m.end() : m.end() + 40])
        if dates and dates[0].start == 0:
            d = dates[0]
            found.append((d, layout.stream_words(m.end(), m.end() + len(d.raw)), m.start()))
    return found


def _about_this_agreement(layout: Layout, at: int) -> bool:
    """Whether the sentence leading up to ``at`` speaks of the agreement or its term."""
    sentence = layout.text[max(0, at - 150) : at].split(".")[-1]
    return _ABOUT_THIS_AGREEMENT.search(sentence) is not None


def _lone_dates(rows: list[list[Segment]]) -> list[tuple[DateMatch, list[Word]]]:
    """Rows that hold only a date (optionally 'Dated:'): letter heads, signature blocks."""
    found = []
    for row in rows:
        for segment in row:
            d = find_dates(segment.text)
            if not d:
                continue
            alone = not segment.text[d[0].end :].strip()
            if alone and _DATE_PREFIX.match(segment.text[: d[0].start]):
                found.append((d[0], segment.words_in(d[0].start, d[0].end)))
    return found


def _agreement_date(layout: Layout) -> dict | None:
    stated = _date_after(layout, _DATING_CLAUSE, 6000)
    if stated:
        d, words, _ = stated[0]
        return field(d.value.isoformat(), d.raw, 0.9, words)
    first = min((p for p, rows in layout.rows.items() if rows), default=None)
    heading = _lone_dates(layout.rows[first][:12]) if first else []
    last_pages = sorted(layout.rows)[-2:]
    signed = _lone_dates([r for p in last_pages for r in layout.rows[p]])
    if heading:  # the date line of a letter agreement; a matching signature date confirms it
        d, words = heading[0]
        confirmed = any(s.value == d.value for s, _ in signed)
        return field(d.value.isoformat(), d.raw, 0.85 if confirmed else 0.8, words)
    if signed and len({s.value for s, _ in signed}) == 1:  # every signatory dated it alike
        d, words = signed[0]
        return field(d.value.isoformat(), d.raw, 0.8, words)
    return None


def _effective_date(layout: Layout) -> dict | None:
    for d, words, at in _date_after(layout, _EFFECTIVE_CLAUSE, len(layout.text)):
        # "This letter agreement will be effective as of ..." or "“Effective Date” means ...",
        # not a resignation or a price change that is effective from some date.
        defined = layout.text[at] in "“\""
        if defined or _about_this_agreement(layout, at):
            return field(d.value.isoformat(), d.raw, 0.9, words)
    for m in _EFFECTIVE_DEFINED.finditer(layout.text):  # "July 1, 2018 (the “Effective Date”)"
        before = layout.text[max(0, m.start() - 40) : m.start()]
        dates = find_dates(before)
        if dates and not before[dates[-1].end :].strip(" ,"):
            d = dates[-1]
            start = m.start() - len(before) + d.start
            words = layout.stream_words(start, start + len(d.raw))
            return field(d.value.isoformat(), d.raw, 0.92, words)
    return None


def _effective_as_dated(layout: Layout, agreement: dict | None) -> dict | None:
    """"Effective as of the date first above written": the agreement date, restated."""
    m = _EFFECTIVE_AS_DATED.search(layout.text)
    if m is None or agreement is None:
        return None
    clause = layout.stream_words(*m.span())
    out = field(agreement["value"], m.group(0), min(agreement["confidence"], 0.85), [])
    out["citations"] = agreement["citations"] + cite(clause)
    return out


def _add_term(start: date, count: int, unit: str) -> date:
    months = count * (12 if unit.lower().startswith("year") else 1)
    year, month = divmod(start.month - 1 + months, 12)
    year, month = start.year + year, month + 1
    # 29 February or the 31st: the anniversary falls on the month's last day.
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def _expiration_date(layout: Layout, effective: dict | None) -> dict | None:
    for d, words, at in _date_after(layout, _EXPIRY_CLAUSE, len(layout.text)):
        # Only a clause about this agreement's own term, not an option's or a notice's.
        if _about_this_agreement(layout, at):
            return field(d.value.isoformat(), d.raw, 0.88, words)
    if effective is None:
        return None
    for m in _TERM_CLAUSE.finditer(layout.text):
        sentence = layout.text[max(0, m.start() - 200) : m.end()].split(".")[-1]
        if not re.search(r"\b(?:this\s+agreement|initial\s+term)\b", sentence, re.IGNORECASE):
            continue
        n = m["n"].lower()
        count = int(n) if n.isdigit() else _NUMBER_WORDS.get(n)
        if count:
            end = _add_term(date.fromisoformat(effective["value"]), count, m["unit"])
            computed = field(end.isoformat(), m.group(0), 0.6, layout.stream_words(*m.span()))
            computed["citations"] = effective["citations"] + computed["citations"]
            return computed
    return None


def _governing_law(layout: Layout) -> dict | None:
    found = []
    for m in _LAW_CLAUSE.finditer(layout.text):
        subject = layout.text[max(0, m.start() - 80) : m.start()]
        strong = re.search(r"\bthis\s+agreement\b", subject, re.IGNORECASE) is not None
        value = " ".join(m["j"].replace("’", "'").split())
        found.append((0.92 if strong else 0.75, value, layout.stream_words(*m.span("j"))))
    if not found:
        return None
    confidence, value, words = max(found, key=lambda c: c[0])
    if any(v != value and c >= confidence for c, v, _ in found):
        confidence *= 0.7  # two equally strong clauses name different laws
    return field(value, " ".join(w.text for w in words), confidence, words)


def extract_contract(layout: Layout) -> dict[str, dict]:
    agreement = _agreement_date(layout)
    effective = _effective_date(layout) or _effective_as_dated(layout, agreement)
    found = {
        "document_name": _title(layout),
        "parties": find_parties(layout),
        "agreement_date": agreement,
        "effective_date": effective,
        "expiration_date": _expiration_date(layout, effective),
        "governing_law": _governing_law(layout),
    }
    return {name: f for name, f in found.items() if f is not None}
