"""The matcher (exact, normalized, fuzzy on hand cases) and `docread locate` (in-process): the boxes
it reports overlap the true word boxes."""

from __future__ import annotations

import json

import pymupdf
import pytest
from kit.cli import docread
from kit.text import page_of

from docread.text.evidence import locate_document
from docread.text.match import find, number_readings


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


@pytest.mark.parametrize(
    "text, readings",
    [
        ("1,234.56", ["1234.56"]),
        ("1234.56", ["1234.56"]),
        ("1.234,56", ["1234.56"]),
        ("1'234.56", ["1234.56"]),
        ("1,234", ["1234", "1.234"]),
        ("12,5", ["12.5"]),
        ("1.234.567", ["1234567"]),
        ("3.50", ["3.5"]),
        ("0042", ["42"]),
    ],
)
def test_number_readings(text, readings):
    assert number_readings(text) == readings


@pytest.mark.parametrize(
    "a, b",
    [
        ("$1,234.56", "1234.56"),
        ("1.234,56 €", "USD 1,234.56"),
        ("TOTAL  Amount", "total amount"),
        ("2024-03-15", "15.03.2024"),
        ("March 15, 2024", "2024-03-15"),
        ("15 Mar 2024", "15/03/2024"),
        ("03/04/2024", "2024-04-03"),
        ("03/04/2024", "2024-03-04"),  # day/month order unknown: both readings
    ],
)
def test_normalized_equal(a, b):
    assert [o.match for o in find(page_of(a), b)] == ["normalized"]


@pytest.mark.parametrize("a, b", [("1,234.56", "1234.65"), ("2024-03-15", "2024-03-16"), ("total", "totals due")])
def test_normalized_different(a, b):
    assert find(page_of(a), b) == []


def test_every_match_kind():
    page = page_of("Invoice number 4471", "Total amount: $1,234.56", "Due 15.03.2024 to ACME Corporation")
    cases = {
        "Total amount": ("exact", "Total amount"),
        "1234.56": ("normalized", "1,234.56"),
        "due 2024-03-15": ("normalized", "Due 15.03.2024"),
        "ACME Corparation": ("fuzzy", "ACME Corporation"),
        "Invoice numbr 4471": ("fuzzy", "Invoice number 4471"),
    }
    for query, (kind, text) in cases.items():
        (found,) = find(page, query)
        assert (found.match, found.text) == (kind, text), query
    assert find(page, "ACME Corparation", fuzzy=False) == []
    assert find(page, "4472") == []  # 4 characters allow no edit
    assert find(page, "nowhere at all") == []


def test_every_occurrence_and_one_box_per_line():
    page = page_of("total due", "the total", "amount paid total")
    assert [(o.match, o.bbox[1]) for o in find(page, "total")] == [("exact", 0), ("exact", 20), ("exact", 40)]
    (span,) = find(page, "the total amount paid")
    lines = span.lines()
    assert [t for t, _ in lines] == ["the total", "amount paid"]
    assert lines[0][1] == (0, 20, 90, 32) and lines[1][1] == (0, 40, 110, 52)
    record = span.to_json(page)
    assert record["bbox_px"] == [0, 40, 220, 104] and len(record["lines"]) == 2


def invoice(path):
    doc = pymupdf.open()
    for n in range(2):
        page = doc.new_page(width=300, height=400)
        page.insert_text((40, 60), f"Invoice {4471 + n}", fontsize=12)
        page.insert_text((40, 100), "Total amount: $1,234.56", fontsize=12)
        page.insert_text((40, 140), "Shipped to Berlin", fontsize=12, fontname="tiro")
    doc[1].set_rotation(90)
    doc.save(path)
    return path


def true_box(path, number, word):
    doc = pymupdf.open(path)
    page = doc[number - 1]
    (rect,) = [pymupdf.Rect(w[:4]) * page.rotation_matrix for w in page.get_text("words") if w[4] == word]
    return tuple(rect)


def test_locate_document_boxes_overlap_the_true_words(tmp_path):
    path = str(invoice(tmp_path / "inv.pdf"))
    results = list(locate_document(path, ["1234.56", "Berlin"]))
    assert [r.page for r in results] == [1, 2] and all(r.source == "layer" for r in results)
    for r in results:
        (money,) = r.found["1234.56"]
        assert money["match"] == "normalized" and iou(money["bbox"], true_box(path, r.page, "$1,234.56")) >= 0.5
        (city,) = r.found["Berlin"]
        assert iou(city["bbox"], true_box(path, r.page, "Berlin")) >= 0.5
        scale = 200 / 72
        assert city["bbox_px"] == pytest.approx([v * scale for v in city["bbox"]], abs=0.2)


def test_locate_cli_json_and_exit_codes(tmp_path):
    path = str(invoice(tmp_path / "inv.pdf"))
    result = docread("locate", path, "1,234.56", "invoice 4472", "--json")
    assert result.returncode == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["query"], r["page"], r["match"]) for r in records] == [
        ("1,234.56", 1, "exact"),  # "$1,234.56": its characters, the sign aside
        ("1,234.56", 2, "exact"),
        ("invoice 4472", 2, "normalized"),
    ]
    assert set(records[0]) >= {"file", "query", "page", "text", "bbox", "bbox_px", "match"}
    missing = docread("locate", path, "Berlin", "Paris")
    assert missing.returncode == 1 and "not found: Paris" in missing.stderr
    assert "Berlin\tpage 1\texact\tBerlin" in missing.stdout
    pages = docread("locate", path, "Berlin", "--pages", "2", "--json")
    assert [json.loads(line)["page"] for line in pages.stdout.splitlines()] == [2]
    (at100,) = [
        json.loads(line)
        for line in docread("locate", path, "Berlin", "-p", "1", "--dpi", "100", "--json").stdout.splitlines()
    ]
    assert at100["bbox_px"] == pytest.approx([v * 100 / 72 for v in at100["bbox"]], abs=0.2)


def test_locate_cli_bad_file_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7\nnot really")
    result = docread("locate", str(bad), "x")
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == result.stderr.splitlines()
