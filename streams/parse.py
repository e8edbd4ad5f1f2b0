"""Parse stage core: PDF bytes in, the parsed-document dict (docs/parsed-document.md) out.

Pure and deterministic: no Kafka, no files, no clock. A document that cannot be parsed
comes back as a ``ParseFailure`` with a stable reason, never as an exception. The one
exception on purpose is ``MemoryError`` (Python's or MuPDF's), which the process pool
turns into ``parse_memory``. This is the only module in the project that imports pymupdf.
"""

from __future__ import annotations

import hashlib
import math
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

# With pymupdf_layout installed, `import pymupdf` loads an ONNX layout model (+0.4 s and
# +270 MB of address space in every pool child, which the memory cap would have to absorb).
# Tables are found from vector lines only (use_layout=False), so keep the model out.
sys.modules.setdefault("pymupdf.layout", None)  # type: ignore[arg-type]
import pymupdf  # noqa: E402

pymupdf.TOOLS.mupdf_display_errors(False)  # MuPDF's messages are collected into "warnings"
pymupdf.TOOLS.mupdf_display_warnings(False)
pymupdf.no_recommend_layout()
pymupdf.set_messages(pylogging=True)  # find_tables reports its own failures via message()

LAYOUT_FORMAT = 1  # bump when the shape or the content of the artifact changes
PARSER_VERSION = f"pymupdf-{pymupdf.version[0]}/mupdf-{pymupdf.version[1]}/layout-{LAYOUT_FORMAT}"
MAX_PAGES = 2000

# Text extraction without images: keeping image blocks decodes every image (0.5 s on a scan).
_TEXT_FLAGS = pymupdf.TEXTFLAGS_TEXT
_MAX_WARNINGS = 20
_MAX_WARNING_CHARS = 200
_MAX_METADATA_CHARS = 500
_METADATA_KEYS = {
    "title": "title", "author": "author", "subject": "subject", "keywords": "keywords",
    "creator": "creator", "producer": "producer", "creationDate": "creation_date",
    "modDate": "mod_date", "format": "format",
}


class _Word(NamedTuple):
    x: float  # centre, unrotated space
    y: float
    text: str


@dataclass(frozen=True)
class ParseFailure:
    """A document that cannot be parsed; ``reason`` is a stable code (see the contract)."""

    reason: str
    message: str


def parse_pdf(data: bytes, *, expected_sha256: str | None = None, password: str | None = None,
              max_pages: int = MAX_PAGES) -> dict[str, Any] | ParseFailure:
    """Parse PDF bytes into the parsed-document dict, or say why not."""
    if not data:
        return ParseFailure("empty_file", "the document has zero bytes")
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and expected_sha256.lower() != digest:
        return ParseFailure("digest_mismatch",
                            f"bytes hash to sha256 {digest}, publisher recorded {expected_sha256}")
    pymupdf.TOOLS.reset_mupdf_warnings()
    opened = _open(data, password)
    if isinstance(opened, ParseFailure):
        return opened
    doc, encrypted = opened
    try:
        return _parse_document(doc, digest, encrypted, max_pages)
    finally:
        doc.close()
        # Drop MuPDF's cached fonts and images, so that a pool child's memory does not
        # grow from one document to the next (the cap is per process, not per document).
        pymupdf.TOOLS.store_shrink(100)


def _open(data: bytes, password: str | None) -> tuple[pymupdf.Document, bool] | ParseFailure:
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:
        _raise_if_out_of_memory(exc)
        return ParseFailure("unopenable",
                            f"MuPDF cannot open it: {_describe(exc)}{_first_warnings()}")
    if not doc.is_pdf:  # MuPDF sniffs the content and would happily open a PNG or an EPUB
        kind = doc.metadata.get("format") if doc.metadata else None
        doc.close()
        return ParseFailure("unopenable", f"not a PDF (MuPDF reads it as {kind or 'unknown'})")
    # Read needs_pass only here, before authenticate(): reading it after a successful
    # authenticate() silently breaks decryption in PyMuPDF 2.0 (see corpus/MANIFEST.md).
    if not doc.needs_pass:
        return doc, False
    if not password:
        doc.close()
        return ParseFailure("encrypted", "the document needs a password and none was supplied")
    if not doc.authenticate(password):
        doc.close()
        return ParseFailure("encrypted", "the document needs a password and the one supplied "
                                         "is wrong")
    return doc, True


def _parse_document(doc: pymupdf.Document, digest: str, encrypted: bool,
                    max_pages: int) -> dict[str, Any] | ParseFailure:
    try:
        page_count = doc.page_count
    except Exception as exc:
        _raise_if_out_of_memory(exc)
        return ParseFailure("unopenable", f"MuPDF cannot count its pages: {_describe(exc)}")
    if page_count == 0:
        repaired = " after repair" if doc.is_repaired else ""
        return ParseFailure("zero_pages",
                            f"the document opens{repaired} but has no pages{_first_warnings()}")
    if page_count > max_pages:
        return ParseFailure("too_many_pages",
                            f"{page_count} pages, more than the limit of {max_pages}")
    pages = [_parse_page(doc, number) for number in range(page_count)]
    return {
        "parser_version": PARSER_VERSION,
        "sha256": digest,
        "page_count": page_count,
        "encrypted": encrypted,
        "repaired": bool(doc.is_repaired),
        "metadata": _metadata(doc),
        "needs_ocr": not any(page["has_text_layer"] for page in pages),
        "warnings": _warnings(),
        "pages": pages,
    }


def _parse_page(doc: pymupdf.Document, index: int) -> dict[str, Any]:
    """One page. A page MuPDF cannot read is kept, empty, with its error; a failure in the
    table or form step keeps the text and is recorded the same way."""
    result: dict[str, Any] = {
        "number": index + 1, "width": 0.0, "height": 0.0, "rotation": 0,
        "has_text_layer": False, "image_count": 0,
        "blocks": [], "tables": [], "widgets": [], "error": None,
    }
    try:
        page = doc.load_page(index)
        # Unrotated size: text, widget and table boxes are all in the unrotated space.
        size = page.rect * page.derotation_matrix
        result["width"], result["height"] = _num(size.width), _num(size.height)
        result["rotation"] = page.rotation
        result["image_count"] = len(page.get_images())
        result["blocks"], words, chars = _text_blocks(page)
        result["has_text_layer"] = chars > 0
    except Exception as exc:
        _raise_if_out_of_memory(exc)
        result["error"] = f"MuPDF failed on this page: {_describe(exc)}"
        return result
    errors = []
    steps = (("tables", lambda: _tables(page, words)), ("widgets", lambda: _widgets(page)))
    for key, step in steps:
        try:
            result[key] = step()
        except Exception as exc:
            _raise_if_out_of_memory(exc)
            errors.append(f"{key}: {_describe(exc)}")
    result["error"] = "; ".join(errors) or None
    return result


def _text_blocks(page: pymupdf.Page) -> tuple[list[dict[str, Any]], list[_Word], int]:
    """Blocks and lines in reading order, each line with its words; also all the words in
    that order and the count of non-blank characters. One text page serves both the dict
    and the words (cheap)."""
    textpage = page.get_textpage(flags=_TEXT_FLAGS)
    layout = textpage.extractDICT(sort=True)  # blocks sorted by (bottom, left)
    raw_words = textpage.extractWORDS()  # (x0, y0, x1, y1, text, block_no, line_no, word_no)
    blocks: list[dict[str, Any]] = []
    # Per text-page block, its lines by text-page index (None: a blank line, left out).
    lines_by_block: dict[int, list[dict[str, Any] | None]] = {}
    chars = 0
    for block in layout["blocks"]:
        indexed: list[dict[str, Any] | None] = []
        for line in block["lines"]:
            text = "".join(span["text"] for span in line["spans"])
            visible = len("".join(text.split()))
            chars += visible
            # Scans often carry a lone space; a blank line is not a text layer.
            indexed.append({"bbox": _bbox(line["bbox"]), "text": text, "words": []}
                           if visible else None)
        lines = [line for line in indexed if line is not None]
        if lines:
            lines_by_block[block["number"]] = indexed
            blocks.append({"bbox": _bbox(block["bbox"]), "lines": lines})
    for x0, y0, x1, y1, text, block_no, line_no, _ in raw_words:
        line = _line_of_word(lines_by_block.get(block_no), line_no, (x0 + x1) / 2, (y0 + y1) / 2)
        if line is not None:
            line["words"].append({"text": text, "bbox": _bbox((x0, y0, x1, y1))})
    words = [_Word((w["bbox"][0] + w["bbox"][2]) / 2, (w["bbox"][1] + w["bbox"][3]) / 2,
                   w["text"])
             for block in blocks for line in block["lines"] for w in line["words"]]
    return blocks, words, chars


def _line_of_word(lines: list[dict[str, Any] | None] | None, line_no: int, x: float,
                  y: float) -> dict[str, Any] | None:
    """The dict line holding a word. The words' line_no indexes the text page's lines,
    as ``lines`` does; should the two ever disagree, the word's centre decides."""
    if not lines:
        return None
    hint = lines[line_no] if line_no < len(lines) else None
    if hint is not None and _contains(hint["bbox"], x, y):
        return hint
    present = [line for line in lines if line is not None]
    for line in present:
        if _contains(line["bbox"], x, y):
            return line
    return min(present, key=lambda ln: abs((ln["bbox"][1] + ln["bbox"][3]) / 2 - y),
               default=None)


def _contains(bbox: Sequence[float], x: float, y: float, slack: float = 1.0) -> bool:
    return bbox[0] - slack <= x <= bbox[2] + slack and bbox[1] - slack <= y <= bbox[3] + slack


# --- Tables ------------------------------------------------------------------------------
# find_tables() costs 0.1-0.6 s a page even where there is no table, so it runs only on
# pages whose vector lines form a lattice. A table of >= 2 rows and >= 2 columns drawn with
# rules needs a line that at least three perpendicular lines meet, and rules meeting both
# some horizontal and some vertical line away from its ends (a T or a cross). A page frame,
# a box with one rule across, underlines and signature lines fail that test. On the sample
# corpus it keeps every page where find_tables finds such a table and skips the rest but 9.

_SNAP = 3.0  # points: as find_tables' snap/join/intersection tolerances and min edge length
_MAX_CROSSING_CHECKS = 1_000_000  # beyond that it is a vector drawing, not a table


def _grid_suggested(drawings: list[dict[str, Any]]) -> bool:
    horizontal, vertical = _axis_segments(drawings)
    if not horizontal or not vertical:
        return False
    horizontal, vertical = _merge(horizontal), _merge(vertical)
    if len(horizontal) * len(vertical) > _MAX_CROSSING_CHECKS:
        return False
    vertical_x = [x for x, _, _ in vertical]
    v_meets = [0] * len(vertical)
    h_junction = v_junction = busy_line = False
    for y, x0, x1 in horizontal:
        h_meets = 0
        lo, hi = bisect_left(vertical_x, x0 - _SNAP), bisect_right(vertical_x, x1 + _SNAP)
        for i in range(lo, hi):
            x, y0, y1 = vertical[i]
            if not y0 - _SNAP <= y <= y1 + _SNAP:
                continue
            h_meets += 1
            v_meets[i] += 1
            h_junction = h_junction or x0 + _SNAP < x < x1 - _SNAP
            v_junction = v_junction or y0 + _SNAP < y < y1 - _SNAP
            busy_line = busy_line or h_meets >= 3 or v_meets[i] >= 3
        if h_junction and v_junction and busy_line:
            return True
    return False


def _axis_segments(drawings: list[dict[str, Any]]) -> tuple[list[tuple], list[tuple]]:
    """Horizontal (y, x0, x1) and vertical (x, y0, y1) segments from lines and rectangle
    sides, as get_cdrawings() gives them; curves and slanted lines cannot make a grid."""
    horizontal: list[tuple] = []
    vertical: list[tuple] = []

    def add(x0: float, y0: float, x1: float, y1: float) -> None:
        if abs(y0 - y1) <= 1 and abs(x0 - x1) >= _SNAP:
            horizontal.append(((y0 + y1) / 2, min(x0, x1), max(x0, x1)))
        elif abs(x0 - x1) <= 1 and abs(y0 - y1) >= _SNAP:
            vertical.append(((x0 + x1) / 2, min(y0, y1), max(y0, y1)))

    for drawing in drawings:
        for item in drawing["items"]:
            if item[0] == "l":
                (x0, y0), (x1, y1) = item[1], item[2]
                add(x0, y0, x1, y1)
            elif item[0] == "re":
                x0, y0, x1, y1 = item[1]
                add(x0, y0, x1, y0)
                add(x0, y1, x1, y1)
                add(x0, y0, x0, y1)
                add(x1, y0, x1, y1)
    return horizontal, vertical


def _merge(segments: list[tuple]) -> list[tuple]:
    """Snap segments lying within _SNAP of one another and join the collinear pieces
    (forms draw one rule as many short strokes), as find_tables does before it looks."""
    segments.sort()
    merged = []
    start = 0
    while start < len(segments):
        end = start
        while end < len(segments) and segments[end][0] - segments[start][0] <= _SNAP:
            end += 1
        position = segments[start][0]
        pieces = sorted(segments[start:end], key=lambda s: s[1])
        lo, hi = pieces[0][1], pieces[0][2]
        for _, a, b in pieces[1:]:
            if a <= hi + _SNAP:
                hi = max(hi, b)
            else:
                merged.append((position, lo, hi))
                lo, hi = a, b
        merged.append((position, lo, hi))
        start = end
    return merged


def _tables(page: pymupdf.Page, words: list[_Word]) -> list[dict[str, Any]]:
    """Ruled tables of at least 2 x 2 cells, in the unrotated space like the text. A cell's
    text is made from the page's words, not Table.extract(), which on PyMuPDF 2.0 drops
    spaces and splits decimals ("$4.11" comes out as "$411", newline, "."). A merged cell
    is null."""
    if not _grid_suggested(page.get_cdrawings()):
        return []
    found = page.find_tables(use_layout=False)  # the layout model is not loaded: see above
    if found is None:  # find_tables swallows its own errors and returns None
        raise RuntimeError("find_tables failed on this page")
    derotate = page.derotation_matrix  # find_tables works on the de-rotated page
    tables = []
    for table in found.tables:
        if table.row_count < 2 or table.col_count < 2:
            continue
        bbox = pymupdf.Rect(table.bbox) * derotate
        inside = [w for w in words if _contains(bbox, w.x, w.y)]
        rows = []
        for row in table.rows:
            row_box = pymupdf.Rect(row.bbox) * derotate
            row_words = [w for w in inside if _contains(row_box, w.x, w.y)]
            rows.append([_cell_text(cell, derotate, row_words) for cell in row.cells])
        tables.append({"bbox": _bbox(bbox), "rows": rows})
    return tables


def _cell_text(cell: Sequence[float] | None, derotate: pymupdf.Matrix,
               words: list[_Word]) -> str | None:
    if cell is None:
        return None
    box = pymupdf.Rect(cell) * derotate
    return " ".join(w.text for w in words if _contains(box, w.x, w.y, slack=0.0))


def _widgets(page: pymupdf.Page) -> list[dict[str, Any]]:
    if not page.parent.is_form_pdf:
        return []
    return [
        {"name": widget.field_name or "", "type": widget.field_type_string,
         "value": _widget_value(widget.field_value), "bbox": _bbox(widget.rect)}
        for widget in page.widgets()
    ]


def _widget_value(value: Any) -> str | bool | list[str] | None:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, list | tuple):  # multi-select list boxes
        return [str(v) for v in value]
    return str(value)


# --- Small helpers -----------------------------------------------------------------------

def _metadata(doc: pymupdf.Document) -> dict[str, str | None]:
    raw = doc.metadata or {}
    return {ours: (str(raw[theirs])[:_MAX_METADATA_CHARS] or None) if raw.get(theirs) else None
            for theirs, ours in _METADATA_KEYS.items()}


def _warnings() -> list[str]:
    """MuPDF's warnings since the document was opened, de-duplicated and trimmed."""
    seen: dict[str, None] = {}
    for line in pymupdf.TOOLS.mupdf_warnings(reset=True).splitlines():
        if line.strip():
            seen.setdefault(line.strip()[:_MAX_WARNING_CHARS])
    kept = list(seen)[:_MAX_WARNINGS]
    if len(seen) > _MAX_WARNINGS:
        kept.append(f"... and {len(seen) - _MAX_WARNINGS} more")
    return kept


def _first_warnings(count: int = 2) -> str:
    """The MuPDF warnings that explain a failure best, for its message."""
    first = _warnings()[:count]
    return f" (MuPDF: {'; '.join(first)})" if first else ""


def _raise_if_out_of_memory(exc: BaseException) -> None:
    """MuPDF reports a failed allocation as FzErrorSystem "malloc (N bytes) failed"."""
    if isinstance(exc, MemoryError):
        raise exc
    text = str(exc).lower()
    if "out of memory" in text or ("alloc" in text and "failed" in text):
        raise MemoryError(f"MuPDF ran out of memory: {exc}") from exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:_MAX_WARNING_CHARS]}"


def _num(value: float) -> float:
    """Round to 2 decimals (keeps the JSON small); a broken file can yield inf or NaN,
    which JSON cannot carry."""
    return round(value, 2) if math.isfinite(value) else 0.0


def _bbox(rect: Any) -> list[float]:
    return [_num(rect[0]), _num(rect[1]), _num(rect[2]), _num(rect[3])]
