"""Extraction on the real sample corpus (parsed with streams.parse) and on small
synthetic parsed documents for the edge cases the corpus lacks.

Expected values were read off the PDFs themselves (and, for invoices, agree with the
invoice2data project's expected outputs for the same files).
"""

from __future__ import annotations

import functools
import json
import os
import re
from datetime import date
from pathlib import Path

import pytest

from streams.extract import DOC_TYPES, Extractor, RuleExtractor
from streams.extract_invoice import extract_invoice
from streams.extract_layout import Layout
from streams.extract_values import find_amounts, find_dates, parse_number
from streams.parse import parse_pdf

CORPUS = Path(
    os.environ.get("DOCSTREAMS_CORPUS")
    or Path(__file__).resolve().parents[3] / "shared" / "corpus"
)
REAL = sorted(p.name for p in (CORPUS / "real").glob("*.pdf"))
needs_corpus = pytest.mark.skipif(not REAL, reason=f"sample corpus not found at {CORPUS}")


@functools.cache
def parsed(name: str, folder: str = "real") -> dict:
    result = parse_pdf((CORPUS / folder / name).read_bytes())
    assert isinstance(result, dict), result
    return result


@functools.cache
def extracted(name: str, folder: str = "real") -> dict:
    return RuleExtractor().extract(parsed(name, folder))


def values(name: str) -> dict:
    return {k: f["value"] for k, f in extracted(name)["fields"].items()}


# --- invoices ---------------------------------------------------------------------------

INVOICES = {
    "invoice_aws.pdf": ("Amazon Web Services, Inc.", "42183017", "2014-08-03", 4.11, "USD"),
    "invoice_azure_interior.pdf": ("Azure Interior", "INV/2023/03/0008", "2023-03-20", 279.84,
                                   "USD"),
    "invoice_camelot_bol.pdf": ("bol.com b.v.", "8587333880016", "2015-10-29", 189.00, "EUR"),
    "invoice_flipkart.pdf": ("WS Retail Services Pvt. Ltd.", "BLR_WFLD20151000982590",
                             "2015-10-20", 319.00, "INR"),
    "invoice_netpresse.pdf": ("NETPRESSE", "2022089083", "2022-11-28", 56.02, "EUR"),
    "invoice_qualityhosting.pdf": ("QualityHosting AG", "30064443", "2014-05-07", 34.73, "EUR"),
}


@needs_corpus
@pytest.mark.parametrize("name", sorted(INVOICES))
def test_invoice_fields_are_the_true_ones(name: str) -> None:
    issuer, number, day, total, currency = INVOICES[name]
    out = extracted(name)
    assert out["doc_type"] == "invoice"
    assert values(name) == {"issuer": issuer, "invoice_number": number, "invoice_date": day,
                            "total_amount": total, "currency": currency}
    assert isinstance(out["fields"]["total_amount"]["value"], float)  # a JSON number


@needs_corpus
def test_invoice_labelled_values_are_confident() -> None:
    # "Invoice Number:", "Invoice Date:", "TOTAL AMOUNT DUE" sit next to their values.
    fields = extracted("invoice_aws.pdf")["fields"]
    for name in ("invoice_number", "invoice_date", "total_amount"):
        assert fields[name]["confidence"] >= 0.9, name


@needs_corpus
def test_total_is_the_gross_total_not_the_amount_left_to_pay() -> None:
    # bol.com: "Bedrag inclusief BTW € 189,00", then paid by iDeal, "Te betalen € 0,00".
    assert values("invoice_camelot_bol.pdf")["total_amount"] == 189.00


# --- contracts --------------------------------------------------------------------------

CONTRACTS = {
    "cuad_affiliate_creditcards.pdf": {
        "parties": ["Chase Bank USA, N.A.", "Affiliate"], "governing_law": "Delaware"},
    "cuad_agency_athens_bancshares.pdf": {
        "parties": ["Athens Bancshares Corporation", "Athens Federal Community Bank",
                    "Keefe, Bruyette & Woods, Inc."],
        "document_name": "AGENCY AGREEMENT", "governing_law": "New York"},
    "cuad_consulting_kiromic.pdf": {
        "parties": ["Kiromic, Inc", "Gianluca Rotino"], "agreement_date": "2018-07-20",
        "effective_date": "2018-07-01", "governing_law": "Texas"},
    "cuad_cooperation_spi_energy.pdf": {
        "parties": ["People’s Government of Fenyi County", "Xinyu Xinwei New Energy Co., Ltd."],
        "agreement_date": "2014-06-25"},
    "cuad_outsourcing_photronics.pdf": {
        "parties": ["Photronics, Inc.", "Dai Nippon Printing Co., Ltd.",
                    "Photronics DNP Photomask Corporation",
                    "Xiamen American Japan Photronics Mask Co., Ltd."],
        "document_name": "OUTSOURCING AGREEMENT", "agreement_date": "2017-05-16"},
    "cuad_underwriting_service_integrityfunds.pdf": {
        "parties": ["Integrity Short Term Government Fund", "Integrity Funds Distributor, LLC"],
        "document_name": "DISTRIBUTION AND SERVICES AGREEMENT", "agreement_date": "2020-01-18",
        "expiration_date": "2022-01-18", "governing_law": "Kansas"},
}
# Stated nowhere in the text, so they must be absent, not guessed: Chase's is a
# click-through form ("Last Updated" is a revision date); Athens' date line is blank
# (", 2009"); Photronics takes its law and Effective Date from another agreement.
ABSENT = {
    "cuad_affiliate_creditcards.pdf": {"agreement_date", "effective_date", "expiration_date"},
    "cuad_agency_athens_bancshares.pdf": {"agreement_date", "effective_date", "expiration_date"},
    "cuad_consulting_kiromic.pdf": {"expiration_date"},
    "cuad_cooperation_spi_energy.pdf": {"governing_law", "effective_date", "expiration_date"},
    "cuad_outsourcing_photronics.pdf": {"governing_law", "effective_date", "expiration_date"},
    "cuad_underwriting_service_integrityfunds.pdf": {"effective_date"},
}


@needs_corpus
@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_contract_fields_stated_in_the_text(name: str) -> None:
    out = extracted(name)
    assert out["doc_type"] == "contract"
    got = values(name)
    for field, expected in CONTRACTS[name].items():
        assert got.get(field) == expected, field
    assert not ABSENT[name] & got.keys(), "a field the document does not state was invented"


@needs_corpus
def test_governing_law_is_the_choice_of_law_clause_not_incorporation() -> None:
    # Athens: "a Tennessee corporation", "laws of Tennessee" for the opinions; but
    # Section 17: "construed in accordance with the laws of the State of New York".
    law = extracted("cuad_agency_athens_bancshares.pdf")["fields"]["governing_law"]
    assert law["value"] == "New York" and law["citations"][0]["page"] == 32


@needs_corpus
def test_unnamed_counterparty_lowers_confidence() -> None:
    # Chase's affiliate agreement is between Chase and "you as an “Affiliate”".
    assert extracted("cuad_affiliate_creditcards.pdf")["fields"]["parties"]["confidence"] < 0.75


# --- underwriting documents --------------------------------------------------------------

@needs_corpus
@pytest.mark.parametrize(("name", "doc_type", "field", "value"), [
    ("irs_f1040_blank_form.pdf", "form_1040", "tax_year", 2024),
    ("irs_fw2_blank_form.pdf", "w2", "tax_year", 2025),
    ("irs_fw4_blank_form.pdf", "w4", "tax_year", 2025),
    ("irs_fw9_blank_form.pdf", "w9", "form_revision", "2024-03"),
])
def test_irs_forms_classified_and_blank(name: str, doc_type: str, field: str,
                                        value: object) -> None:
    out = extracted(name)
    assert out["doc_type"] == doc_type
    assert out["fields"][field]["value"] == value
    assert "form_values" not in out["fields"]  # blank: nothing was filled in
    assert any(s.startswith("blank form") for s in out["signals"])


@needs_corpus
def test_bank_statement() -> None:
    out = extracted("aws_idp_bank_statement_multipage.pdf")
    assert out["doc_type"] == "bank_statement"
    got = values("aws_idp_bank_statement_multipage.pdf")
    assert got["statement_date"] == "2022-04-04"
    assert got["account_numbers"] == ["003525801543", "352580154336"]
    holder = out["fields"]["account_holder"]
    assert holder["value"] == "ALEJANDRO ROSALEZ"
    assert holder["confidence"] < 0.75  # read from the address block, not from a label


@needs_corpus
@pytest.mark.parametrize("name", [
    "camelot_budget.pdf", "camelot_good_energy_tariff.pdf", "pdfminer_dmca_summary.pdf",
    "pdfplumber_federal_register.pdf", "pdfplumber_senate_expenditures.pdf",
    "tabula_campaign_donors.pdf", "tabula_frx_2012_disclosure.pdf",
])
def test_reports_tables_and_legal_text_are_other(name: str) -> None:
    out = extracted(name)
    assert out["doc_type"] == "other"
    assert out["fields"] == {}


@needs_corpus
@pytest.mark.parametrize("name", [
    "scan_camelot_image_table.pdf", "rot_docling_ocr_rotated_90.pdf",
    "empty_camelot_blank_page.pdf", "scan_pdfjs_scan_bad.pdf",  # 6 stray chars on a scan
])
def test_scans_are_unreadable(name: str) -> None:
    out = extracted(name, "bad")
    assert out["doc_type"] == "unreadable" and out["fields"] == {}
    assert out["signals"][0].startswith("unreadable:")


@needs_corpus
def test_damaged_copy_of_a_form_is_still_classified() -> None:
    assert extracted("trunc_irs_fw9_minus_last_2kb.pdf", "bad")["doc_type"] == "w9"


# --- citations ----------------------------------------------------------------------------

def _page_words(page: dict) -> list[dict]:
    return [w for b in page["blocks"] for ln in b["lines"] for w in ln["words"]]


def _inside(inner: list[float], outer: list[float], slack: float = 0.05) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[2] <= outer[2] + slack and inner[3] <= outer[3] + slack)


def _citation_ok(doc: dict, citation: dict) -> None:
    page = doc["pages"][citation["page"] - 1]
    x0, y0, x1, y1 = citation["bbox"]
    assert 0 <= x0 < x1 <= page["width"] + 0.5 and 0 <= y0 < y1 <= page["height"] + 0.5
    words = [w for w in _page_words(page) if _inside(w["bbox"], citation["bbox"])]
    page_tokens = [w["text"] for w in words]
    # Every cited token is a word of that page lying inside the box...
    for token in citation["text"].split():
        assert token in page_tokens, (token, citation)
    # ...and the box is the union of the cited words: each edge is touched by one of them.
    cited = [w for w in words if w["text"] in citation["text"].split()]
    assert min(w["bbox"][0] for w in cited) == pytest.approx(x0, abs=0.01)
    assert min(w["bbox"][1] for w in cited) == pytest.approx(y0, abs=0.01)
    assert max(w["bbox"][2] for w in cited) == pytest.approx(x1, abs=0.01)
    assert max(w["bbox"][3] for w in cited) == pytest.approx(y1, abs=0.01)


@needs_corpus
@pytest.mark.parametrize("name", REAL)
def test_every_field_cites_real_words_on_a_real_page(name: str) -> None:
    doc, out = parsed(name), extracted(name)
    for field_name, field in out["fields"].items():
        assert 0.0 <= field["confidence"] <= 1.0
        assert field["citations"], field_name
        for citation in field["citations"]:
            if field_name == "form_values":  # widget boxes, not words
                continue
            _citation_ok(doc, citation)
        if isinstance(field["value"], str | int | float):
            cited = " ".join(c["text"] for c in field["citations"])
            assert " ".join(field["raw"].split()) in " ".join(cited.split()), field_name


@needs_corpus
@pytest.mark.parametrize("name", REAL)
def test_output_contract(name: str) -> None:
    out = extracted(name)
    assert set(out) == {"doc_type", "doc_type_confidence", "extractor", "fields", "signals"}
    assert out["doc_type"] in DOC_TYPES
    assert 0.0 <= out["doc_type_confidence"] <= 1.0
    assert out["extractor"] == "rules/1.0.0"
    assert out["signals"] and all(isinstance(s, str) for s in out["signals"])
    assert json.loads(json.dumps(out)) == out  # plain JSON all the way down
    for field in out["fields"].values():
        assert set(field) == {"value", "raw", "confidence", "citations"}
        assert field["value"] is not None  # not found means omitted, never null


@needs_corpus
def test_deterministic() -> None:
    doc = parsed("invoice_flipkart.pdf")
    assert RuleExtractor().extract(doc) == RuleExtractor().extract(json.loads(json.dumps(doc)))


def test_rule_extractor_is_an_extractor() -> None:
    extractor: Extractor = RuleExtractor()
    assert (extractor.name, extractor.version) == ("rules", "1.0.0")


# --- synthetic parsed documents -----------------------------------------------------------

def synthetic(rows: list[list[tuple[float, str]]], *, rotation: int = 0, widgets=None) -> dict:
    """A one-page parsed document: each row is [(x, text), ...] at 14 pt spacing;
    every character is 5 pt wide, so word boxes are exact and predictable."""
    blocks = []
    for i, row in enumerate(rows):
        y0 = 50.0 + 14 * i
        for x, text in row:
            words, cursor = [], x
            for token in text.split():
                box = [cursor, y0, cursor + 5 * len(token), y0 + 10]
                words.append({"text": token, "bbox": box})
                cursor += 5 * len(token) + 5
            bbox = [x, y0, cursor - 5, y0 + 10]
            blocks.append({"bbox": bbox, "lines": [{"bbox": bbox, "text": text, "words": words}]})
    page = {"number": 1, "width": 612.0, "height": 792.0, "rotation": rotation,
            "has_text_layer": bool(blocks), "image_count": 0, "blocks": blocks,
            "tables": [], "widgets": widgets or []}
    return {"parser_version": "test", "sha256": "0" * 64, "page_count": 1, "encrypted": False,
            "metadata": {}, "needs_ocr": not blocks, "warnings": [], "pages": [page]}


def invoice_rows(*extra: list[tuple[float, str]]) -> list[list[tuple[float, str]]]:
    return [[(40, "ACME Widgets Ltd")], [(40, "INVOICE")], *extra,
            [(40, "Widget"), (300, "Qty 2"), (400, "Unit price 10.00")]]


def test_missing_invoice_number_is_omitted_not_invented() -> None:
    doc = synthetic(invoice_rows([(40, "Invoice date: 2 March 2021")], [(40, "Total: USD 20.00")]))
    out = RuleExtractor().extract(doc)
    assert out["doc_type"] == "invoice"
    assert "invoice_number" not in out["fields"]
    assert out["fields"]["invoice_date"]["value"] == "2021-03-02"
    assert out["fields"]["total_amount"]["value"] == 20.0


def test_unlabelled_values_are_inferred_with_low_confidence() -> None:
    doc = synthetic(invoice_rows([(40, "Invoice No. A-17"), (300, "12/03/2021")],
                                 [(40, "Subtotal 18.00"), (300, "Amount 20.00 EUR")]))
    fields = RuleExtractor().extract(doc)["fields"]
    assert fields["invoice_number"]["value"] == "A-17"
    assert fields["invoice_number"]["confidence"] >= 0.9
    assert fields["total_amount"]["value"] == 20.0  # largest amount: a guess...
    assert fields["total_amount"]["confidence"] < 0.75  # ...and scored as one
    assert fields["invoice_date"]["confidence"] < 0.75  # first date, no label


@pytest.mark.parametrize(("currency_row", "expected", "ambiguous"), [
    ((40, "Total: 20,00 EUR"), "2020-01-05", True),  # European: day first, but a guess
    ((40, "Total: US$ 20.00"), "2020-05-01", True),  # US English with dollars: month first
])
def test_ambiguous_numeric_date(currency_row, expected: str, ambiguous: bool) -> None:
    doc = synthetic(invoice_rows([(40, "Invoice number: 77"), (300, "Invoice date: 05/01/2020")],
                                 [currency_row]))
    field = RuleExtractor().extract(doc)["fields"]["invoice_date"]
    assert field["value"] == expected
    assert (field["confidence"] < 0.75) is ambiguous


def test_label_and_value_far_apart_on_one_row_cite_only_the_value() -> None:
    doc = synthetic(invoice_rows([(40, "Invoice Number:"), (500, "42183017")],
                                 [(40, "Grand Total"), (500, "$4.11")]))
    fields = RuleExtractor().extract(doc)["fields"]
    assert fields["invoice_number"]["citations"] == [
        {"page": 1, "bbox": [500.0, 78.0, 540.0, 88.0], "text": "42183017"}]
    assert fields["total_amount"]["value"] == 4.11
    assert fields["currency"]["value"] == "USD" and fields["currency"]["confidence"] < 0.9


def test_expiration_computed_from_a_stated_term_is_marked_and_cites_the_term() -> None:
    doc = synthetic([
        [(40, "SERVICES AGREEMENT")],
        [(40, "This Services Agreement is made and entered into as of March 1, 2019 by and")],
        [(40, "between Foo Corp., a Delaware corporation (the “Company”), and Bar LLC, a")],
        [(40, "Texas limited liability company (the “Provider”). This Agreement is effective")],
        [(40, "as of April 1, 2019 and shall continue for a term of two (2) years.")],
        [(40, "This Agreement shall be governed by the laws of the State of New York.")],
    ])
    fields = RuleExtractor().extract(doc)["fields"]
    assert fields["parties"]["value"] == ["Foo Corp.", "Bar LLC"]
    assert fields["agreement_date"]["value"] == "2019-03-01"
    assert fields["effective_date"]["value"] == "2019-04-01"
    expiry = fields["expiration_date"]
    assert expiry["value"] == "2021-04-01" and expiry["confidence"] < 0.75
    assert "term of two (2) years" in expiry["raw"]
    assert any("years" in c["text"] for c in expiry["citations"])
    assert fields["governing_law"]["value"] == "New York"


def test_term_without_an_effective_date_gives_no_expiration() -> None:
    doc = synthetic([
        [(40, "CONSULTING AGREEMENT")],
        [(40, "This Agreement is made between Foo Corp. (the “Company”) and Jane Roe")],
        [(40, "(the “Consultant”). This Agreement shall continue for a period of one year.")],
    ])
    fields = RuleExtractor().extract(doc)["fields"]
    assert fields["parties"]["value"] == ["Foo Corp.", "Jane Roe"]
    assert "expiration_date" not in fields


def test_no_text_layer_is_unreadable() -> None:
    out = RuleExtractor().extract(synthetic([]))
    assert out["doc_type"] == "unreadable" and out["fields"] == {}


def test_filled_form_values_are_read_from_widgets() -> None:
    widgets = [{"name": "f1_01", "type": "Text", "value": "Jane Roe", "bbox": [40, 100, 300, 112]},
               {"name": "c1_1", "type": "CheckBox", "value": "Off", "bbox": [40, 120, 48, 128]}]
    doc = synthetic([[(40, "Form W-9 Request for Taxpayer Identification Number")]],
                    widgets=widgets)
    out = RuleExtractor().extract(doc)
    assert out["doc_type"] == "w9"
    field = out["fields"]["form_values"]
    assert field["value"] == {"f1_01": "Jane Roe"}
    assert field["citations"] == [{"page": 1, "bbox": [40, 100, 300, 112], "text": "Jane Roe"}]


def test_rotated_page_keeps_unrotated_boxes() -> None:
    # /Rotate 90 shows the page turned clockwise: a line that reads left to right on
    # screen runs bottom to top in PDF space (display x = height - y).
    words = [{"text": t, "bbox": [100, 170 - 45 * i, 110, 210 - 45 * i]}
             for i, t in enumerate(["Invoice", "No:", "X-99"])]
    doc = synthetic([])
    doc["needs_ocr"] = False
    doc["pages"][0].update(rotation=90, has_text_layer=True, blocks=[
        {"bbox": [100, 50, 110, 210], "lines": [{"bbox": [100, 50, 110, 210],
                                                 "text": "Invoice No: X-99", "words": words}]}])
    fields = extract_invoice(Layout(doc))
    assert fields["invoice_number"]["value"] == "X-99"
    assert fields["invoice_number"]["citations"][0]["bbox"] == [100, 80, 110, 120]


@needs_corpus
def test_rows_read_the_same_on_pages_rotated_every_way() -> None:
    # PyMuPDF test-2812: one table drawn on pages with /Rotate 0, 90, 180 and 270.
    doc = parsed("rot_pymupdf_test_2812_landscape_table.pdf", "bad")
    layout = Layout(doc)
    assert [p["rotation"] for p in doc["pages"]] == [0, 90, 180, 270]
    first_rows = [[s.text for s in layout.rows[n][0]] for n in (1, 2, 3, 4)]
    assert first_rows == [[f"cell[0][{i}]" for i in range(5)]] * 4


# --- value parsing --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("January 5, 2020", date(2020, 1, 5)), ("August 3 , 2014", date(2014, 8, 3)),
    ("5 janvier 2020", date(2020, 1, 5)), ("5. Januar 2020", date(2020, 1, 5)),
    ("7. Mai 2014", date(2014, 5, 7)), ("29 oktober 2015", date(2015, 10, 29)),
    ("the 16th day of May, 2017", date(2017, 5, 16)), ("1er février 2021", date(2021, 2, 1)),
    ("28/11/2022", date(2022, 11, 28)), ("03/20/2023", date(2023, 3, 20)),
    ("20-10-2015", date(2015, 10, 20)), ("21.05.14", date(2014, 5, 21)),
    ("2024-02-29", date(2024, 2, 29)),
])
def test_dates(text: str, expected: date) -> None:
    assert [d.value for d in find_dates(text)] == [expected]


def test_impossible_and_partial_dates_are_not_dates() -> None:
    assert find_dates("31/02/2020 , 2009 2014-2015 30.02.21") == []


@pytest.mark.parametrize(("text", "expected"), [
    ("1.234,56", 1234.56), ("1,234.56", 1234.56), ("34,73", 34.73), ("4.11", 4.11),
    ("1,234", 1234.0), ("10.000,00", 10000.0), ("1'234.50", 1234.5),
])
def test_number_formats(text: str, expected: float) -> None:
    assert parse_number(text) == expected


def test_amounts_need_a_currency_or_two_decimals() -> None:
    found = [(a.value, a.currency) for a in find_amounts("2014 47774 14.50% € 189,00 $4.11 319.00")]
    assert found == [(189.0, "EUR"), (4.11, "USD"), (319.0, None)]
    assert re.fullmatch(r"[\d.]+", "319.00")


def contract_doc(*sentences: str) -> dict:
    rows = [[(40, "LICENSE AGREEMENT")],
            [(40, "This License Agreement is made and entered into as of February 29, 2016 by")],
            [(40, "and between Foo Corp., a Delaware corporation (the “Licensor”), and Bar LLC")],
            [(40, "(the “Licensee”).")]]
    return synthetic(rows + [[(40, s)] for s in sentences])


def test_effective_date_restated_as_the_agreement_date_cites_both() -> None:
    doc = contract_doc("This Agreement is effective as of the date first above written.",
                       "The resignation is effective as of June 1, 2016.")
    effective = RuleExtractor().extract(doc)["fields"]["effective_date"]
    assert effective["value"] == "2016-02-29"  # not the resignation's date
    assert {c["text"] for c in effective["citations"]} == {
        "February 29, 2016", "effective as of the date first above written."}


def test_defined_effective_date_and_a_term_from_a_leap_day() -> None:
    doc = contract_doc("“Effective Date” means March 1, 2016.",
                       "This Agreement has an initial term of one (1) year.")
    fields = RuleExtractor().extract(doc)["fields"]
    assert fields["effective_date"]["value"] == "2016-03-01"
    assert fields["expiration_date"]["value"] == "2017-03-01"


def test_term_from_a_leap_day_ends_on_the_last_day_of_february() -> None:
    doc = contract_doc("This Agreement is effective as of February 29, 2016 and this Agreement "
                       "shall have a term of one year.")
    assert RuleExtractor().extract(doc)["fields"]["expiration_date"]["value"] == "2017-02-28"


def test_governing_law_naming_two_jurisdictions() -> None:
    doc = contract_doc("This Agreement shall be governed by the laws of England and Wales.")
    assert RuleExtractor().extract(doc)["fields"]["governing_law"]["value"] == "England and Wales"


def test_scanned_pages_inside_a_text_document_are_flagged_blank_ones_are_not() -> None:
    doc = synthetic(invoice_rows([(40, "Invoice number: 77")], [(40, "Total: 20,00 EUR")]))
    page = doc["pages"][0]
    blank = {**page, "number": 2, "blocks": [], "has_text_layer": False, "image_count": 0}
    scan = {**page, "number": 3, "blocks": [], "has_text_layer": False, "image_count": 1}
    doc["pages"] += [blank, scan, {**scan, "number": 4}]
    assert "unread_pages: 3-4" in RuleExtractor().extract(doc)["signals"]
