"""The parse core on real corpus files: every bad file has a recorded outcome, and the
layout the extractors rely on (words, rotation, widgets, tables, text-layer flags) is there."""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from streams import parse
from streams.parse import PARSER_VERSION, ParseFailure, parse_pdf

CORPUS = Path(os.environ.get("DOCSTREAMS_CORPUS")
              or Path(__file__).resolve().parents[3] / "shared" / "corpus")

if not CORPUS.is_dir():
    pytest.skip(f"sample corpus not found at {CORPUS} (set DOCSTREAMS_CORPUS)",
                allow_module_level=True)

# bad/ file -> pages it parses to, or the failure reason it must give.
EXPECTED_BAD: dict[str, int | str] = {
    "broken_pdfjs_bug1020226_no_startxref.pdf": "zero_pages",
    "broken_pdfjs_helloworld_bad.pdf": 1,
    "broken_pdfjs_pdfbox_4352_xref_gen_missing.pdf": 1,
    "broken_pdfjs_pdfjsbad1586.pdf": 1,
    "broken_pdfjs_poppler_742_fuzzed_unopenable.pdf": "unopenable",
    "broken_pdfjs_poppler_85140_unopenable.pdf": "unopenable",
    "broken_pdfjs_redhat_1531897.pdf": "zero_pages",
    "broken_pdfjs_xref_command_missing.pdf": 1,
    "broken_pdfminer_zen_of_python_corrupted.pdf": 1,
    "broken_pdfplumber_malformed_issue932.pdf": 1,
    "cjk_camelot_china.pdf": 1,
    "cjk_pymupdf_chinese_tables.pdf": 1,
    "crash_pymupdf_bug1945_save_clean_segv.pdf": 15,
    "crash_pymupdf_test_3150_select_hang.pdf": 4,
    "crash_pymupdf_test_3357_gettext_hang.pdf": 2,
    "crash_pymupdf_test_4466_pixmap_unicolor.pdf": 1,
    "crash_pymupdf_test_4712_a.pdf": 6,
    "crash_pymupdf_test_4712_b.pdf": 6,
    "crash_pymupdf_test_4907_segv_textpage.pdf": 1,
    "empty_camelot_blank_page.pdf": 1,
    "empty_pdfplumber_zero_bytes.pdf": "empty_file",
    "enc_camelot_health_protected_pw-userpass.pdf": 1,
    "enc_docling_2206.01062_pg3_pw-1234.pdf": 1,
    "enc_pdfjs_empty_protected_ownerpw_only.pdf": 1,
    "enc_pdfjs_encrypted_attachment.pdf": "encrypted",
    "enc_pdfjs_issue3371_pw-ELXRTQWS.pdf": 1,
    "enc_pdfjs_print_protection.pdf": "encrypted",
    "enc_pdfminer_aes128_pw-foo.pdf": 1,
    "enc_pdfminer_rc4-40_pw-foo.pdf": 1,
    "enc_pdfplumber_password_example_pw-test.pdf": 4,
    "form_pdfjs_xfa_issue14315.pdf": 1,
    "form_pdfminer_acroform_test.pdf": 1,
    "form_pymupdf_widgettest.pdf": 1,
    "rot_camelot_anticlockwise_table.pdf": 1,
    "rot_docling_ocr_rotated_180.pdf": 1,
    "rot_docling_ocr_rotated_90.pdf": 1,
    "rot_docling_rotation_mismatch.pdf": 1,
    "rot_pymupdf_test_2812_landscape_table.pdf": 4,
    "rtl_camelot_arabic.pdf": 1,
    "rtl_pypdf_habibi_rotated.pdf": 4,
    "scan_aws_idp_rvl_cdip_package.pdf": 10,
    "scan_camelot_image_table.pdf": 1,
    "scan_pdfjs_scan_bad.pdf": 1,
    "trunc_cuad_agency_90pct.pdf": "zero_pages",
    "trunc_invoice_aws_first_1kb.pdf": "zero_pages",
    "trunc_irs_fw9_minus_last_2kb.pdf": 6,
}


def password_from_name(name: str) -> str | None:
    """The corpus puts an encrypted file's password in its name after ``pw-``."""
    return name.rsplit(".", 1)[0].split("pw-", 1)[1] if "pw-" in name else None


def corpus_bytes(rel: str) -> bytes:
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"corpus file {path} not present")
    return path.read_bytes()


@cache
def parsed(rel: str) -> dict[str, Any] | ParseFailure:
    """Parse a corpus file once per test run, with the password its name gives."""
    return parse_pdf(corpus_bytes(rel), password=password_from_name(rel))


def parsed_ok(rel: str) -> dict[str, Any]:
    result = parsed(rel)
    assert isinstance(result, dict), f"{rel}: {result}"
    return result


def all_words(page: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for block in page["blocks"] for line in block["lines"] for w in line["words"]]


def inside(inner: list[float], outer: list[float], slack: float = 1.0) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[2] <= outer[2] + slack and inner[3] <= outer[3] + slack)


# --- every bad file has a recorded outcome ------------------------------------------------

BAD_FILES = sorted(p.name for p in (CORPUS / "bad").glob("*.pdf"))


@pytest.mark.parametrize("name", BAD_FILES)
def test_every_bad_file_parses_or_fails_with_its_reason(name: str):
    assert name in EXPECTED_BAD, f"new corpus file {name}: add its expected outcome"
    expected = EXPECTED_BAD[name]
    result = parsed(f"bad/{name}")
    if isinstance(expected, str):
        assert isinstance(result, ParseFailure), f"expected {expected}, parsed {name}"
        assert result.reason == expected, result.message
        assert result.message
        return
    assert isinstance(result, dict), f"expected {expected} pages, got {result}"
    assert result["page_count"] == len(result["pages"]) == expected
    assert [p["number"] for p in result["pages"]] == list(range(1, expected + 1))
    assert all(p["error"] is None for p in result["pages"])
    json.dumps(result, allow_nan=False)  # the artifact is plain JSON


def test_artifact_names_its_parser_and_the_bytes():
    data = corpus_bytes("real/invoice_aws.pdf")
    result = parsed_ok("real/invoice_aws.pdf")
    assert result["parser_version"] == PARSER_VERSION
    assert PARSER_VERSION.startswith("pymupdf-") and "/layout-" in PARSER_VERSION
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["metadata"]["producer"] == "Apache FOP Version 0.95"
    assert result["encrypted"] is False and result["repaired"] is False


# --- failures -----------------------------------------------------------------------------

def test_zero_bytes_is_empty_file():
    assert parse_pdf(b"").reason == "empty_file"


def test_zero_pages_after_repair_is_a_failure_not_an_empty_success():
    result = parsed("bad/trunc_invoice_aws_first_1kb.pdf")
    assert isinstance(result, ParseFailure) and result.reason == "zero_pages"
    assert "repair" in result.message


def test_digest_is_checked_before_parsing():
    data = corpus_bytes("bad/enc_pdfminer_aes128_pw-foo.pdf")
    other = hashlib.sha256(b"other bytes").hexdigest()
    failure = parse_pdf(data, expected_sha256=other, password="foo")
    assert isinstance(failure, ParseFailure) and failure.reason == "digest_mismatch"
    assert other in failure.message
    digest = hashlib.sha256(data).hexdigest().upper()  # case does not matter
    assert isinstance(parse_pdf(data, expected_sha256=digest, password="foo"), dict)


def test_not_a_pdf_is_unopenable_even_when_mupdf_could_read_it():
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    assert parse_pdf(png).reason == "unopenable"
    assert parse_pdf(b"hello, plain text").reason == "unopenable"


def test_encrypted_without_password_or_with_wrong_one():
    data = corpus_bytes("bad/enc_pdfminer_aes128_pw-foo.pdf")
    missing = parse_pdf(data)
    assert missing.reason == "encrypted" and "none was supplied" in missing.message
    wrong = parse_pdf(data, password="not-foo")
    assert wrong.reason == "encrypted" and "wrong" in wrong.message


def test_decrypted_text_is_really_there():
    # Guards the PyMuPDF trap: reading needs_pass after authenticate() empties the text.
    result = parsed_ok("bad/enc_pdfminer_aes128_pw-foo.pdf")
    assert result["encrypted"] is True
    assert all_words(result["pages"][0])[0]["text"] == "Secret!"
    multi = parsed_ok("bad/enc_pdfplumber_password_example_pw-test.pdf")
    assert all(p["has_text_layer"] for p in multi["pages"])


def test_owner_password_only_opens_without_a_password():
    assert parsed_ok("bad/enc_pdfjs_empty_protected_ownerpw_only.pdf")["encrypted"] is False


def test_page_cap():
    data = corpus_bytes("bad/crash_pymupdf_bug1945_save_clean_segv.pdf")  # 15 pages
    failure = parse_pdf(data, max_pages=10)
    assert failure.reason == "too_many_pages" and "15" in failure.message


def test_mupdf_warnings_are_captured_and_trimmed():
    result = parsed_ok("bad/broken_pdfjs_xref_command_missing.pdf")
    assert result["repaired"] is True
    assert any("repair" in w for w in result["warnings"])
    assert len(result["warnings"]) <= 21 and all(len(w) <= 200 for w in result["warnings"])
    assert parsed_ok("real/invoice_aws.pdf")["warnings"] == []  # no leak between documents


# --- layout -------------------------------------------------------------------------------

def test_scanned_pages_are_flagged_not_failed():
    result = parsed_ok("bad/scan_aws_idp_rvl_cdip_package.pdf")
    assert result["needs_ocr"] is True
    assert all(not p["has_text_layer"] and p["image_count"] >= 1 for p in result["pages"])
    assert all(p["blocks"] == [] for p in result["pages"])
    assert parsed_ok("bad/scan_camelot_image_table.pdf")["needs_ocr"] is True
    assert parsed_ok("real/invoice_aws.pdf")["needs_ocr"] is False


def test_rotation_is_recorded_and_sizes_stay_unrotated():
    result = parsed_ok("bad/rot_pymupdf_test_2812_landscape_table.pdf")
    assert [p["rotation"] for p in result["pages"]] == [0, 90, 180, 270]
    sizes = [(p["width"], p["height"]) for p in result["pages"]]
    assert sizes == [(842.0, 595.0), (595.0, 842.0), (842.0, 595.0), (595.0, 842.0)]
    assert parsed_ok("bad/rot_docling_ocr_rotated_90.pdf")["pages"][0]["rotation"] == 270


def test_invoice_words_have_plausible_boxes_in_their_lines():
    page = parsed_ok("real/invoice_aws.pdf")["pages"][0]
    page_box = [0.0, 0.0, page["width"], page["height"]]
    words = all_words(page)
    assert len(words) > 250
    for block in page["blocks"]:
        for line in block["lines"]:
            assert inside(line["bbox"], block["bbox"])
            for word in line["words"]:
                x0, y0, x1, y1 = word["bbox"]
                assert x0 < x1 and y0 < y1 and inside(word["bbox"], page_box)
                assert inside(word["bbox"], line["bbox"]) and word["text"] in line["text"]
    title = next(ln for b in page["blocks"] for ln in b["lines"]
                 if ln["text"] == "Amazon Web Services Invoice")
    assert [w["text"] for w in title["words"]] == ["Amazon", "Web", "Services", "Invoice"]
    assert title["bbox"][1] < page["height"] / 4  # the heading is at the top
    assert any(w["text"] == "$4.11" for w in words)
    bottoms = [b["bbox"][3] for b in page["blocks"]]
    assert bottoms == sorted(bottoms)  # reading order: by bottom, then left


def test_widgets_are_captured_on_forms():
    widgets = parsed_ok("bad/form_pdfminer_acroform_test.pdf")["pages"][0]["widgets"]
    by_name = {w["name"]: w for w in widgets}
    assert len(widgets) == 7
    assert {w["type"] for w in widgets} >= {"Text", "CheckBox", "RadioButton", "ComboBox",
                                             "ListBox"}
    assert by_name["Combo Box0"]["value"] == "111"
    assert by_name["Text Field0"]["bbox"] == [171.79, 635.9, 521.89, 684.61]
    box = {w["name"]: w for w in parsed_ok("bad/form_pymupdf_widgettest.pdf")["pages"][0][
        "widgets"]}
    assert box["Button-1"] == {"name": "Button-1", "type": "CheckBox", "value": "Yes",
                               "bbox": [202.0, 130.0, 215.0, 145.0]}
    f1040 = parsed_ok("real/irs_f1040_blank_form.pdf")["pages"][0]["widgets"]
    assert "topmostSubform[0].Page1[0].f1_01[0]" in {w["name"] for w in f1040}
    assert parsed_ok("bad/form_pdfjs_xfa_issue14315.pdf")["pages"][0]["widgets"] == []


# --- tables -------------------------------------------------------------------------------

@pytest.fixture
def find_tables_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts find_tables() calls (page numbers) while still running it."""
    calls: list[int] = []
    real = parse.pymupdf.Page.find_tables

    def spy(page, *args, **kwargs):
        calls.append(page.number + 1)
        return real(page, *args, **kwargs)

    monkeypatch.setattr(parse.pymupdf.Page, "find_tables", spy)
    return calls


def test_ruled_tables_are_found_with_their_cells(find_tables_calls: list[int]):
    result = parse_pdf(corpus_bytes("bad/cjk_camelot_china.pdf"))
    assert find_tables_calls == [1]
    tables = result["pages"][0]["tables"]
    grid = max(tables, key=lambda t: len(t["rows"]))
    assert (len(grid["rows"]), len(grid["rows"][0])) == (13, 10)
    assert "FLA Code/ Compliance issue" in grid["rows"][1]
    assert inside(grid["bbox"], [0, 0, result["pages"][0]["width"], result["pages"][0]["height"]])


def test_table_cells_take_the_words_text():
    # Table.extract() would give "$411\n." for "$4.11"; cells are built from words.
    rows = parsed_ok("real/invoice_aws.pdf")["pages"][0]["tables"][0]["rows"]
    assert ["AWS Service Charges $4.11", None] in rows


def test_tables_on_rotated_pages_are_in_unrotated_space():
    for page in parsed_ok("bad/rot_pymupdf_test_2812_landscape_table.pdf")["pages"]:
        (table,) = page["tables"]
        assert table["rows"][0][:2] == ["cell[0][0]", "cell[0][1]"]
        assert inside(table["bbox"], [0, 0, page["width"], page["height"]])


def test_tables_are_not_searched_on_plain_text_pages(find_tables_calls: list[int]):
    result = parse_pdf(corpus_bytes("real/cuad_consulting_kiromic.pdf"))  # 7 pages of prose
    assert result["page_count"] == 7 and find_tables_calls == []
    assert all(p["tables"] == [] for p in result["pages"])


def test_a_borderless_table_is_not_searched():
    # Documented limit: only ruled tables; this one has a page frame and no rules.
    result = parsed_ok("real/tabula_campaign_donors.pdf")
    assert result["pages"][0]["tables"] == [] and result["pages"][0]["has_text_layer"]


def _lines(*segments: tuple[float, float, float, float]) -> list[dict[str, Any]]:
    return [{"items": [("l", (x0, y0), (x1, y1)) for x0, y0, x1, y1 in segments]}]


def test_grid_heuristic_on_simple_drawings():
    frame = {"items": [("re", (40.0, 40.0, 560.0, 750.0), 1)]}
    rule_across = _lines((40, 100, 560, 100))
    assert not parse._grid_suggested([frame])
    assert not parse._grid_suggested([frame, *rule_across])  # a box with one rule: 2 x 1
    cross = _lines((40, 300, 560, 300), (300, 40, 300, 750))
    assert parse._grid_suggested([frame, *cross])  # 2 x 2
    # As in a Federal Register table: rules above and under the header and between the
    # columns, no outer frame, the column rules drawn in pieces.
    open_table = _lines((45, 673, 567, 673), (45, 697, 567, 697),
                        *[(x, 673, x, 697) for x in (191, 338, 416)],
                        *[(x, 697, x, 738) for x in (191, 338, 416)])
    assert parse._grid_suggested(open_table)
    assert not parse._grid_suggested(_lines((72, 700, 300, 700), (72, 720, 300, 720)))
