"""Routing: real corpus documents end where a person would send them, and each
synthetic edge case gives the outcome and the reason codes it should."""

from __future__ import annotations

import dataclasses
import functools
import os
from datetime import date
from pathlib import Path

import pytest

from streams.extract import RuleExtractor
from streams.parse import parse_pdf
from streams.route import RouteDecision, decide
from streams.settings import Thresholds
from streams.validate import validate

CORPUS = Path(
    os.environ.get("DOCSTREAMS_CORPUS")
    or Path(__file__).resolve().parents[3] / "shared" / "corpus"
)
needs_corpus = pytest.mark.skipif(not (CORPUS / "real").is_dir(),
                                  reason=f"sample corpus not found at {CORPUS}")
DEFAULTS = Thresholds()


@functools.cache
def routed(path: str) -> tuple[dict, RouteDecision]:
    parsed = parse_pdf((CORPUS / path).read_bytes())
    assert isinstance(parsed, dict), parsed
    extraction = RuleExtractor().extract(parsed)
    checks = validate(extraction, today=date(2025, 6, 1))
    return extraction, decide(extraction, checks, DEFAULTS)


def codes(decision: RouteDecision) -> list[str]:
    return [r.split(":")[0] for r in decision.reasons]


def field(value: object, confidence: float) -> dict:
    return {"value": value, "raw": str(value), "confidence": confidence,
            "citations": [{"page": 1, "bbox": [1.0, 1.0, 9.0, 9.0], "text": str(value)}]}


def extraction(doc_type: str = "invoice", confidence: float = 0.9, **fields: dict) -> dict:
    return {"doc_type": doc_type, "doc_type_confidence": confidence, "extractor": "test/1",
            "fields": fields, "signals": []}


# --- real documents ----------------------------------------------------------------------

@needs_corpus
@pytest.mark.parametrize("name", [
    "invoice_aws.pdf", "invoice_azure_interior.pdf", "invoice_camelot_bol.pdf",
    "invoice_flipkart.pdf", "invoice_netpresse.pdf", "invoice_qualityhosting.pdf",
    "cuad_consulting_kiromic.pdf", "cuad_underwriting_service_integrityfunds.pdf",
])
def test_confident_valid_documents_are_decided(name: str) -> None:
    _, decision = routed(f"real/{name}")
    assert decision.outcome == "decided"
    assert codes(decision) == ["confident_and_valid"]


@needs_corpus
@pytest.mark.parametrize(("name", "expected"), [
    ("real/irs_fw9_blank_form.pdf", ["failed_check: required form_values: blank form"]),
    ("real/cuad_agency_athens_bancshares.pdf", ["failed_check: required agreement_date"]),
    ("real/cuad_affiliate_creditcards.pdf",
     ["failed_check: required agreement_date", "low_confidence: parties 0.60 < 0.75"]),
    ("real/aws_idp_bank_statement_multipage.pdf",
     ["low_confidence: account_holder 0.70 < 0.75"]),
    ("real/pdfminer_dmca_summary.pdf", ["no_schema:"]),
])
def test_documents_a_person_must_look_at_go_to_review(name: str, expected: list[str]) -> None:
    _, decision = routed(name)
    assert decision.outcome == "review"
    assert len(decision.reasons) == len(expected)
    for reason, start in zip(decision.reasons, expected, strict=True):
        assert reason.startswith(start), reason


@needs_corpus
@pytest.mark.parametrize("name", ["bad/scan_camelot_image_table.pdf",
                                  "bad/rot_docling_ocr_rotated_180.pdf"])
def test_scans_are_dead_lettered_with_the_reason(name: str) -> None:
    _, decision = routed(name)
    assert decision.outcome == "dead_letter"
    assert codes(decision) == ["no_text_layer"]
    assert "OCR" in decision.reasons[0]


# --- synthetic edge cases ---------------------------------------------------------------

def test_low_field_confidence_names_the_field_and_both_numbers() -> None:
    decision = decide(extraction(total_amount=field(4.11, 0.55), currency=field("USD", 0.95)),
                      [], DEFAULTS)
    assert decision == RouteDecision("review", ("low_confidence: total_amount 0.55 < 0.75",))


def test_every_failed_check_and_weak_field_is_a_reason() -> None:
    checks = [
        {"rule": "required", "field": "issuer", "ok": False, "message": "issuer is missing"},
        {"rule": "amount_valid", "field": "total_amount", "ok": True, "message": "fine"},
        {"rule": "currency_iso4217", "field": "currency", "ok": False, "message": "'EURO' no"},
    ]
    decision = decide(extraction(confidence=0.3, currency=field("EURO", 0.5)), checks, DEFAULTS)
    assert decision.outcome == "review"
    assert decision.reasons == (
        "low_classification_confidence: invoice 0.30 < 0.50",
        "failed_check: required issuer: issuer is missing",
        "failed_check: currency_iso4217 currency: 'EURO' no",
        "low_confidence: currency 0.50 < 0.75",
    )


def test_thresholds_are_configuration() -> None:
    doc = extraction(total_amount=field(4.11, 0.6))
    assert decide(doc, [], DEFAULTS).outcome == "review"
    assert decide(doc, [], Thresholds(review_below=0.5)).outcome == "decided"
    assert decide(extraction(confidence=0.6), [], Thresholds(classify_below=0.7)).reasons == (
        "low_classification_confidence: invoice 0.60 < 0.70",)


def test_threshold_is_inclusive_at_the_boundary() -> None:
    assert decide(extraction(total_amount=field(1.0, 0.75)), [], DEFAULTS).outcome == "decided"


def test_other_goes_to_review_whatever_its_confidence() -> None:
    decision = decide(extraction("other", 1.0), [], DEFAULTS)
    assert decision.outcome == "review" and codes(decision) == ["no_schema"]


def test_needs_ocr_is_dead_letter_even_if_an_extractor_claims_a_type() -> None:
    doc = extraction("invoice", 0.99, total_amount=field(1.0, 0.99))
    doc["needs_ocr"] = True
    assert decide(doc, [], DEFAULTS).outcome == "dead_letter"


def test_unreadable_reason_carries_the_extractors_detail() -> None:
    doc = extraction("unreadable", 1.0)
    doc["signals"] = ["unreadable: only 6 characters of text over scanned page images"]
    (reason,) = decide(doc, [], DEFAULTS).reasons
    assert reason.startswith("no_text_layer: ") and "only 6 characters" in reason


@needs_corpus
@pytest.mark.parametrize("name", ["bad/empty_camelot_blank_page.pdf",
                                  "bad/enc_pdfjs_empty_protected_ownerpw_only.pdf"])
def test_blank_pages_are_not_called_scans(name: str) -> None:
    _, decision = routed(name)
    assert decision.outcome == "dead_letter"
    assert codes(decision) == ["blank_document"]
    assert "OCR" not in decision.reasons[0] and "no images" in decision.reasons[0]


def test_unread_pages_send_a_confident_document_to_review() -> None:
    doc = extraction(total_amount=field(1.0, 0.99))
    doc["signals"] = ["unread_pages: 3-4"]
    decision = decide(doc, [], DEFAULTS)
    assert decision.outcome == "review"
    assert decision.reasons == ("unread_pages: pages 3-4 have no text layer and were not read",)


def test_malformed_extraction_is_dead_lettered() -> None:
    assert decide({"doc_type": "invoice"}, [], DEFAULTS).outcome == "dead_letter"
    assert codes(decide({"fields": {}}, [], DEFAULTS)) == ["malformed_extraction"]


def test_decision_is_frozen_data() -> None:
    decision = decide(extraction(), [], DEFAULTS)
    assert decision.outcome == "decided" and isinstance(decision.reasons, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.outcome = "review"  # type: ignore[misc]
