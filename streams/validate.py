"""The validate stage: per-field and cross-field rules over an extraction.

``validate(extraction)`` returns one result per rule applied,
``{"rule", "field", "ok", "message"}``, passing ones included, so the audit trail shows
what was checked and not only what failed. Rules are chosen to be true of real
documents: an effective date may precede the signing date (contracts are often signed
"as of" an earlier date), but a contract cannot expire before it starts, and an
invoice is not dated a year ahead.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

__all__ = ["validate", "REQUIRED_FIELDS", "ISO_4217"]

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "invoice": ("issuer", "invoice_number", "invoice_date", "total_amount", "currency"),
    "contract": ("document_name", "parties", "agreement_date"),
    "bank_statement": ("statement_date", "account_holder"),
    # Until box-level schemas exist, a tax form is usable only if someone filled it in.
    "w2": ("form_values",),
    "w9": ("form_values",),
    "w4": ("form_values",),
    "form_1040": ("form_values",),
}
_DATE_FIELDS = ("invoice_date", "agreement_date", "effective_date", "expiration_date",
                "statement_date")
_TEXT_FIELDS = ("issuer", "invoice_number", "document_name", "governing_law", "account_holder")
_NOT_FUTURE = ("invoice_date", "statement_date")
# Documents are sometimes issued ahead for the next billing period; beyond a month ahead
# the date is a typo or a misread.
_FUTURE_GRACE = timedelta(days=31)
_MIN_YEAR, _MAX_YEAR = 1900, 2100

# Active ISO 4217 codes (2025), plus codes withdrawn recently enough to appear on
# documents still in circulation (HRK until 2023, SLL, VEF, ...). XTS (testing) and XXX
# (no currency) are deliberately absent.
_ISO_4217_CODES = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD
EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD
IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL
MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP
STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED
VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR
ZMW ZWG ZWL HRK CUC MRO STD VEF ZMK LTL LVL EEK SKK
"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())


def _check(rule: str, field: str | None, ok: bool, message: str) -> dict[str, Any]:
    return {"rule": rule, "field": field, "ok": ok, "message": message}


def _value(fields: dict, name: str) -> Any:
    entry = fields.get(name)
    return entry.get("value") if isinstance(entry, dict) else None


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _required(doc_type: str, fields: dict) -> list[dict]:
    out = []
    for name in REQUIRED_FIELDS.get(doc_type, ()):
        if _present(_value(fields, name)):
            out.append(_check("required", name, True, f"{name} was found"))
        elif name == "form_values":
            out.append(_check("required", name, False,
                              "blank form: no fillable field carries a value"))
        else:
            out.append(_check("required", name, False,
                              f"{name} is required for a {doc_type} and was not found"))
    return out


def _cited(fields: dict) -> list[dict]:
    out = []
    for name, entry in fields.items():
        if not isinstance(entry, dict):
            out.append(_check("field_shape", name, False, "the field is not a mapping"))
            continue
        confidence = entry.get("confidence")
        citations = entry.get("citations") or []
        well_formed = all(
            isinstance(c.get("page"), int) and c["page"] >= 1 and len(c.get("bbox") or []) == 4
            for c in citations
        )
        if not (isinstance(confidence, int | float) and 0.0 <= confidence <= 1.0):
            out.append(_check("confidence_range", name, False,
                              f"confidence {confidence!r} is not a number in [0, 1]"))
        if not citations or not well_formed:
            out.append(_check("cited", name, False,
                              "the value does not cite a page and region it was read from"))
        else:
            out.append(_check("cited", name, True, f"cited on page(s) "
                              f"{sorted({c['page'] for c in citations})}"))
    return out


def _parse_iso(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _dates(fields: dict) -> list[dict]:
    out = []
    for name in _DATE_FIELDS:
        value = _value(fields, name)
        if value is None:
            continue
        parsed = _parse_iso(value)
        if parsed is None:
            out.append(_check("date_valid", name, False, f"{value!r} is not an ISO 8601 date"))
        elif not _MIN_YEAR <= parsed.year <= _MAX_YEAR:
            out.append(_check("date_valid", name, False,
                              f"{value} is outside {_MIN_YEAR}..{_MAX_YEAR}"))
        else:
            out.append(_check("date_valid", name, True, f"{value} is a valid date"))
    return out


def _tax_year(fields: dict) -> list[dict]:
    if "tax_year" not in fields:
        return []
    value = _value(fields, "tax_year")
    ok = isinstance(value, int) and not isinstance(value, bool) and _MIN_YEAR <= value <= _MAX_YEAR
    message = f"{value} is a plausible tax year" if ok else f"{value!r} is not a tax year"
    return [_check("year_valid", "tax_year", ok, message)]


def _amount(fields: dict) -> list[dict]:
    if "total_amount" not in fields:
        return []
    value = _value(fields, "total_amount")
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and value >= 0)
    message = f"{value!r} is a finite amount >= 0" if ok else \
        f"{value!r} is not a finite, non-negative number"
    return [_check("amount_valid", "total_amount", ok, message)]


def _currency(fields: dict) -> list[dict]:
    if "currency" not in fields:
        return []
    value = _value(fields, "currency")
    ok = isinstance(value, str) and value in ISO_4217
    message = f"{value} is an ISO 4217 code" if ok else f"{value!r} is not an ISO 4217 code"
    return [_check("currency_iso4217", "currency", ok, message)]


def _texts(fields: dict) -> list[dict]:
    out = []
    for name in _TEXT_FIELDS:
        if name in fields:
            value = _value(fields, name)
            ok = isinstance(value, str) and value.strip() != ""
            out.append(_check("non_empty", name, ok,
                              f"{name} has text" if ok else f"{name} is empty"))
    return out


def _parties(fields: dict) -> list[dict]:
    if "parties" not in fields:
        return []
    value = _value(fields, "parties")
    names = {p.strip().lower() for p in value if isinstance(p, str) and p.strip()} \
        if isinstance(value, list) else set()
    ok = len(names) >= 2
    message = f"{len(names)} distinct parties" if ok else \
        f"a contract needs at least two parties, found {len(names)}"
    return [_check("parties_min_two", "parties", ok, message)]


def _contract_term(fields: dict) -> list[dict]:
    end = _parse_iso(_value(fields, "expiration_date"))
    start_name = "effective_date" if "effective_date" in fields else "agreement_date"
    start = _parse_iso(_value(fields, start_name))
    if end is None or start is None:
        return []
    ok = end > start
    verb = "is after" if ok else "is not after"
    return [_check("expiration_after_start", "expiration_date", ok,
                   f"expiration_date {end} {verb} {start_name} {start}")]


def _not_future(fields: dict, today: date) -> list[dict]:
    out = []
    for name in _NOT_FUTURE:
        value = _parse_iso(_value(fields, name))
        if value is None:
            continue
        ok = value <= today + _FUTURE_GRACE
        message = f"{value} is not after {today} (+{_FUTURE_GRACE.days} days)" if ok else \
            f"{value} is more than {_FUTURE_GRACE.days} days after {today}"
        out.append(_check("not_in_future", name, ok, message))
    return out


def validate(extraction: dict, *, today: date | None = None) -> list[dict]:
    """All rule results for one extraction.

    ``today`` anchors "not in the future" checks. Pass the document's submission date
    so a replay months later gives the same results; it defaults to today's UTC date.
    """
    fields = extraction.get("fields")
    doc_type = extraction.get("doc_type")
    if not isinstance(fields, dict) or not isinstance(doc_type, str):
        return [_check("extraction_shape", None, False,
                       "the extraction lacks a doc_type string or a fields mapping")]
    today = today or datetime.now(UTC).date()
    return [
        *_required(doc_type, fields),
        *_cited(fields),
        *_dates(fields),
        *_tax_year(fields),
        *_amount(fields),
        *_currency(fields),
        *_texts(fields),
        *_parties(fields),
        *_contract_term(fields),
        *_not_future(fields, today),
    ]
