"""Contract parties, read from the preamble's defined terms.

Contracts introduce each party once, with a defined term in parentheses:

    Photronics, Inc., a Connecticut corporation with its principal place ... (“Photronics”)
    hereby confirm their agreement with Keefe, Bruyette & Woods, Inc. (the “Agent”)

The name is either the capitalised run that opens an "X, a <kind of entity>" clause,
or the capitalised run right before the parenthesis. Not every defined term in a
preamble is a party ("insured by the Federal Deposit Insurance Corporation (“FDIC”)",
"(this “Agreement”)"), so a run-before-parenthesis name is kept only when its term is
a party role (Company, Consultant, Fund...) or is drawn from the name itself, and it is
not the object of "the"/"of". Chinese-style "Party A: ..." labels are read directly.
"""

from __future__ import annotations

import re

from streams.extract_layout import Layout, Word, cite, field

_PREAMBLE_END = re.compile(
    r"\bas\s+follows\b|\bWHEREAS\b|\bRECITALS\b|\bARTICLE\s+(?:1|I)\b|\bSECTION\s+1\b"
    r"|\n\s*1\.\s+[A-Z]|\bon\s+the\s+following\s+terms\b",
)
_DEFINED = re.compile(
    r"\(\s*(?:the\s+|this\s+)?[“\"‘'?]{1,2}(?P<term>[A-Z][^”\"’?()]{0,40}?)[”\"’'?]{1,2}\s*\)"
)
_NAME = r"[A-Z][\w’'.&\-]*(?:,?\s+(?:[A-Z0-9&][\w’'.&\-]*|of|and|de|du|the))*"
_INTRODUCED = re.compile(rf"(?P<name>{_NAME}),\s+an?\s+(?=[\w-])")
_BOUNDARY_BEFORE = re.compile(
    r"(?:^|[,():;]|\bbetween|\bamong|\band|\bwith|\bby|\bthat|\bundersigned)\s*$", re.IGNORECASE
)
_NOT_A_PARTY_BEFORE = re.compile(r"\b(?:the|this|of|in|at)\s*$", re.IGNORECASE)
# Defined terms that name the document or its subject, never a signatory.
_NOT_A_PARTY_TERM = re.compile(r"\b(?:agreement|contract|effective\s+date|term)\b", re.IGNORECASE)
_ROLE_WORDS = (
    "company bank agent consultant contractor client customer supplier vendor licensor licensee"
    " lessor lessee buyer seller purchaser distributor fund trust borrower lender employer"
    " employee affiliate partner investor parent provider manufacturer reseller franchisee"
    " franchisor landlord tenant guarantor issuer underwriter advisor adviser manager owner"
    " developer sponsor recipient executive operator shareholder member subsidiary servicer"
    " trustee depositor administrator publisher producer dealer retailer marketer"
    " representative corporation partnership"
)
_ROLES = frozenset(_ROLE_WORDS.split())
_YOU_AS = re.compile(r"\byou\s+(?:as\s+)?(?:an?|the)\s+[“\"‘'?](?P<term>[A-Z][\w ]{0,30}?)[”\"’'?]")
_PARTY_LABEL = re.compile(r"^Party\s+(?P<letter>[A-Z])\s*[:：]\s*(?P<name>.+)$")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _drawn_from(term: str, name: str) -> bool:
    """'Chase' from 'Chase Bank USA, N.A.'; 'DNP' from 'Dai Nippon Printing Co., Ltd.'."""
    initials = "".join(w[0] for w in re.findall(r"[A-Z][\w’'.&\-]*", name))
    return _key(term) in _key(name) or term.upper() == initials[: len(term)].upper()


def _trailing_name(before: str) -> tuple[str, int] | None:
    """The capitalised run that ends ``before`` (a ',' may trail): (name, start offset)."""
    m = re.search(rf"(?P<name>{_NAME})[\s,]*$", before)
    if m is None:
        return None
    name = re.sub(r"^(?:(?:of|and|de|du|the)\s+)+", "", m["name"]).strip(" ,")
    return (name, m.start("name") + m["name"].find(name)) if name else None


def _introduced_name(window: str) -> tuple[str, int] | None:
    """The first "Name, a <kind of entity>" clause that opens at a clause boundary."""
    for m in _INTRODUCED.finditer(window):
        if _BOUNDARY_BEFORE.search(window[: m.start()]):
            return m["name"].strip(" ,"), m.start("name")
    return None


def _defined_parties(layout: Layout, end: int) -> list[tuple[str, int, int]]:
    """(name, start, end) in stream offsets for every party introduced with a term."""
    text, found, window_start = layout.text[:end], [], 0
    for m in _DEFINED.finditer(text):
        window = text[window_start : m.start()][-600:]
        offset = m.start() - len(window)
        term = m["term"].strip()
        window_start = m.end()
        if _NOT_A_PARTY_TERM.search(term):
            continue
        introduced = _introduced_name(window)
        if introduced is not None:
            name, at = introduced
        else:
            trailing = _trailing_name(window)
            if trailing is None:
                continue
            name, at = trailing
            if term.lower() not in _ROLES and (
                not _drawn_from(term, name) or _NOT_A_PARTY_BEFORE.search(window[:at])
            ):
                continue
        found.append((" ".join(name.split()), offset + at, offset + at + len(name)))
    return found


def _labelled_parties(layout: Layout) -> list[tuple[str, list[Word]]]:
    """'Party A: People’s Government of Fenyi County' and the like, first mention each."""
    seen, found = set(), []
    for segment in layout.segments():
        m = _PARTY_LABEL.match(segment.text)
        if m and m["letter"] not in seen:
            seen.add(m["letter"])
            name = re.sub(r"\s*\((?:seal|signature)\)\s*$", "", m["name"]).strip(" ,;")
            start = m.start("name")
            found.append((name, segment.words_in(start, start + len(name))))
    return found


def _parties_field(parties: list[tuple[str, list[Word]]], confidence: float) -> dict:
    """A list value with one citation per party, not one box around all of them."""
    names = [name for name, _ in parties]
    out = field(names, "; ".join(names), confidence, [])
    out["citations"] = [c for _, words in parties for c in cite(words)]
    return out


def find_parties(layout: Layout) -> dict | None:
    labelled = _labelled_parties(layout)
    if len(labelled) >= 2:
        return _parties_field(labelled, 0.92)
    end_match = _PREAMBLE_END.search(layout.text, 200)
    end = min(end_match.start() if end_match else 6000, 6000)
    parties: list[tuple[str, list[Word]]] = []
    for name, start, stop in _defined_parties(layout, end):
        if _key(name) not in {_key(n) for n, _ in parties}:
            parties.append((name, layout.stream_words(start, stop)))
    confidence = 0.9
    you = _YOU_AS.search(layout.text[:end])
    if you:  # a click-through form: the counterparty is "you", a role with no name
        parties.append((you["term"], layout.stream_words(*you.span("term"))))
        confidence = 0.6
    if not parties:
        return None
    return _parties_field(parties, confidence if len(parties) >= 2 else 0.5)
