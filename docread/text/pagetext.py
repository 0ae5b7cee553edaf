"""A page's words and characters with their boxes: from a PDF's own text layer, else by OCR
(rapidocr, the `ocr` extra), else none. Boxes are in PDF points, top-left origin, relative to the page
as shown (CropBox, rotation applied; for images, 1 point = 1 pixel), and in pixels of the rendered page.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docread.errors import DocreadError
from docread.intake.base import boundary
from docread.settings import TextMode

if TYPE_CHECKING:
    from docread.intake import Document, Page

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
OCR_MISSING = 'OCR needs the ocr extra: pip install "docread[ocr]"'
OCR_MIN_SCORE = 0.5  # rapidocr line confidence below which a line is dropped as noise


@dataclass(frozen=True)
class Word:
    text: str
    bbox: Box  # PDF points on the page as shown (pixels for images)
    line: int  # index of the word's line on the page, in reading order


@dataclass(frozen=True)
class Char:
    ch: str  # one character (whitespace included: it separates words)
    bbox: Box
    line: int  # as Word.line


@dataclass
class PageText:
    """The words of one page in reading order and how they were found; `chars`, the text layer's
    characters in reading order (empty for OCR: the matcher then splits the words' boxes)."""

    page: int
    source: str  # layer | ocr | none
    width: float  # the page as shown, in points (pixels for images)
    height: float
    scale: float = 1.0  # rendered pixels per point (the page's dpi / 72)
    words: list[Word] = field(default_factory=list)
    chars: list[Char] = field(default_factory=list)
    confidence: float | None = None  # OCR's mean character confidence (0-1); None for a text layer
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # the matcher's index (text.match)

    @property
    def text(self) -> str:
        lines: dict[int, list[str]] = {}
        for word in self.words:
            lines.setdefault(word.line, []).append(word.text)
        return "\n".join(" ".join(ws) for ws in lines.values())

    def px(self, box: Box) -> list[float]:
        """A box in points as pixels of the rendered page."""
        return [round(v * self.scale, 1) for v in box]


def page_text(document: Document, page: Page, mode: str = TextMode.auto, ocr=None) -> PageText:
    """The words of `page` (see the module doc). A failure inside PyMuPDF or rapidocr on this page's
    data is that page's DocreadError; OCR asked for without the extra is a `missing_extra` error.
    `ocr(image, where)` reads a rendered page's words (`ocr_words` unless given)."""
    mode = TextMode(mode)
    where = f"{document.name} page {page.number}"
    if document.kind == "pdf":
        with boundary(where, "read its text"):
            pdf_page = document._handle[page.number - 1]
            width, height = pdf_page.rect.width, pdf_page.rect.height
        text = PageText(page.number, "none", width, height, page.width / width if width else 1.0)
        if mode in (TextMode.auto, TextMode.layer):
            with boundary(where, "read its text"):
                text.words = layer_words(pdf_page)
                text.chars = layer_chars(pdf_page) if text.words else []
            if text.words:
                text.source = "layer"
                return text
    else:
        text = PageText(page.number, "none", page.width, page.height, 1.0)
    if mode == TextMode.ocr or (mode == TextMode.auto and ocr_available()):
        image = document.render(page, page.width, page.height)
        words, text.confidence = (ocr or ocr_words)(image, where)
        text.words = [Word(w.text, tuple(v / text.scale for v in w.bbox), w.line) for w in words]
        text.source = "ocr"
    return text


# -- the text layer -------------------------------------------------------------------------------
def layer_words(pdf_page) -> list[Word]:
    """Words of a PyMuPDF page in reading order (block, line, word), boxes on the page as shown:
    MuPDF gives them unrotated, relative to the CropBox; `rotation_matrix` turns them as displayed."""
    import pymupdf

    raw = sorted(pdf_page.get_text("words"), key=lambda w: (w[5], w[6], w[7]))
    matrix = pdf_page.rotation_matrix
    lines: dict[tuple[int, int], list[tuple[str, Box]]] = {}
    for x0, y0, x1, y1, text, block, line, _ in raw:
        rect = pymupdf.Rect(x0, y0, x1, y1) * matrix
        lines.setdefault((block, line), []).append((text, (rect.x0, rect.y0, rect.x1, rect.y1)))
    words = []
    for index, line_words in enumerate(lines.values()):
        words += [Word(t, _round(b), index) for t, b in logical_order(line_words)]
    return words


def layer_chars(pdf_page) -> list[Char]:
    """Characters of a PyMuPDF page (rawdict) in reading order, one line index per text line, boxes on
    the page as shown; a right-to-left line stored left to right is turned to logical order."""
    import pymupdf

    matrix = pdf_page.rotation_matrix
    chars, index = [], 0
    for block in pdf_page.get_text("rawdict")["blocks"]:
        for line in block.get("lines", []):
            found = []
            for span in line["spans"]:
                for c in span["chars"]:
                    rect = pymupdf.Rect(c["bbox"]) * matrix
                    found.append((c["c"], _round((rect.x0, rect.y0, rect.x1, rect.y1))))
            if any(ch.strip() for ch, _ in found):
                chars += [Char(ch, box, index) for ch, box in logical_chars(found)]
                index += 1
    return chars


def logical_chars(line: Sequence[tuple[str, Box]]) -> list[tuple[str, Box]]:
    """A line's characters in logical order: a right-to-left line whose characters run left to right on
    the page (visual order) is reversed, and its left-to-right runs (Latin, digits) turned back."""
    strong = [box for ch, box in line if unicodedata.bidirectional(ch) in ("R", "AL")]
    if not is_rtl("".join(ch for ch, _ in line)) or len(strong) < 2 or strong[0][0] >= strong[-1][0]:
        return list(line)
    out = list(reversed(line))
    kinds = [_bidi_kind(ch) for ch, _ in out]
    for i, kind in enumerate(kinds):  # a neutral between two left-to-right characters joins their run
        if kind == "N":
            before = next((k for k in reversed(kinds[:i]) if k != "N"), None)
            after = next((k for k in kinds[i + 1 :] if k != "N"), None)
            kinds[i] = "L" if before == after == "L" else "N"
    result, i = [], 0
    while i < len(out):
        j = i
        while j < len(out) and kinds[j] == "L":
            j += 1
        if j > i:
            result += reversed(out[i:j])
            i = j
        else:
            result.append(out[i])
            i += 1
    return result


def _bidi_kind(ch: str) -> str:
    kind = unicodedata.bidirectional(ch)
    return "R" if kind in ("R", "AL") else "L" if kind in ("L", "EN", "AN") else "N"


def is_rtl(text: str) -> bool:
    """Whether most strong characters of `text` are right-to-left (Hebrew, Arabic...)."""
    rtl = ltr = 0
    for ch in text:
        kind = unicodedata.bidirectional(ch)
        rtl += kind in ("R", "AL")
        ltr += kind == "L"
    return rtl > ltr


def logical_order(line: Sequence[tuple[str, Box]]) -> list[tuple[str, Box]]:
    """A line's words in reading order: right to left when the line is right-to-left text (MuPDF and
    OCR may list them left to right, as they sit on the page)."""
    if not is_rtl(" ".join(t for t, _ in line)):
        return list(line)
    return sorted(line, key=lambda w: -w[1][2])


def _round(box: Box) -> Box:
    return tuple(round(v, 2) for v in box)


# -- OCR ------------------------------------------------------------------------------------------
_engine = None
# one OCR at a time: rapidocr's engine keeps per-call state (its detector's preprocessing) on the shared
# instance, so two threads must not run it together (a server runs OCR beside its decoding, see serve/batcher)
_ocr_lock = threading.Lock()


def ocr_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


def _ocr_engine():
    global _engine
    if _engine is None:
        if not ocr_available():
            raise DocreadError("missing_extra", OCR_MISSING)
        from rapidocr_onnxruntime import RapidOCR

        threads = _ocr_threads()
        _engine = RapidOCR(intra_op_num_threads=threads) if threads else RapidOCR()
    return _engine


def _ocr_threads() -> int | None:
    """OMP_NUM_THREADS, when set to a whole number, bounds OCR's threads as it bounds torch's: onnxruntime
    otherwise takes every core (spinning), which a server decoding beside its OCR, or another process
    the user kept to its share, would pay for. None: onnxruntime's default."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def ocr_words(image, where: str) -> tuple[list[Word], float | None]:
    """Words of an RGB image by rapidocr (PP-OCRv4), boxes in the image's pixels, lines top to bottom, and
    the mean confidence of the characters kept (None when no line was). Word gaps the recogniser ran
    together are rebuilt from its character boxes and the line's ink (`docread.text.ocrspaces`)."""
    import numpy as np

    rgb = np.asarray(image.convert("RGB"))
    with _ocr_lock:  # the engine keeps per-call state on itself: one OCR at a time
        engine = _ocr_engine()
        with boundary(where, "OCR it"):
            result, _ = engine(rgb, return_word_box=True)
    gray = np.asarray(image.convert("L"))
    with boundary(where, "read its OCR result"):  # the engine's result, whatever its shape: this page's error
        lines, scores = _ocr_lines(result, gray)
    words = []
    for index, row in enumerate(_rows(lines)):
        words += [Word(t, _round(b), index) for t, b in logical_order([w for _, ws in row for w in ws])]
    return words, (round(float(np.mean(scores)), 4) if scores else None)


def _ocr_lines(result, gray) -> tuple[list[tuple[Box, list]], list[float]]:
    """rapidocr's lines kept (score, non-blank), each with its words, and the confidences of their characters."""
    lines, scores = [], []
    for item in result or []:
        quad, text, score = item[0], item[1], item[2]
        if score < OCR_MIN_SCORE or not text.strip():
            continue
        xs, ys = [p[0] for p in quad], [p[1] for p in quad]
        line_box = (min(xs), min(ys), max(xs), max(ys))
        chars = item[4] if len(item) > 4 and len(item[3]) == len(item[4]) else None
        per_char = item[5] if len(item) > 5 and chars and len(item[5]) == len(chars) else None
        scores += per_char or [score] * len(text)
        lines.append((line_box, _split_line(text, line_box, item[3] if chars else None, chars, gray)))
    return lines, scores


def _rows(lines: list[tuple[Box, list]]) -> list[list[tuple[Box, list]]]:
    """Detected text boxes grouped into the page's lines, top to bottom: a horizontal box whose vertical
    centre lies within the previous horizontal box of the row joins it (the detector often cuts one line
    in pieces), and a row's boxes read left to right; a tall box (vertical text) stays a line of its own."""
    rows: list[list[tuple[Box, list]]] = []
    for entry in sorted(lines, key=lambda e: (e[0][1] + e[0][3]) / 2):
        box = entry[0]
        last = rows[-1][-1][0] if rows else None
        flat = box[2] - box[0] >= box[3] - box[1]
        if (
            last is not None
            and flat
            and last[2] - last[0] >= last[3] - last[1]
            and last[1] < (box[1] + box[3]) / 2 < last[3]
        ):
            rows[-1].append(entry)
        else:
            rows.append([entry])
    return [sorted(row, key=lambda e: e[0][0]) for row in rows]


def _split_line(text: str, box: Box, char_boxes, chars, gray=None) -> list[tuple[str, Box]]:
    """A recognised line cut into words: by rapidocr's character boxes when it gave them (with the word
    gaps it ran together rebuilt from the ink of a horizontal line), else by sharing the line's width
    in proportion to the characters."""
    from docread.text.ocrspaces import rebuild_line

    if char_boxes is not None:
        spans = [(min(p[0] for p in q), max(p[0] for p in q)) for q in char_boxes]
        horizontal = box[2] - box[0] >= box[3] - box[1]
        words = rebuild_line(gray if horizontal else None, box, chars, spans)
        if words:
            return [(t, (x0, box[1], x1, box[3])) for t, (x0, x1) in words]
    words, x0, width = [], box[0], box[2] - box[0]
    per_char = width / max(1, len(text))
    position = 0
    for token in text.split(" "):
        if token:
            words.append((token, (x0 + position * per_char, box[1], x0 + (position + len(token)) * per_char, box[3])))
        position += len(token) + 1
    return words
