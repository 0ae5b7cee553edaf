"""The character-stream matcher on the cases of issue #20: digits are never fuzzy, a weaker kind only
where no stronger one hit, glued tokens, and Japanese, vertical and Arabic text in real PyMuPDF PDFs
with the boxes PyMuPDF itself gives for those characters."""

from __future__ import annotations

import unicodedata

import pymupdf
import pytest
from kit.text import page_of

from docread.intake import open_document
from docread.text.evidence import PageTexts
from docread.text.match import find
from docread.text.pagetext import Char, PageText, Word, logical_chars

INVOICE = page_of(
    "Invoice number INV-2026-0412",
    "Date 14 March 2026",
    "Total GBP 319.44",
    "Sort code 20-45-77",
    "Part x27B1 x27B2 x27B8 x27BE",
    "Ref 0794 71",
)


@pytest.mark.parametrize(
    "query",
    ["319.45", "GBP 319.45", "14 March 2025", "2025-03-14", "INV-2026-0413", "sort code 20-45-78", "79471", "x27B9"],
)
def test_wrong_digits_are_never_found(query):
    assert find(INVOICE, query) == []


@pytest.mark.parametrize(
    "query, kind, text",
    [
        ("319.44", "exact", "319.44"),
        ("£319.44", "normalized", "319.44"),
        ("2026-03-14", "normalized", "14 March 2026"),
        ("inv-2026-0412", "normalized", "INV-2026-0412"),
        ("sort code 20-45-77", "normalized", "Sort code 20-45-77"),
        ("Invoice numbre", "fuzzy", "Invoice number"),
    ],
)
def test_right_values_are_found(query, kind, text):
    (found,) = find(INVOICE, query)
    assert (found.match, found.text) == (kind, text)


def test_a_weaker_kind_only_where_no_stronger_one_hit():
    (hit,) = find(INVOICE, "x27B8")
    assert (hit.match, hit.text) == ("exact", "x27B8")
    assert find(INVOICE, "x27BB") == []  # look-alikes differ in a digit or an identifier's letter
    page = page_of("ACME Corporation", "ACME Corparation")
    assert [o.match for o in find(page, "ACME Corporation")] == ["exact"]


def test_a_number_is_never_found_inside_another():
    page = page_of("44712 and 14471 and 4471")
    (hit,) = find(page, "4471")
    assert hit.bbox == (200, 0, 240, 12)


def test_glued_tokens():
    page = page_of("Invoicenumber:INV-2026-0412Date:14March2026", "10.Link")
    (number,) = find(page, "INV-2026-0412")
    assert number.text == "INV-2026-0412" and number.bbox == (140, 0, 270, 12)
    (when,) = find(page, "14 March 2026")
    assert when.match == "exact" and when.text == "14March2026"
    assert find(page, "invoice number")[0].match == "normalized"
    assert find(page, "Link to page 10") == []  # no wrong fuzzy hits on the glued line
    assert [o.text for o in find(page, "Link")] == ["Link"]


def pdf_boxes(path, chars: str) -> list:
    page = pymupdf.open(path)[0]
    return [
        c["bbox"]
        for b in page.get_text("rawdict")["blocks"]
        for line in b.get("lines", [])
        for s in line["spans"]
        for c in s["chars"]
        if unicodedata.normalize("NFKC", c["c"]) in chars
    ]


def located(path, query):
    with open_document(str(path)) as document:
        text = PageTexts(document).get(document.pages[0])
        return text, find(text, query)


def test_japanese_without_spaces(tmp_path):
    path = tmp_path / "ja.pdf"
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text(
        (50, 100), "新しいマーケットモデルはコントロールパネルから設定します。", fontname="japan", fontsize=12
    )
    doc.save(path)
    for query in ("マーケットモデル", "コントロールパネル"):
        _, (hit,) = located(path, query)
        assert hit.match == "exact" and hit.text == query
        boxes = pdf_boxes(path, query)
        x0 = min(b[0] for b in boxes if b[0] >= hit.bbox[0] - 0.1)
        assert hit.bbox[0] == pytest.approx(x0, abs=0.1) and len(hit.lines()) == 1
        assert hit.bbox[2] - hit.bbox[0] == pytest.approx(12 * len(query), abs=0.5)


def test_vertical_text_one_character_per_line(tmp_path):
    path = tmp_path / "vertical.pdf"
    doc = pymupdf.open()
    page = doc.new_page()
    for i, ch in enumerate("あいうえおかきく"):
        page.insert_text((300, 100 + 14 * i), ch, fontname="japan", fontsize=12)
    doc.save(path)
    _, (hit,) = located(path, "あいうえお")
    ((text, box),) = hit.lines()  # one column, one box
    boxes = pdf_boxes(path, "あいうえお")
    assert text == "あいうえお" and box == pytest.approx(
        (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)),
        abs=0.01,
    )


def test_arabic_right_to_left(tmp_path):
    path = tmp_path / "ar.pdf"
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_htmlbox(pymupdf.Rect(50, 100, 450, 140), '<p dir="rtl">مدينة كبيرة جدا 123</p>')
    doc.save(path)
    text, (hit,) = located(path, "مدينة كبيرة")
    assert hit.match == "exact"
    word_boxes = pdf_boxes(path, "مدينةكبير")
    assert hit.bbox[2] == pytest.approx(max(b[2] for b in word_boxes), abs=0.1)  # starts at the right edge
    assert [o.match for o in find(text, "كبيرة جدا 123")] == ["exact"]
    assert find(text, "\u202bمدينة كبيرة\u202c")[0].bbox == hit.bbox  # as pdftotext prints it: with bidi marks
    assert find(text, "ةريبك ةنيدم")[0].bbox == hit.bbox  # copied in visual order
    assert find(text, "كبيرة جدا 124") == []


def test_right_to_left_stored_left_to_right_is_read_in_logical_order():
    # "مدينة 42" stored in visual order, as some PDFs and OCR give it: leftmost character first
    visual = [("4", (0, 0, 5, 10)), ("2", (5, 0, 10, 10)), (" ", (10, 0, 14, 10))]
    visual += [(ch, (14 + 6 * k, 0, 20 + 6 * k, 10)) for k, ch in enumerate(reversed("مدينة"))]
    logical = logical_chars(visual)
    assert "".join(ch for ch, _ in logical) == "مدينة 42"
    page = PageText(1, "layer", 100, 20, 1.0, [Word("x", (0, 0, 1, 1), 0)], [Char(c, b, 0) for c, b in logical])
    (hit,) = find(page, "مدينة 42")
    assert hit.bbox == (0, 0, 44, 10)


def test_characters_of_scripts_without_spaces_are_never_fuzzy():
    page = page_of("白帝纸杯原味酸牛奶160g")
    assert find(page, "白帝金优原味酸牛奶160g") == []
    assert find(page, "白帝纸杯原味酸牛奶160g")[0].match == "exact"


def test_rotated_vertical_line(tmp_path):
    path = tmp_path / "rotated.pdf"
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((300, 400), "あいうえおかきく", fontname="japan", fontsize=12, rotate=90)
    page.insert_text((100, 400), "Total 319.44 due", fontsize=12, rotate=90)
    doc.save(path)
    text, (hit,) = located(path, "あいうえお")
    ((_, box),) = hit.lines()
    boxes = pdf_boxes(path, "あいうえお")
    assert box == pytest.approx(
        (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)),
        abs=0.01,
    )
    assert box[3] - box[1] > 4 * (box[2] - box[0])  # a tall column
    assert [o.text for o in find(text, "319.44")] == ["319.44"] and find(text, "319.45") == []
