"""Invoice fields: issuer, invoice_number, invoice_date, total_amount, currency.

Confidence follows the evidence: a value next to an explicit label in the document's
own words ("Invoice Number:", "Rechnungsnr.", "Facture n°", "Total TTC") that parses
cleanly scores high; a value inferred without a label (the largest amount, the first
date) scores below the review threshold on purpose. A field with no evidence is left
out, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from streams.extract_layout import Layout, Segment, Word, after_label, cite, field
from streams.extract_values import (
    AmountMatch,
    currency_mentions,
    find_amounts,
    find_dates,
    guess_language,
)


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_NUMBER_LABEL = _rx(
    r"\binvoice\s*(?:no\b\.?|number|nr\b\.?|num\b|#|id\b)|\bfacture\s*n\s*[°ºo]"
    r"|\bn\s*[°º]\s*(?:de\s+)?facture|\bnuméro\s+de\s+facture|\brechnungs-?\s*(?:nr\b\.?|nummer)"
    r"|\bfactuur\s*(?:nummer|nr\b\.?)|\bbill\s*(?:no\b\.?|number)"
)
_BARE_INVOICE = _rx(r"\b(?:invoice|facture|rechnung|factuur)\b")
_ID_AT_START = _rx(r"^[\s:#.\-–]*(?P<id>[A-Z0-9][A-Z0-9/_\-.]*\d[A-Z0-9/_\-.]*)")

_DATE_LABEL = _rx(
    r"\binvoice\s*date|\bdate\s+of\s+invoice|\bdate\s+de\s+(?:la\s+)?facture|\brechnungsdatum"
    r"|\bfactuurdatum|\binvoice\s+dated|\bbilling\s+date|\bdate\s+d['’]émission"
)
_GENERIC_DATE_LABEL = _rx(
    r"(?<!due )(?<!order )(?<!delivery )(?<!ship )\b(?:date|datum|fecha)\b\s*:?"
)

_TOTAL_LABELS = (  # (pattern, confidence): labels that name the invoice's gross total
    (_rx(r"\bgrand\s+total|\btotal\s+amount\s+due|\bamount\s+due|\binvoice\s+total"
         r"|\btotal\s+for\s+this\s+invoice|\btotal\s+ttc|\bmontant\s+ttc|\bnet\s+à\s+payer"
         r"|\bbedrag\s+inclusief|\btotaal\s+incl|\bgesamtbetrag|\brechnungsbetrag|\bendbetrag"
         r"|\btotal\s+due|\bbalance\s+due|\btotal\s+incl|\btotal\s+payable"), 0.92),
    (_rx(r"(?<!sub)(?<!sub-)(?<!sub )\b(?:total|totaal|gesamt|summe)\b"
         r"(?!\s*(?:ht|excl|exclusief|net|netto|tax|vat|checks|savings|checking)\b)"), 0.82),
)
_ISSUER_LABEL = _rx(
    r"\bsold\s+by\b|\bseller\b|\bvendor\b|\bsupplier\b|\bservice\s+provider\b|\bissued\s+by\b"
    r"|\bverkäufer\b|\blieferant\b|\bvendeur\b|\bémetteur\b|\bleverancier\b|\binvoice\s+from\b"
)
_PAYEE_LABEL = _rx(
    r"\btitulaire\s+du\s+compte\b|\baccount\s+holder\b|\bkontoinhaber\b|\bbeneficiary\b"
    r"|\bpayable\s+to\b|\bbegünstigter\b"
)
_LEGAL_FORM = _rx(
    r"\b(?:inc|ltd|llc|l\.l\.c|corp|gmbh|ag|sa|sarl|sas|b\.v|bv|n\.v|plc|pvt|s\.a|s\.r\.l|co)\b\.?"
)
_DOMAIN = _rx(r"(?:@|\bwww\.|https?://)(?:www\.)?([a-z0-9][a-z0-9-]{2,})\.[a-z]{2,}")
_GENERIC_DOMAINS = {"example", "gmail", "yahoo", "outlook", "hotmail", "tcpdf", "google"}


def _labelled(layout: Layout, label: re.Pattern[str]) -> Iterator[list[tuple[str, Segment]]]:
    """For every occurrence of ``label``, in reading order, the spots its value may be in."""
    for segment in layout.segments():
        for m in label.finditer(segment.text):
            yield after_label(layout, segment, m.end())


def _first_match(
    spots: list[tuple[str, Segment]], pattern: re.Pattern[str]
) -> tuple[str, Segment, re.Match[str]] | None:
    """The first spot whose text starts with ``pattern``: (where, spot, match)."""
    for where, spot in spots:
        m = pattern.match(spot.text)
        if m:
            return where, spot, m
    return None


def _invoice_number(layout: Layout) -> dict | None:
    found: list[tuple[float, object, list[Word]]] = []
    for spots in _labelled(layout, _NUMBER_LABEL):
        hit = _first_match(spots, _ID_AT_START)
        if hit:
            where, spot, m = hit
            confidence = 0.95 if where != "below" else 0.88
            found.append((confidence, m["id"].rstrip(".-"), spot.words_in(*m.span("id"))))
    if not found:  # "Invoice INV/2023/03/0008": the document word itself, then an id
        for spots in _labelled(layout, _BARE_INVOICE):
            hit = _first_match(spots[:1], _ID_AT_START)
            if hit and hit[0] == "inline":
                _, spot, m = hit
                found.append((0.8, m["id"].rstrip(".-"), spot.words_in(*m.span("id"))))
    return _agree(found)


def _agree(found: list[tuple[float, object, list[Word]]]) -> dict | None:
    """Pick the most confident candidate; repeats corroborate, contradictions discount."""
    if not found:
        return None
    confidence, value, words = max(found, key=lambda c: c[0])  # the first of the strongest
    if any(c[1] != value and c[0] >= confidence for c in found):
        confidence *= 0.75  # an equally strong label says something else
    elif sum(c[1] == value for c in found) > 1:
        confidence = min(confidence + 0.03, 0.98)
    raw = " ".join(w.text for w in words)
    return field(value, raw, confidence, words)


def _invoice_date(layout: Layout, day_first: bool) -> dict | None:
    found: list[tuple[float, object, list[Word]]] = []
    for label, strength in ((_DATE_LABEL, 0.95), (_GENERIC_DATE_LABEL, 0.85)):
        for spots in _labelled(layout, label):
            for where, spot in spots:
                dates = find_dates(spot.text, day_first=day_first)
                if not dates or dates[0].start > 3:  # the value must follow the label directly
                    continue
                d = dates[0]
                confidence = strength - (0.07 if where == "below" else 0.0)
                if d.ambiguous:  # 05/01/2020: day-month order came from a locale guess
                    confidence *= 0.75
                found.append((confidence, d.value.isoformat(), spot.words_in(d.start, d.end)))
                break
        if found:
            break
    if not found:  # no label at all: the first date on the first page, flagged as a guess
        first = min(layout.rows) if layout.rows else 1
        for segment in layout.segments(first):
            dates = find_dates(segment.text, day_first=day_first)
            if dates:
                d = dates[0]
                return field(d.value.isoformat(), d.raw, 0.5, segment.words_in(d.start, d.end))
        return None
    return _agree(found)


def _amounts_after(layout: Layout, segment: Segment, end: int) -> list[tuple[AmountMatch, Segment]]:
    inline_and_right = [s for w, s in after_label(layout, segment, end) if w != "below"]
    out = [(a, s) for s in inline_and_right for a in find_amounts(s.text)]
    if not out:
        out = [(a, s) for w, s in after_label(layout, segment, end) if w == "below"
               for a in find_amounts(s.text)][:1]
    return out


def _total(layout: Layout) -> tuple[dict, AmountMatch, Segment] | None:
    """The total field, the amount it came from, and the label's segment."""
    found: list[tuple[float, object, list[Word]]] = []
    matches: dict[float, tuple[AmountMatch, Segment]] = {}
    for label, strength in _TOTAL_LABELS:
        for segment in layout.segments():
            for m in label.finditer(segment.text):
                after = _amounts_after(layout, segment, m.end())
                amounts = [(a, s) for a, s in after if a.value >= 0]
                if amounts:  # the rightmost amount on a totals row is the gross total
                    amount, spot = amounts[-1]
                    found.append((strength, amount.value, spot.words_in(amount.start, amount.end)))
                    matches.setdefault(amount.value, (amount, segment))
        if found:
            break
    if not found:
        every = [(a, s) for s in layout.segments() for a in find_amounts(s.text) if a.value > 0]
        if not every:
            return None
        amount, spot = max(every, key=lambda pair: pair[0].value)
        words = spot.words_in(amount.start, amount.end)
        return field(amount.value, amount.raw, 0.45, words), amount, spot
    chosen = _agree(found)
    assert chosen is not None
    amount, label_segment = matches[chosen["value"]]
    return chosen, amount, label_segment


def _currency(layout: Layout, total: tuple[dict, AmountMatch, Segment] | None) -> dict | None:
    """The currency marked on the total itself or on its label ("Total EUR"), else a vote."""
    if total is None:
        return _currency_from_text(layout)
    total_field, amount, label = total
    code, certain = amount.currency, amount.currency_certain
    raw, citations = amount.raw, total_field["citations"]
    mentions = currency_mentions(label.text)
    if code is None and mentions:
        code, certain, start, end = mentions[0]
        words = label.words_in(start, end)
        raw, citations = " ".join(w.text for w in words), cite(words)
    if code is None:
        return _currency_from_text(layout)
    # "$" alone could be USD, CAD, AUD...: the text saying "US Dollars" elsewhere settles it.
    everywhere = currency_mentions(layout.text)
    settled = certain or any(c == code and sure for c, sure, _, _ in everywhere)
    return {"value": code, "raw": raw, "confidence": 0.95 if settled else 0.85,
            "citations": citations}


def _currency_from_text(layout: Layout) -> dict | None:
    """No mark next to the total: vote over every currency mention in the document."""
    votes: dict[str, list[Word]] = {}
    for code, _, start, end in currency_mentions(layout.text):
        votes.setdefault(code, []).extend(layout.stream_words(start, end))
    if not votes:
        return None
    code = max(votes, key=lambda c: len(votes[c]))
    confidence = 0.8 if len(votes) == 1 else 0.55
    words = votes[code][:1]
    return field(code, words[0].text, confidence, words)


def _clean_name(text: str) -> str:
    """'QualityHosting AG - Uferweg 40-42' -> 'QualityHosting AG'; ': NETPRESSE' -> 'NETPRESSE'."""
    name = re.split(r"\s[–\-|]\s|\s:\s", text.strip(" :"))[0]
    return name.strip(" ,;:-–")


def _name_field(name: str, spot: Segment, confidence: float) -> tuple[float, object, list[Word]]:
    start = spot.text.find(name)
    return confidence, name, spot.words_in(start, start + len(name))


def _issuer(layout: Layout) -> dict | None:
    found: list[tuple[float, object, list[Word]]] = []
    for label, strength in ((_ISSUER_LABEL, 0.9), (_PAYEE_LABEL, 0.85)):
        for spots in _labelled(layout, label):
            for _, spot in spots:  # the first readable spot after the label is its value
                name = _clean_name(spot.text)
                if re.search(r"[A-Za-z]{2}", name) and not spot.text.startswith("("):
                    found.append(_name_field(name, spot, strength))
                    break
        if found:
            return _agree(found)
    return _issuer_by_domain(layout)


def _issuer_by_domain(layout: Layout) -> dict | None:
    """A name on the first page that is also the sender's web or e-mail domain."""
    domains = {d.lower() for d in _DOMAIN.findall(layout.text)} - _GENERIC_DOMAINS
    first = min(layout.rows) if layout.rows else 1
    for segment in layout.segments(first):
        name = _clean_name(segment.text)
        key = re.sub(r"[^a-z0-9]", "", name.lower())
        for domain in sorted(domains):  # sorted: set order varies between processes
            core = re.sub(r"[^a-z0-9]", "", domain)
            if len(core) >= 3 and key.startswith(core) and len(key) <= len(core) + 6:
                confidence = 0.85 if _LEGAL_FORM.search(name) else 0.8
                return field(name, name, confidence, _name_field(name, segment, confidence)[2])
    return None


def extract_invoice(layout: Layout) -> dict[str, dict]:
    total = _total(layout)
    currency = _currency(layout, total)
    # Numeric dates: month first only for US-English documents billed in dollars.
    us_style = guess_language(layout.text) == "en" and (currency or {}).get("value") == "USD"
    found = {
        "issuer": _issuer(layout),
        "invoice_number": _invoice_number(layout),
        "invoice_date": _invoice_date(layout, day_first=not us_style),
        "total_amount": total[0] if total else None,
        "currency": currency,
    }
    return {name: f for name, f in found.items() if f is not None}
