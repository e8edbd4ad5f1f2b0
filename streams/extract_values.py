"""Parse dates, money amounts and currencies out of document text.

Pure string functions used by the rule extractor. Every finder returns matches with
character offsets so the caller can map them back to word boxes for citations.
Numeric dates such as 05/01/2020 are genuinely ambiguous; the parser resolves them
with a caller-supplied ``day_first`` hint and says so (``ambiguous=True``) so the
extractor can lower its confidence instead of pretending to know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january jan janvier janv januar jänner jän januari enero gennaio",
        "february feb février fevrier févr fevr februar februari febrero febbraio",
        "march mar mars märz maerz mär maart marzo",
        "april apr avril avr abril aprile",
        "may mai mei mayo maggio",
        "june jun juin juni junio giugno",
        "july jul juillet juil juli julio luglio",
        "august aug août aout augustus agosto",
        "september sep sept septembre settembre septiembre setiembre",
        "october oct octobre oktober okt octubre ottobre",
        "november nov novembre noviembre",
        "december dec décembre decembre déc dezember dez diciembre dicembre",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _number

# Longest names first so "sept" wins over "sep" and "juni" over "jun".
_MONTH_RE = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th|er|e|\.)?"

_TEXT_MDY = re.compile(
    rf"\b(?P<month>{_MONTH_RE})\.?\s+(?P<day>\d{{1,2}}){_ORD}\s*,?\s*(?P<year>\d{{4}})\b",
    re.IGNORECASE,
)
_TEXT_DMY = re.compile(
    rf"\b(?P<day>\d{{1,2}}){_ORD}\s+(?:day\s+of\s+)?(?P<month>{_MONTH_RE})\.?,?\s+"
    r"(?P<year>\d{4})\b",
    re.IGNORECASE,
)
_ISO = re.compile(r"(?<![\d.\-/])(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})(?![\d\-])")
_NUMERIC = re.compile(
    r"(?<![\d./\-])(?P<a>\d{1,2})(?P<sep>[./\-])(?P<b>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})(?![\d])"
    r"(?![./\-]\d)"
)


@dataclass(frozen=True)
class DateMatch:
    value: date
    raw: str
    start: int
    end: int
    ambiguous: bool = False  # day/month order was a guess from the locale hint


def _make_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _full_year(text: str) -> int:
    year = int(text)
    if len(text) == 2:  # 14 -> 2014, 98 -> 1998: the usual pivot for two-digit years
        year += 2000 if year < 70 else 1900
    return year


def _numeric_date(m: re.Match[str], day_first: bool) -> DateMatch | None:
    a, b, year = int(m["a"]), int(m["b"]), _full_year(m["year"])
    ambiguous = False
    if a > 12 >= b:
        day, month = a, b
    elif b > 12 >= a:
        day, month = b, a
    else:
        ambiguous = a != b
        day, month = (a, b) if day_first else (b, a)
    value = _make_date(year, month, day)
    if value is None:
        return None
    return DateMatch(value, m.group(0), m.start(), m.end(), ambiguous)


def find_dates(text: str, *, day_first: bool = True) -> list[DateMatch]:
    """Every date in ``text``, left to right, overlapping matches removed."""
    found: list[DateMatch] = []
    for pattern in (_TEXT_MDY, _TEXT_DMY, _ISO):
        for m in pattern.finditer(text):
            month = int(m["month"]) if m["month"].isdigit() else _MONTHS[m["month"].lower()]
            value = _make_date(int(m["year"]), month, int(m["day"]))
            if value is not None:
                found.append(DateMatch(value, m.group(0), m.start(), m.end()))
    for m in _NUMERIC.finditer(text):
        numeric = _numeric_date(m, day_first)
        if numeric is not None:
            found.append(numeric)
    found.sort(key=lambda d: (d.start, -(d.end - d.start)))
    kept: list[DateMatch] = []
    for candidate in found:
        if not kept or candidate.start >= kept[-1].end:
            kept.append(candidate)
    return kept


def parse_date(text: str, *, day_first: bool = True) -> DateMatch | None:
    """The first date in ``text``."""
    dates = find_dates(text, day_first=day_first)
    return dates[0] if dates else None


# --- money ----------------------------------------------------------------------------

# Symbol or code -> (ISO 4217 code, unambiguous?). "$" is also AUD, CAD, ARS...; "Rs" is
# also PKR, LKR, NPR; "¥" is JPY or CNY: those are guesses the caller must discount.
CURRENCY_MARKS: dict[str, tuple[str, bool]] = {
    "€": ("EUR", True), "eur": ("EUR", True), "euro": ("EUR", True), "euros": ("EUR", True),
    "£": ("GBP", True), "gbp": ("GBP", True),
    "₹": ("INR", True), "inr": ("INR", True), "rs": ("INR", False), "rs.": ("INR", False),
    "rupees": ("INR", False),
    "us$": ("USD", True), "usd": ("USD", True), "us dollars": ("USD", True),
    "$": ("USD", False), "dollars": ("USD", False),
    "chf": ("CHF", True), "jpy": ("JPY", True), "cny": ("CNY", True), "¥": ("JPY", False),
    "cad": ("CAD", True), "aud": ("AUD", True), "sek": ("SEK", True), "nok": ("NOK", True),
    "dkk": ("DKK", True), "pln": ("PLN", True), "czk": ("CZK", True), "huf": ("HUF", True),
}
_MARK_RE = r"US\$|\$|€|£|₹|¥|Rs\.?|INR|USD|EUR|GBP|CHF|JPY|CNY|CAD|AUD|SEK|NOK|DKK|PLN|CZK|HUF"
_NUMBER_RE = (
    r"\d{1,3}(?:(?P<th>[.,'’\u00a0\u202f])\d{3})(?:(?P=th)\d{3})*(?:[.,]\d{1,2})?"
    r"|\d+(?:[.,]\d{1,2})?"
)
_MONEY = re.compile(
    rf"(?<![\w.,])(?P<neg1>-\s?)?(?:(?P<pre>{_MARK_RE})\s?(?P<neg2>-\s?)?)?"
    rf"(?P<num>{_NUMBER_RE})(?![\w]|[.,]\d)(?:\s?(?P<post>€|EUR|USD|GBP|INR|CHF|£|₹)(?!\w))?"
    r"(?P<neg3>-(?!\d))?"
)


@dataclass(frozen=True)
class AmountMatch:
    value: float
    raw: str
    start: int
    end: int
    currency: str | None  # ISO code implied by an adjacent symbol or code, if any
    currency_certain: bool


def parse_number(text: str) -> float:
    """'1.234,56' -> 1234.56, '1,234.56' -> 1234.56, '34,73' -> 34.73, '1,234' -> 1234."""
    digits = text.replace("\u00a0", "").replace("\u202f", "").replace("'", "").replace("’", "")
    if "." in digits and "," in digits:
        decimal = "." if digits.rfind(".") > digits.rfind(",") else ","
    elif digits.count(",") == 1 and len(digits) - digits.rfind(",") - 1 in (1, 2):
        decimal = ","
    elif digits.count(".") == 1 and len(digits) - digits.rfind(".") - 1 in (1, 2):
        decimal = "."
    else:  # only thousands separators (a three-digit group is read as thousands)
        decimal = ""
    thousands = {",", "."} - {decimal}
    for sep in thousands:
        digits = digits.replace(sep, "")
    return float(digits.replace(",", ".") if decimal == "," else digits)


def find_amounts(text: str) -> list[AmountMatch]:
    """Money amounts: numbers with a currency mark, or with exactly two decimals.

    Bare integers ("2014", "47774") are not money: they are years, ids and counts.
    """
    found: list[AmountMatch] = []
    for m in _MONEY.finditer(text):
        mark = m["pre"] or m["post"]
        if mark is None and not re.search(r"[.,]\d{2}$", m["num"]):
            continue
        if text[m.end() :].lstrip().startswith("%"):  # 14.50% is a rate, not money
            continue
        value = parse_number(m["num"])
        if m["neg1"] or m["neg2"] or m["neg3"]:
            value = -value
        code, certain = CURRENCY_MARKS.get(mark.lower(), (None, False)) if mark else (None, False)
        raw = m.group(0).strip()
        found.append(AmountMatch(value, raw, m.start(), m.end(), code, certain))
    return found


_CURRENCY_WORDS = re.compile(
    rf"(?<!\w)(?:{_MARK_RE}|euros?|rupees|us dollars|dollars)(?!\w)", re.IGNORECASE
)


def currency_mentions(text: str) -> list[tuple[str, bool, int, int]]:
    """Every currency symbol, code or name in ``text``: (ISO code, certain, start, end)."""
    mentions = []
    for m in _CURRENCY_WORDS.finditer(text):
        token = m.group(0)
        # Upper-case codes only: "eur" inside prose is not a currency; names are fine.
        if token.isalpha() and len(token) == 3 and not token.isupper():
            continue
        code, certain = CURRENCY_MARKS[token.lower()]
        mentions.append((code, certain, m.start(), m.end()))
    return mentions


_STOPWORDS = {
    "en": {"the", "and", "of", "to", "for", "is", "this", "total", "date", "invoice", "amount"},
    "fr": {"le", "la", "les", "de", "du", "des", "et", "pour", "facture", "montant", "total"},
    "de": {"der", "die", "das", "und", "für", "mit", "rechnung", "betrag", "datum", "bitte"},
    "nl": {"de", "het", "een", "van", "en", "voor", "factuur", "bedrag", "datum", "betalen"},
}


def guess_language(text: str) -> str:
    """Crude language guess by stop words, enough to choose a numeric date order."""
    words = re.findall(r"[a-zà-ÿ]+", text.lower())
    counts = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    return max(counts, key=lambda lang: (counts[lang], lang == "en"))
