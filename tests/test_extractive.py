"""`--extractive` (docread.generate.extractive): every answer is a span of its page's own text, whatever a
tiny random model would have said, on many seeds; a page without text is that page's error."""

from __future__ import annotations

import pymupdf
import pytest

from docread.document import ask_document
from docread.generate.extractive import Extractive, normalized
from docread.settings import Settings

LINES = ("Invoice INV-2026-0412 from Acme Tools GmbH", "Total due: 319.44 GBP by 14 March 2026")


@pytest.fixture(scope="module")
def invoice(tmp_path_factory):
    path = tmp_path_factory.mktemp("extractive") / "invoice.pdf"
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=200)
    for i, line in enumerate(LINES):
        page.insert_text((20, 40 + 30 * i), line, fontsize=12)
    doc.new_page(width=400, height=200)  # a page without text
    doc.save(path)
    return str(path)


def settings(seed: int, **more) -> Settings:
    return Settings(max_slices=0, max_new_tokens=12, temperature=1.0, seed=seed, extractive=True, **more)


def test_every_answer_is_a_span_of_the_page_text_on_many_seeds(tiny_reader, invoice):
    text = normalized(" ".join(LINES))
    questions = ["What is the total?", "Who sent it?", "When is it due?"]
    answers = []
    for seed in range(8):
        for result in ask_document(tiny_reader, invoice, questions, settings=settings(seed, pages="1")):
            said = normalized(result.best.answer).strip()
            assert said and said in text, (seed, result.question, said)
            answers.append(said)
    assert len(set(answers)) > 3  # the spans vary with the seed: the model chooses, the page bounds it


def test_without_extractive_the_same_model_says_what_is_not_on_the_page(tiny_reader, invoice):
    free = ask_document(
        tiny_reader, invoice, ["What is the total?"], settings=settings(0, pages="1").replace(extractive=False)
    )
    assert normalized(free[0].best.answer).strip() not in normalized(" ".join(LINES))


def test_a_page_without_text_is_that_pages_error(tiny_reader, invoice):
    (result,) = ask_document(tiny_reader, invoice, ["What is the total?"], settings=settings(0))
    assert result.best.page == 1
    assert [(page, e.code) for page, e in result.errors] == [(2, "no_page_text")]


def test_the_constraint_keeps_only_continuations_of_a_span(tiny_reader):
    import torch

    tokenizer = tiny_reader.base.tokenizer
    span = Extractive(tokenizer, "Total due: 319.44 GBP", tiny_reader.eos_token_ids)
    said = tokenizer("Total due", add_special_tokens=False).input_ids
    logits = torch.zeros(1, len(tokenizer))
    allowed = torch.isfinite(span(logits, said))[0].nonzero().flatten().tolist()

    def on_page(ids):
        text = normalized(tokenizer.decode(ids, skip_special_tokens=True)).lstrip()
        return bool(text) and text in span.text

    assert allowed and all(on_page([*said, t]) or t in span.eos for t in allowed)
    assert set(span.eos) <= set(allowed)  # "Total due" is a span: the answer may end here


def test_extract_keeps_string_fields_on_the_page_and_typed_fields_parsing(tiny_reader, invoice):
    pytest.importorskip("llguidance")
    from docread.extract import extract_document, field_specs

    text = normalized(" ".join(LINES))
    fields = field_specs(["vendor", "reference", "total:number"])
    for seed in range(4):
        record = extract_document(tiny_reader, invoice, fields, settings=settings(seed, pages="1"))["fields"]
        for name in ("vendor", "reference"):
            assert normalized(record[name]["value"]).strip() in text, (seed, name, record[name])
        assert record["total"]["error"] is None and isinstance(record["total"]["value"], float), record["total"]


def test_batch_extractive_records_are_spans_and_a_textless_page_is_its_error(tiny_llava, invoice, tmp_path):
    import json

    from kit.cli import docread

    questions = tmp_path / "q.txt"
    questions.write_text("What is the total?\nWho sent it?\n")
    out = tmp_path / "out.jsonl"
    args = ["batch", invoice, "-Q", questions, "-o", out, "--model", tiny_llava, "--device", "cpu", "--extractive"]
    run = docread(*args, "--max-slices", "0", "--max-new-tokens", "8", "--temperature", "1", "--seed", "2")
    assert run.returncode == 1, run.stderr  # page 2 has no text: its records are errors
    records = [json.loads(line) for line in out.read_text().splitlines()]
    text = normalized(" ".join(LINES))
    assert [normalized(r["answer"]).strip() in text for r in records if r["page"] == 1] == [True, True]
    assert [r["error"]["code"] for r in records if r["page"] == 2] == ["no_page_text", "no_page_text"]
