"""Page text (issue #13): born-digital PDFs built here give the right words with boxes that sit on
their ink (fonts, rotation, CropBox, columns, a table); a rasterised page goes through OCR."""

from __future__ import annotations

import numpy as np
import pymupdf
import pytest

from docread.errors import DocreadError
from docread.intake import open_document
from docread.text.pagetext import OCR_MISSING, Word, is_rtl, logical_order, ocr_available, page_text

LINES = [("helv", "Invoice number 4471"), ("tiro", "Total amount: $1,234.56"), ("cour", "Due 2024-03-15 net")]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def make_pdf(path, *, rotation=0, crop=None, lines=LINES, size=(300, 400)):
    doc = pymupdf.open()
    page = doc.new_page(width=size[0], height=size[1])
    for n, (font, text) in enumerate(lines):
        page.insert_text((40, 80 + 40 * n), text, fontname=font, fontsize=13)
    if crop:
        page.set_cropbox(pymupdf.Rect(*crop))
    page.set_rotation(rotation)
    doc.save(path)
    return path


def ink(document, page) -> np.ndarray:
    """Dark pixels of the page rendered at its nominal size: True where there is ink."""
    image = document.render(page, page.width, page.height)
    return np.asarray(image.convert("L")) < 128


def assert_boxes_on_ink(path, expected_words):
    with open_document(str(path), dpi=144) as document:
        page = document.pages[0]
        text = page_text(document, page)
        dark = ink(document, page)
    assert text.source == "layer"
    assert [w.text for w in text.words] == expected_words
    covered = np.zeros_like(dark)
    for word in text.words:
        x0, y0, x1, y1 = (round(v) for v in text.px(word.bbox))
        assert dark[y0:y1, x0:x1].sum() > 5, word  # each box sits on its word's ink
        covered[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
    assert (dark & ~covered).sum() == 0  # and no ink is outside every box
    return text


WORDS = [w for _, line in LINES for w in line.split()]


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_layer_words_and_boxes_on_rotated_pages(tmp_path, rotation):
    text = assert_boxes_on_ink(make_pdf(tmp_path / "p.pdf", rotation=rotation), WORDS)
    assert (text.width, text.height) == ((300, 400) if rotation in (0, 180) else (400, 300))
    assert text.scale == pytest.approx(2.0, abs=0.01)
    lines = [w.line for w in text.words]
    assert lines == sorted(lines) and len(set(lines)) == 3


def test_cropbox_offset_moves_the_boxes(tmp_path):
    plain = assert_boxes_on_ink(make_pdf(tmp_path / "a.pdf"), WORDS)
    cropped = assert_boxes_on_ink(make_pdf(tmp_path / "b.pdf", crop=(20, 30, 280, 390)), WORDS)
    for a, b in zip(plain.words, cropped.words):
        assert b.bbox == pytest.approx((a.bbox[0] - 20, a.bbox[1] - 30, a.bbox[2] - 20, a.bbox[3] - 30), abs=0.01)


def test_two_columns_read_column_by_column(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=300)
    page.insert_textbox(pymupdf.Rect(20, 20, 190, 280), "alpha beta gamma delta epsilon zeta eta theta", fontsize=12)
    page.insert_textbox(pymupdf.Rect(210, 20, 380, 280), "one two three four five six seven eight", fontsize=12)
    doc.save(tmp_path / "cols.pdf")
    text = assert_boxes_on_ink(
        tmp_path / "cols.pdf",
        "alpha beta gamma delta epsilon zeta eta theta one two three four five six seven eight".split(),
    )
    assert all(w.bbox[2] < 200 for w in text.words[:8]) and all(w.bbox[0] > 200 for w in text.words[8:])


def test_a_table_gives_each_cell_its_word(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=300)
    cells = {}
    for r, row in enumerate([["Item", "Qty", "Price"], ["Bolt", "12", "3.50"], ["Nut", "40", "0.25"]]):
        for c, value in enumerate(row):
            rect = pymupdf.Rect(30 + 110 * c, 30 + 30 * r, 140 + 110 * c, 60 + 30 * r)
            page.draw_rect(rect, color=(0.6, 0.6, 0.6), width=0.5)
            page.insert_text((rect.x0 + 5, rect.y0 + 20), value, fontsize=11)
            cells[value] = rect
    doc.save(tmp_path / "table.pdf")
    with open_document(str(tmp_path / "table.pdf")) as document:
        text = page_text(document, document.pages[0])
    assert sorted(w.text for w in text.words) == sorted(cells)
    for word in text.words:
        assert pymupdf.Rect(cells[word.text]).contains(pymupdf.Rect(word.bbox)), word


def test_modes_off_layer_and_a_page_without_text(tmp_path):
    path = make_pdf(tmp_path / "p.pdf")
    with open_document(str(path)) as document:
        assert page_text(document, document.pages[0], "off").source == "none"
        assert page_text(document, document.pages[0], "layer").source == "layer"
    blank = pymupdf.open()
    blank.new_page()
    blank.save(tmp_path / "blank.pdf")
    with open_document(str(tmp_path / "blank.pdf")) as document:
        text = page_text(document, document.pages[0], "layer")
    assert text.source == "none" and text.words == []


def test_right_to_left_lines_read_right_to_left():
    line = [("שלום", (100, 0, 130, 10)), ("עולם", (60, 0, 90, 10)), ("גדול", (10, 0, 50, 10))]
    assert is_rtl("שלום עולם") and not is_rtl("hello 123")
    # laid out left to right on the page, read right to left
    assert [t for t, _ in logical_order(sorted(line, key=lambda w: w[1][0]))] == ["שלום", "עולם", "גדול"]
    ltr = [("a", (0, 0, 5, 5)), ("b", (10, 0, 15, 5))]
    assert logical_order(ltr) == ltr


def test_a_library_failure_is_that_pages_error(tmp_path, monkeypatch):
    path = make_pdf(tmp_path / "p.pdf")
    with open_document(str(path)) as document:
        monkeypatch.setattr(pymupdf.Page, "get_text", lambda *a, **k: 1 / 0)
        with pytest.raises(DocreadError) as raised:
            page_text(document, document.pages[0], "layer")
    assert raised.value.code == "corrupt" and "page 1" in raised.value.message


def test_ocr_without_the_extra_says_how_to_get_it(tmp_path, monkeypatch):
    import docread.text.pagetext as pagetext

    monkeypatch.setattr(pagetext, "_engine", None)
    monkeypatch.setattr(pagetext, "ocr_available", lambda: False)
    path = make_pdf(tmp_path / "p.pdf")
    with open_document(str(path)) as document:
        with pytest.raises(DocreadError) as raised:
            page_text(document, document.pages[0], "ocr")
        assert page_text(document, document.pages[0], "auto").source == "layer"
    assert raised.value.code == "missing_extra" and raised.value.message == OCR_MISSING


def test_rasterised_page_through_ocr_finds_its_words(tmp_path):
    if not ocr_available():
        pytest.skip('rapidocr-onnxruntime is not installed (pip install "docread[ocr]")')
    path = make_pdf(tmp_path / "p.pdf", lines=LINES + [("helv", "Ship to Berlin office")])
    with open_document(str(path), dpi=200) as document:
        truth = page_text(document, document.pages[0]).words
        document.render(document.pages[0], *(document.pages[0].width, document.pages[0].height)).save(
            tmp_path / "scan.png"
        )
    with open_document(str(tmp_path / "scan.png")) as document:
        text = page_text(document, document.pages[0])
    assert text.source == "ocr" and text.scale == 1.0
    scale = 200 / 72
    found = 0
    for word in truth:
        true_px = tuple(v * scale for v in word.bbox)
        found += any(w.text.strip(":") == word.text.strip(":") and iou(w.bbox, true_px) > 0.3 for w in text.words)
    assert found / len(truth) >= 0.9, (found, len(truth), [w.text for w in text.words])


def test_words_are_plain_values():
    assert Word("a", (0, 0, 1, 1), 0) == Word("a", (0, 0, 1, 1), 0)
