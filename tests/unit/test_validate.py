"""Validation rules: on real corpus extractions, and on small synthetic extractions for
each rule's edge cases."""

from __future__ import annotations

import functools
import math
import os
from datetime import date
from pathlib import Path

import pytest

from streams.extract import RuleExtractor
from streams.parse import parse_pdf
from streams.validate import ISO_4217, REQUIRED_FIELDS, validate

CORPUS = Path(
    os.environ.get("DOCSTREAMS_CORPUS")
    or Path(__file__).resolve().parents[3] / "shared" / "corpus"
)
needs_corpus = pytest.mark.skipif(not (CORPUS / "real").is_dir(),
                                  reason=f"sample corpus not found at {CORPUS}")
TODAY = date(2025, 6, 1)


@functools.cache
def extracted(name: str) -> dict:
    parsed = parse_pdf((CORPUS / "real" / name).read_bytes())
    assert isinstance(parsed, dict), parsed
    return RuleExtractor().extract(parsed)


def failed(checks: list[dict]) -> list[tuple[str, str | None]]:
    return [(c["rule"], c["field"]) for c in checks if not c["ok"]]


def cited(value: object, confidence: float = 0.9) -> dict:
    return {"value": value, "raw": str(value), "confidence": confidence,
            "citations": [{"page": 1, "bbox": [10.0, 10.0, 50.0, 20.0], "text": str(value)}]}


def invoice(**overrides: object) -> dict:
    fields = {"issuer": "ACME Ltd", "invoice_number": "A-17", "invoice_date": "2024-03-02",
              "total_amount": 20.0, "currency": "EUR"}
    fields.update(overrides)
    return {"doc_type": "invoice", "doc_type_confidence": 0.9, "extractor": "test/1",
            "fields": {k: cited(v) for k, v in fields.items() if v is not None}, "signals": []}


def contract(**overrides: object) -> dict:
    fields = {"document_name": "SERVICES AGREEMENT", "parties": ["Foo Corp.", "Bar LLC"],
              "agreement_date": "2019-03-01"}
    fields.update(overrides)
    return {"doc_type": "contract", "doc_type_confidence": 0.9, "extractor": "test/1",
            "fields": {k: cited(v) for k, v in fields.items() if v is not None}, "signals": []}


# --- real documents -------------------------------------------------------------------------

@needs_corpus
@pytest.mark.parametrize("name", [
    "invoice_aws.pdf", "invoice_azure_interior.pdf", "invoice_camelot_bol.pdf",
    "invoice_flipkart.pdf", "invoice_netpresse.pdf", "invoice_qualityhosting.pdf",
    "cuad_consulting_kiromic.pdf", "cuad_underwriting_service_integrityfunds.pdf",
])
def test_real_documents_pass_every_rule(name: str) -> None:
    checks = validate(extracted(name), today=TODAY)
    assert checks and failed(checks) == []


@needs_corpus
def test_effective_date_before_signing_is_not_an_error() -> None:
    # Kiromic: letter dated July 20, 2018, "effective as of July 1, 2018".
    fields = extracted("cuad_consulting_kiromic.pdf")["fields"]
    assert fields["effective_date"]["value"] < fields["agreement_date"]["value"]
    assert failed(validate(extracted("cuad_consulting_kiromic.pdf"), today=TODAY)) == []


@needs_corpus
def test_expiration_checked_against_start() -> None:
    checks = validate(extracted("cuad_underwriting_service_integrityfunds.pdf"), today=TODAY)
    term = [c for c in checks if c["rule"] == "expiration_after_start"]
    assert term == [{"rule": "expiration_after_start", "field": "expiration_date", "ok": True,
                     "message": "expiration_date 2022-01-18 is after agreement_date 2020-01-18"}]


@needs_corpus
def test_blank_tax_form_fails_as_blank() -> None:
    checks = validate(extracted("irs_fw9_blank_form.pdf"), today=TODAY)
    assert failed(checks) == [("required", "form_values")]
    assert "blank form" in next(c["message"] for c in checks if not c["ok"])


@needs_corpus
def test_undated_contract_fails_required_agreement_date() -> None:
    checks = validate(extracted("cuad_agency_athens_bancshares.pdf"), today=TODAY)
    assert failed(checks) == [("required", "agreement_date")]


# --- synthetic edge cases -------------------------------------------------------------------

def test_result_shape() -> None:
    for check in validate(invoice(), today=TODAY):
        assert set(check) == {"rule", "field", "ok", "message"}
        assert isinstance(check["ok"], bool) and check["message"]


@pytest.mark.parametrize("missing", REQUIRED_FIELDS["invoice"])
def test_each_missing_required_invoice_field_fails(missing: str) -> None:
    checks = validate(invoice(**{missing: None}), today=TODAY)
    assert failed(checks) == [("required", missing)]


@pytest.mark.parametrize(("value", "ok"), [
    ("2024-02-29", True), ("1900-01-01", True), ("2100-12-31", True),
    ("1899-12-31", False), ("2101-01-01", False), ("2023-02-29", False),
    ("03/02/2024", False), ("", False), (20240302, False),
])
def test_date_rule(value: object, ok: bool) -> None:
    checks = validate(contract(agreement_date=value), today=TODAY)
    date_check = next(c for c in checks if c["rule"] == "date_valid")
    assert date_check["ok"] is ok


@pytest.mark.parametrize(("value", "ok"), [
    (0, True), (0.0, True), (1234.56, True), (-0.01, False), (math.inf, False),
    (math.nan, False), ("20.00", False), (True, False),
])
def test_amount_rule(value: object, ok: bool) -> None:
    checks = validate(invoice(total_amount=value), today=TODAY)
    assert next(c for c in checks if c["rule"] == "amount_valid")["ok"] is ok


@pytest.mark.parametrize(("code", "ok"), [
    ("EUR", True), ("INR", True), ("HRK", True), ("eur", False), ("EURO", False),
    ("XXX", False), ("$", False),
])
def test_currency_rule(code: str, ok: bool) -> None:
    checks = validate(invoice(currency=code), today=TODAY)
    assert next(c for c in checks if c["rule"] == "currency_iso4217")["ok"] is ok


def test_iso_list_holds_the_codes_the_extractor_emits() -> None:
    assert {"USD", "EUR", "GBP", "INR", "CHF", "JPY", "CNY", "CAD", "AUD"} <= ISO_4217


def test_blank_invoice_number_fails() -> None:
    assert ("non_empty", "invoice_number") in failed(validate(invoice(invoice_number="  "),
                                                              today=TODAY))


@pytest.mark.parametrize(("parties", "ok"), [
    (["Foo Corp.", "Bar LLC"], True), (["Foo Corp."], False),
    (["Foo Corp.", "FOO CORP. "], False), (["Foo Corp.", ""], False), ("Foo and Bar", False),
])
def test_parties_rule(parties: object, ok: bool) -> None:
    checks = validate(contract(parties=parties), today=TODAY)
    assert next(c for c in checks if c["rule"] == "parties_min_two")["ok"] is ok


@pytest.mark.parametrize(("effective", "expiration", "ok"), [
    ("2019-04-01", "2021-04-01", True),
    ("2019-04-01", "2019-04-01", False),
    ("2019-04-01", "2018-12-31", False),
    (None, "2019-02-01", False),  # no effective date: compared with the agreement date
])
def test_contract_cannot_expire_before_it_starts(effective, expiration, ok: bool) -> None:
    checks = validate(contract(effective_date=effective, expiration_date=expiration), today=TODAY)
    assert next(c for c in checks if c["rule"] == "expiration_after_start")["ok"] is ok


@pytest.mark.parametrize(("invoice_date", "ok"), [
    ("2025-06-01", True), ("2025-07-02", True), ("2025-07-03", False), ("2026-06-01", False),
])
def test_invoice_date_not_far_in_the_future(invoice_date: str, ok: bool) -> None:
    checks = validate(invoice(invoice_date=invoice_date), today=TODAY)
    assert next(c for c in checks if c["rule"] == "not_in_future")["ok"] is ok


def test_today_defaults_to_the_current_date() -> None:
    assert failed(validate(invoice(invoice_date="2099-01-01"))) == [
        ("not_in_future", "invoice_date")]


def test_uncited_field_and_bad_confidence_fail() -> None:
    extraction = invoice()
    extraction["fields"]["issuer"]["citations"] = []
    extraction["fields"]["currency"]["confidence"] = 1.5
    assert failed(validate(extraction, today=TODAY)) == [
        ("cited", "issuer"), ("confidence_range", "currency")]


def test_malformed_extraction_is_one_failed_rule() -> None:
    assert failed(validate({"doc_type": "invoice"})) == [("extraction_shape", None)]
    assert failed(validate({"fields": {}})) == [("extraction_shape", None)]


@pytest.mark.parametrize("doc_type", ["other", "unreadable"])
def test_types_without_a_schema_have_no_required_fields(doc_type: str) -> None:
    extraction = {"doc_type": doc_type, "doc_type_confidence": 1.0, "fields": {}, "signals": []}
    assert validate(extraction, today=TODAY) == []
