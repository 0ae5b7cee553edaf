"""Issue #20, what was left: OCR word gaps rebuilt from the engine's character boxes and the line's ink
(synthetic boxes, and one real rapidocr line), OCR confidence in records, `ocr --source auto|text|model`
(text without any model weights; auto takes the layer, else the model), extract's extractive default and
--no-extractive, and an unreadable file's error record on stdout."""

from __future__ import annotations

import json

import pymupdf
import pytest
from kit.cli import docread

import docread.document as document_module
from docread.generate.extractive import normalized
from docread.text.ocrspaces import ink_gaps, spaced_words
from docread.text.units import typed_spans

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")

NO_MODEL = ("--model", "/nonexistent-model-folder")


def boxes_of(text: str, pitch: float = 10.0) -> list[tuple[float, float]]:
    return [(i * pitch, i * pitch + 8) for i in range(len(text))]


# -- word gaps ---------------------------------------------------------------------------------------
def test_ink_gaps_are_blank_runs_between_ink_wide_enough():
    profile = [False] * 3 + [True] * 4 + [False] * 2 + [True] * 3 + [False] * 6 + [True] * 2 + [False] * 5
    assert ink_gaps(profile, 3) == [(12, 18)]  # the 2-wide run is a letter gap, the margins are no gaps
    assert ink_gaps(profile, 2, offset=100) == [(107, 109), (112, 118)]


def test_spaces_rebuilt_where_an_ink_gap_lies_between_two_characters():
    chars = "TrafficVolunteersfor"
    boxes = boxes_of(chars)
    gaps = [(68.5, 70.5), (168.5, 170.5)]  # blank ink between 'c'|'V' and 's'|'f'
    assert [w for w, _ in spaced_words(chars, boxes, gaps)] == ["Traffic", "Volunteers", "for"]
    words = spaced_words(chars, boxes, gaps)
    assert words[1][1] == (70.0, 168.0)  # a word's span runs from its first character to its last
    assert [w for w, _ in spaced_words(chars, boxes, [])] == [chars]  # no gap: the engine's text as it is
    assert [w for w, _ in spaced_words("ab cd", boxes_of("ab cd"), [])] == ["ab", "cd"]  # its own spaces kept
    # scripts written without spaces are never cut, whatever the gaps between their characters
    assert [w for w, _ in spaced_words("東京都庁", boxes_of("東京都庁"), [(8.5, 9.5), (18.5, 19.5)])] == ["東京都庁"]


@pytest.fixture(scope="module")
def line_png(tmp_path_factory):
    """One printed line rendered at 150 dpi, as a PNG (an image: OCR is its only text)."""
    doc = pymupdf.open()
    page = doc.new_page(width=420, height=50)
    page.insert_text((10, 32), "Traffic Volunteers for the week of October 27", fontsize=16)
    path = tmp_path_factory.mktemp("ocrline") / "line.png"
    page.get_pixmap(dpi=150).save(path)
    return path


def test_a_real_ocr_line_keeps_its_spaces_and_confidence(line_png):
    pytest.importorskip("rapidocr_onnxruntime")
    from PIL import Image

    from docread.text.pagetext import ocr_words

    words, confidence = ocr_words(Image.open(line_png), "line.png")
    assert [w.text for w in words] == "Traffic Volunteers for the week of October 27".split()
    assert len({w.line for w in words}) == 1 and 0.5 < confidence <= 1.0
    xs = [w.bbox[0] for w in words]
    assert xs == sorted(xs) and all(a.bbox[2] <= b.bbox[0] + 2 for a, b in zip(words, words[1:]))


# -- ocr --source ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_pdf(tmp_path_factory, line_png):
    """Page 1 born digital (a text layer); page 2 a scan (the line's image, no text layer)."""
    doc = pymupdf.open()
    doc.new_page(width=300, height=200).insert_text((30, 60), "Invoice INV-2026-0412 total GBP 319.44", fontsize=11)
    doc.new_page(width=420, height=50).insert_image(pymupdf.Rect(0, 0, 420, 50), filename=str(line_png))
    path = tmp_path_factory.mktemp("mixed") / "mixed.pdf"
    doc.save(path)
    return path


def records(run) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_source_text_needs_no_model_weights(mixed_pdf, line_png):
    pytest.importorskip("rapidocr_onnxruntime")
    run = docread("ocr", mixed_pdf, "--source", "text", "--json", *NO_MODEL)
    assert run.returncode == 0, run.stderr
    layer, scan = records(run)
    assert layer["text"] == "Invoice INV-2026-0412 total GBP 319.44"
    assert (layer["source"], layer["confidence"], layer["model"]) == ("layer", None, None)
    assert scan["source"] == "ocr" and 0.5 < scan["confidence"] <= 1.0
    assert scan["text"] == "Traffic Volunteers for the week of October 27"
    image = docread("ocr", line_png, "--source", "text", *NO_MODEL)  # an image: its OCR, printed
    assert image.returncode == 0 and image.stdout.strip() == scan["text"]


def test_auto_takes_the_layer_and_the_model_reads_the_rest(mixed_pdf, tiny_llava):
    only_layer = docread("ocr", mixed_pdf, "--pages", "1", "--json", *NO_MODEL)  # auto, the default
    assert only_layer.returncode == 0, only_layer.stderr
    assert [r["source"] for r in records(only_layer)] == ["layer"]  # no model was needed, none loaded
    run = docread("ocr", mixed_pdf, "--json", "--model", tiny_llava, "--device", "cpu", "--max-new-tokens", "2")
    assert run.returncode == 0, run.stderr
    layer, scan = records(run)
    assert layer["source"] == "layer" and layer["text"].startswith("Invoice")
    assert scan["source"] == "model" and scan["model"] and scan["confidence"] is None
    forced = docread("ocr", mixed_pdf, "--pages", "1", "--source", "model", "--json", "--model", tiny_llava,
                     "--device", "cpu", "--max-new-tokens", "2")  # fmt: skip
    assert [r["source"] for r in records(forced)] == ["model"]
    assert docread("ocr", mixed_pdf, "--source", "model", *NO_MODEL).returncode == 2  # the model is needed


def test_source_is_ocrs_alone(mixed_pdf):
    run = docread("ask", mixed_pdf, "What?", "--source", "text")
    assert run.returncode == 2 and "No such option" in run.stderr


# -- extract ------------------------------------------------------------------------------------------
@pytest.fixture
def invoice(tmp_path):
    doc = pymupdf.open()
    doc.new_page(width=300, height=200).insert_text((30, 60), "Vendor ACME Ltd total 319.44 due 13 April 2026")
    doc.save(tmp_path / "inv.pdf")
    return tmp_path / "inv.pdf"


def test_typed_spans_are_the_pages_numbers_and_dates_as_written():
    text = "Invoice INV-2026-0412 total 319.44 GBP, -12.50 by 14 March 2026"
    assert typed_spans(text, "number") == ["319.44", "-12.50", "14", "2026"]  # none from inside the identifier
    assert typed_spans(text, "date") == ["14 March 2026"]


def test_extract_is_extractive_by_default(invoice, tiny_llava, monkeypatch):
    seen = []
    original = document_module.page_constraint

    def spy(reader, texts, page, settings, *args, **kwargs):
        seen.append(settings.extractive)
        return original(reader, texts, page, settings, *args, **kwargs)

    monkeypatch.setattr(document_module, "page_constraint", spy)
    model = ("--model", tiny_llava, "--device", "cpu", "--max-slices", "0", "--max-new-tokens", "4")
    fields = ("--field", "vendor", "--field", "total:number", "--field", "due:date")
    run = docread("extract", invoice, *fields, *model)
    (record,) = records(run)
    assert seen == [True] and record["error"] is None
    page_text = normalized("Vendor ACME Ltd total 319.44 due 13 April 2026")
    for name, field in record["fields"].items():  # every answer, typed or not, is a span of the page
        assert field["raw"] is not None and normalized(field["raw"]).strip() in page_text, name
    assert run.returncode == (1 if any(f["error"] for f in record["fields"].values()) else 0)
    off = docread("extract", invoice, *fields, "--no-extractive", *model)
    assert seen == [True, False] and records(off)[0]["file"] == str(invoice)


def test_an_unreadable_file_is_an_error_record_on_stdout(invoice, tiny_llava, tmp_path):
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"%PDF-1.7 this is not a PDF")
    run = docread(
        "extract", tmp_path / "missing.pdf", junk, invoice, "--field", "total:number", "--field", "vendor",
        "--model", tiny_llava, "--device", "cpu", "--max-slices", "0", "--max-new-tokens", "2",
    )  # fmt: skip
    missing, bad, good = records(run)
    assert run.returncode == 1  # as batch: a file that failed fails the run, the others are read
    for failed in (missing, bad):
        assert failed["error"]["code"] and failed["error"]["message"] in run.stderr
        null = {"value": None, "raw": None, "page": None, "score": None, "evidence": []}
        assert failed["fields"] == {name: {**null, "error": failed["error"]["message"]} for name in ("total", "vendor")}
    assert missing["file"].endswith("missing.pdf") and bad["file"].endswith("junk.pdf")
    assert good["error"] is None and good["fields"]["vendor"]["page"] == 1


def test_a_malformed_ocr_result_is_that_pages_error(monkeypatch):
    """Whatever shape the engine's result takes, reading it fails as this input's DocreadError, not the run."""
    from PIL import Image

    import docread.text.pagetext as pagetext
    from docread.errors import DocreadError

    monkeypatch.setattr(pagetext, "_ocr_engine", lambda: lambda image, **_: ([["not a box", "text", 0.99]], None))
    with pytest.raises(DocreadError, match="page.png"):
        pagetext.ocr_words(Image.new("RGB", (40, 20), "white"), "page.png")
