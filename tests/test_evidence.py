"""Evidence for answers (issue #13): the evidence function on known answers, `ask_document` attaching
it to the best answer, and the CLI (`ask --json`, `--highlight`, `batch`) wiring on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pymupdf
import pytest
from kit import per_page
from kit.cli import docread
from PIL import Image

import docread.document as document_module
from docread.document import PageAnswer, ask_document
from docread.intake import open_document
from docread.results import Answer
from docread.settings import Settings
from docread.text.evidence import EVIDENCE_RGB, PageTexts, evidence, evidence_fields

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

QUESTION = "What is the total amount?"


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


@pytest.fixture
def invoice(tmp_path):
    path = tmp_path / "invoice.pdf"
    doc = pymupdf.open()
    for n in range(2):
        page = doc.new_page(width=300, height=400)
        page.insert_text((40, 60), f"Invoice {4471 + n}", fontsize=12)
        page.insert_text((40, 100), "Total amount: $1,234.56" if n else "Nothing to pay here", fontsize=12)
    doc.save(path)
    return path


def true_box(path, number, word):
    page = pymupdf.open(path)[number - 1]
    (rect,) = [w[:4] for w in page.get_text("words") if w[4] == word]
    return rect


def answer(page: int, text: str, file: str = "invoice.pdf") -> Answer:
    return Answer(file, page, QUESTION, text, -0.5, "stub", 0, 0, 0, 64, 70, 90, 3, 0, None, "eos")


def test_evidence_of_known_answers(invoice):
    with open_document(str(invoice)) as document:
        texts = PageTexts(document)
        page2 = texts.get(document.pages[1])
        (found,) = evidence(page2, "$1,234.56.")
        assert found["match"] == "exact" and iou(found["bbox"], true_box(invoice, 2, "$1,234.56")) >= 0.5
        (normal,) = evidence(page2, "1234.56")
        assert normal["match"] == "normalized" and normal["page"] == 2
        assert evidence_fields(texts, document.pages[1], "42 apples") == {"evidence": [], "grounded": False}
        assert evidence_fields(texts, document.pages[1], "")["grounded"] is False
        off = PageTexts(document, "off")
        assert evidence_fields(off, document.pages[1], "1234.56") == {"evidence": [], "grounded": None}


def test_a_page_without_text_gives_no_evidence(tmp_path):
    Image.new("RGB", (200, 100), "white").save(tmp_path / "blank.png")
    with open_document(str(tmp_path / "blank.png")) as document:
        fields = evidence_fields(PageTexts(document, "layer"), document.pages[0], "anything")
    assert fields == {"evidence": [], "grounded": None}  # no text layer, no OCR: nothing was checked


def test_ask_document_attaches_evidence_to_the_best_answer(invoice, monkeypatch):
    said = {1: ("nothing", -2.0), 2: ("$1,234.56", -0.1)}

    def fake_answer_page(reader, document, page, questions, settings, **_):
        text, score = said[page.number]
        result = answer(page.number, text, document.name)
        result.score = score
        yield PageAnswer(questions[0], page.number, result)

    monkeypatch.setattr(document_module, "answer_pages", per_page(fake_answer_page))
    (result,) = ask_document(None, str(invoice), [QUESTION], settings=Settings(text_prompt="off"))
    assert result.best.page == 2 and result.grounded and result.evidence[0]["match"] == "exact"
    record = result.to_json()
    assert record["grounded"] is True and record["evidence"][0]["bbox_px"] == result.evidence[0]["bbox_px"]
    (off,) = ask_document(None, str(invoice), [QUESTION], settings=Settings(text="off", text_prompt="off"))
    assert off.to_json()["evidence"] == [] and off.grounded is None and off.to_json()["grounded"] is None


@pytest.fixture
def known_answer(monkeypatch):
    """The tiny model runs as usual, but its answer is replaced by a known one."""
    from docread.reader import DocReader

    real = DocReader._finish_answer  # where every Answer is made, decoded alone or in a batch

    def forced(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.answer = "1234.56"
        return result

    monkeypatch.setattr(DocReader, "_finish_answer", forced)


def ask(*args):
    return docread("ask", *map(str, args))


def test_ask_json_carries_evidence_for_whatever_the_model_says(tiny_llava, invoice):
    result = ask(
        invoice,
        QUESTION,
        "--model",
        tiny_llava,
        "--device",
        "cpu",
        "--max-slices",
        0,
        "--max-new-tokens",
        3,
        "--pages",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.output
    record = json.loads(result.stdout)
    with open_document(str(invoice), pages="2") as document:
        expected = evidence(PageTexts(document).get(document.pages[0]), record["answer"])
    assert record["evidence"] == expected and record["grounded"] is bool(expected)


def test_ask_json_and_highlight_with_a_known_answer(tiny_llava, invoice, known_answer, tmp_path):
    picture = tmp_path / "hl.png"
    result = ask(
        invoice,
        QUESTION,
        "--model",
        tiny_llava,
        "--device",
        "cpu",
        "--max-slices",
        4,
        "--max-new-tokens",
        2,
        "--pages",
        "2",
        "--json",
        "--highlight",
        picture,
    )
    assert result.returncode == 0, result.output
    record = json.loads(result.stdout)
    assert record["answer"] == "1234.56" and record["grounded"] is True
    (found,) = record["evidence"]
    assert found["match"] == "normalized" and iou(found["bbox"], true_box(invoice, 2, "$1,234.56")) >= 0.5
    image = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    assert image.shape[:2] == (round(400 * 200 / 72), round(300 * 200 / 72))
    x0, y0, x1, y1 = (round(v) for v in found["bbox_px"])
    edge = image[y0 - 3, x0:x1]  # the box's top border, drawn in the evidence colour
    assert (np.abs(edge - np.array(EVIDENCE_RGB)).sum(axis=1) < 60).mean() > 0.9
    plain = ask(
        invoice,
        QUESTION,
        "--model",
        tiny_llava,
        "--device",
        "cpu",
        "--max-slices",
        0,
        "--max-new-tokens",
        2,
        "--pages",
        "2",
    )
    assert "found on the page (normalized)" in plain.stderr


def test_batch_records_carry_evidence(tiny_llava, invoice, known_answer, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text(QUESTION + "\n")
    out = tmp_path / "out.jsonl"
    result = docread(
        "batch",
        str(invoice),
        "-Q",
        str(questions),
        "-o",
        str(out),
        "--model",
        str(tiny_llava),
        "--device",
        "cpu",
        "--max-slices",
        "0",
        "--max-new-tokens",
        "2",
    )
    assert result.returncode == 0, result.output
    records = {r["page"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records[1]["grounded"] is False and records[1]["evidence"] == []
    assert records[2]["grounded"] is True and records[2]["evidence"][0]["match"] == "normalized"


@pytest.fixture
def sentences(tmp_path):
    path = tmp_path / "sentences.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=300)
    for n, line in enumerate(
        ["Invoice number: INV-2026-0412", "Date: 14 March 2026", "Total: GBP 319.44", "Sort code 20-45-77"]
    ):
        page.insert_text((40, 60 + 30 * n), line, fontsize=12)
    doc.save(path)
    return path


@pytest.mark.parametrize(
    "answer, grounded, parts",
    [
        ("The total is GBP 319.44.", True, {"GBP 319.44"}),
        ("It was issued on 14 March 2026.", True, {"14 March 2026"}),
        ("The invoice INV-2026-0412 is dated 2026-03-14", True, {"INV-2026-0412", "2026-03-14"}),
        ("The sort code is 20-45-77", True, {"20-45-77"}),
        ("The total is GBP 319.45.", False, set()),
        ("It was issued on 14 March 2025.", False, set()),
        ("The invoice INV-2026-0413 is dated 2026-03-14", False, {"2026-03-14"}),
        ("sort code 20-45-78", False, set()),
        ("The total is GBP 319.44 and the date 15 March 2026", False, {"GBP 319.44"}),
    ],
)
def test_sentence_answers_are_grounded_by_their_values(sentences, answer, grounded, parts):
    with open_document(str(sentences)) as document:
        fields = evidence_fields(PageTexts(document), document.pages[0], answer)
    assert fields["grounded"] is grounded
    assert {e["part"] for e in fields["evidence"] if e["role"] == "value"} == parts
    for item in fields["evidence"]:
        assert item["match"] in ("exact", "normalized", "fuzzy") and item["bbox"][2] > item["bbox"][0]


def test_an_answer_found_whole_or_by_its_content(sentences):
    with open_document(str(sentences)) as document:
        texts = PageTexts(document)
        page = document.pages[0]
        (whole,) = evidence(texts.get(page), "GBP 319.44")
        assert (whole["role"], whole["match"], whole["text"]) == ("answer", "exact", "GBP 319.44")
        assert evidence_fields(texts, page, "The sort code")["grounded"] is True
        assert evidence_fields(texts, page, "The sort number of the code")["grounded"] is False
        assert evidence_fields(PageTexts(document, "off"), page, "GBP 319.44")["grounded"] is None
