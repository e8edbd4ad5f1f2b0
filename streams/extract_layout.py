"""Visual rows and segments rebuilt from the parsed document's words, and citations.

Extraction must not depend on how the parser happened to group words into lines, and
invoices put labels and values far apart on one visual row ("Invoice Number:  ...
42183017"). So words are regrouped here: a *row* is words that share a baseline on the
displayed (rotation-corrected) page; a *segment* is a run of words in a row with no
wide gap, i.e. one cell, label or phrase. Citations always carry the words' original
boxes (unrotated PDF points, as the parsed-document contract defines them).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from statistics import median

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Word:
    page: int
    text: str
    bbox: Box  # unrotated PDF points, as parsed
    view: Box  # the same box on the displayed page, used only for grouping


@dataclass(frozen=True)
class Segment:
    page: int
    row: int  # index of its visual row on the page
    words: tuple[Word, ...]

    @cached_property  # segments are immutable and their text is read many times
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @cached_property
    def view(self) -> Box:
        return union(w.view for w in self.words)

    def words_in(self, start: int, end: int) -> list[Word]:
        """The words of this segment that overlap characters [start, end) of ``text``."""
        picked, offset = [], 0
        for word in self.words:
            if offset < end and start < offset + len(word.text):
                picked.append(word)
            offset += len(word.text) + 1
        return picked


def union(boxes: Iterable[Box]) -> Box:
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return (min(x0s), min(y0s), max(x1s), max(y1s))


def _display_box(bbox: Box, rotation: int, width: float, height: float) -> Box:
    """Map an unrotated box onto the page as shown (PyMuPDF's rotation_matrix)."""
    x0, y0, x1, y1 = bbox
    if rotation == 90:
        return (height - y1, x0, height - y0, x1)
    if rotation == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if rotation == 270:
        return (y0, width - x1, y1, width - x0)
    return bbox


def _page_words(page: dict) -> list[Word]:
    rotation = int(page.get("rotation") or 0) % 360
    # The parser reports width/height de-rotated, in the same space as the word boxes.
    width, height = float(page["width"]), float(page["height"])
    words = []
    for block in page.get("blocks") or []:
        for line in block.get("lines") or []:
            # A line without word boxes still counts, as one word spanning the line.
            items = line.get("words") or [{"text": line.get("text", ""), "bbox": line["bbox"]}]
            for item in items:
                text = (item.get("text") or "").strip()
                if text:
                    x0, y0, x1, y1 = (float(v) for v in item["bbox"])
                    bbox = (x0, y0, x1, y1)
                    view = _display_box(bbox, rotation, width, height)
                    words.append(Word(int(page["number"]), text, bbox, view))
    return words


def _rows(words: list[Word]) -> list[list[Word]]:
    """Group words into rows, top to bottom, by how close their vertical centres are.

    Centres, not mere overlap: a large title word overlaps two lines of small print
    beside it and would otherwise weld them into one row.
    """
    rows: list[list[Word]] = []
    centre = height = 0.0
    for word in sorted(words, key=lambda w: ((w.view[1] + w.view[3]) / 2, w.view[0])):
        mid, tall = (word.view[1] + word.view[3]) / 2, word.view[3] - word.view[1]
        if rows and mid - centre <= 0.4 * min(height, tall):
            rows[-1].append(word)
        else:
            rows.append([word])
            centre, height = mid, tall
    return [sorted(row, key=lambda w: w.view[0]) for row in rows]


def _split_row(page: int, row_index: int, row: list[Word]) -> list[Segment]:
    # A gap wider than about one text height separates cells; justified prose stays whole.
    gap = 0.9 * median(w.view[3] - w.view[1] for w in row)
    segments, current = [], [row[0]]
    for word in row[1:]:
        if word.view[0] - current[-1].view[2] > gap:
            segments.append(Segment(page, row_index, tuple(current)))
            current = []
        current.append(word)
    segments.append(Segment(page, row_index, tuple(current)))
    return segments


class Layout:
    """The document as rows of segments per page, plus one searchable text stream."""

    def __init__(self, parsed: dict) -> None:
        self.pages = {int(p["number"]): p for p in parsed.get("pages") or []}
        self.rows: dict[int, list[list[Segment]]] = {}
        parts: list[str] = []
        self._offsets: list[int] = []  # stream offset of each word, ascending
        self._words: list[Word] = []
        cursor = 0
        for number, page in sorted(self.pages.items()):
            rows = _rows(_page_words(page))
            self.rows[number] = [_split_row(number, i, r) for i, r in enumerate(rows)]
            for row in self.rows[number]:
                for segment in row:
                    for word in segment.words:
                        self._offsets.append(cursor)
                        self._words.append(word)
                        parts.append(word.text + " ")
                        cursor += len(word.text) + 1
                parts.append("\n")
                cursor += 1
        self.text = "".join(parts)  # rows joined by newlines, words by spaces

    @property
    def word_count(self) -> int:
        return len(self._words)

    def segments(self, page: int | None = None) -> Iterator[Segment]:
        for number in [page] if page is not None else sorted(self.rows):
            for row in self.rows.get(number, []):
                yield from row

    def stream_words(self, start: int, end: int) -> list[Word]:
        """The words overlapping characters [start, end) of ``text``."""
        picked = []
        for i in range(max(bisect.bisect_right(self._offsets, start) - 1, 0), len(self._words)):
            if self._offsets[i] >= end:
                break
            if self._offsets[i] + len(self._words[i].text) > start:
                picked.append(self._words[i])
        return picked

    def right_of(self, segment: Segment) -> list[Segment]:
        row = self.rows[segment.page][segment.row]
        return [s for s in row if s.view[0] >= segment.view[2]]

    def below(self, segment: Segment, max_rows: int = 3) -> list[Segment]:
        """Segments in the next rows that sit under ``segment`` (same column), as long as
        the rows follow each other without a gap of more than three text heights."""
        x0, _, x1, bottom = segment.view
        height = bottom - segment.view[1]
        found: list[Segment] = []
        for row in self.rows[segment.page][segment.row + 1 : segment.row + 1 + max_rows]:
            if min(s.view[1] for s in row) - bottom > 3 * height:
                break
            bottom = max(s.view[3] for s in row)
            found.extend(s for s in row if s.view[0] < x1 and s.view[2] > x0)
        return found


def cite(words: Iterable[Word]) -> list[dict]:
    """One citation per page: the union of the words' boxes and their text."""
    by_page: dict[int, list[Word]] = {}
    for word in words:
        by_page.setdefault(word.page, []).append(word)
    return [
        {
            "page": page,
            "bbox": [round(v, 2) for v in union(w.bbox for w in ws)],
            "text": " ".join(w.text for w in ws),
        }
        for page, ws in sorted(by_page.items())
    ]


def after_label(layout: Layout, segment: Segment, end: int) -> list[tuple[str, Segment]]:
    """Where a label's value can sit, nearest first: the rest of the label's own segment
    ("inline"), the segments to its right on the same row ("right"), then the segments
    under it in the same column ("below"). ``end`` is where the label ends in the text.
    """
    spots: list[tuple[str, Segment]] = []
    offset, rest = 0, []
    for word in segment.words:
        if offset >= end:
            rest.append(word)
        offset += len(word.text) + 1
    if rest:
        spots.append(("inline", Segment(segment.page, segment.row, tuple(rest))))
    spots.extend(("right", s) for s in layout.right_of(segment))
    spots.extend(("below", s) for s in layout.below(segment))
    return spots


def field(value: object, raw: str, confidence: float, words: Iterable[Word]) -> dict:
    """One extracted field in the output contract."""
    return {
        "value": value,
        "raw": raw,
        "confidence": round(min(max(confidence, 0.0), 1.0), 3),
        "citations": cite(words),
    }
