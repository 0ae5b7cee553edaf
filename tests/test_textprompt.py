"""`--text-prompt` (issue #13): the page's text after the image, capped in tokens and counted by the
context planner: the token accounting is exact, and tiles are reduced before the prompt fails."""

from __future__ import annotations

import json

import pymupdf
import pytest
from kit.cli import docread

from docread.document import ask_document
from docread.errors import DocreadError
from docread.settings import Settings
from docread.text.textprompt import CUT_MARK, REFERENCE_HEAD, cap, reference, wanted, with_reference
from docread.views.prompt import task_question

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

QUESTION = "What is the total?"
BODY = "Invoice 4471. Total amount due: 1,234.56 EUR. " * 40


@pytest.fixture(scope="module")
def reader(tiny_llava):
    from docread import load

    return load(str(tiny_llava), device="cpu", quant="none")


@pytest.fixture
def pdf(tmp_path):
    doc = pymupdf.open()
    doc.new_page(width=400, height=500).insert_textbox(pymupdf.Rect(20, 20, 380, 480), BODY, fontsize=8)
    doc.save(tmp_path / "long.pdf")
    return tmp_path / "long.pdf"


def test_when_page_text_is_added():
    assert wanted("auto", "layer", "hires") and not wanted("auto", "layer", "native")
    assert not wanted("auto", "ocr", "hires") and wanted("on", "ocr", "native")
    assert not wanted("off", "layer", "hires") and not wanted("on", "none", "hires")


def test_cap_cuts_at_the_budget_and_says_so(reader):
    tokenizer = reader.base.tokenizer
    n = len(tokenizer(BODY, add_special_tokens=False)["input_ids"])
    assert cap(tokenizer, BODY, n + 5) == (BODY, n, False)
    kept, tokens, cut = cap(tokenizer, BODY, 30)
    assert cut and tokens == 30 and kept.endswith(CUT_MARK)
    assert len(tokenizer(kept[: -len(CUT_MARK)], add_special_tokens=False)["input_ids"]) <= 30
    ref = reference(tokenizer, BODY, "layer", 30)
    assert ref.block.startswith(REFERENCE_HEAD) and ref.to_json() == {"source": "layer", "tokens": 30, "cut": True}
    assert reference(tokenizer, "   ", "layer") is None


def test_token_accounting_is_exact(reader, pdf):
    plain, texted = (
        ask_document(
            reader,
            str(pdf),
            [QUESTION],
            settings=Settings(max_slices=0, max_new_tokens=2, text_prompt=mode, text_tokens=40),
        )[0].best
        for mode in ("off", "on")
    )
    assert plain.text_prompt is None and texted.text_prompt == {"source": "layer", "tokens": 40, "cut": True}
    ref = reference(reader.base.tokenizer, _page_text(pdf), "layer", 40)
    prompt = with_reference(task_question("qa", QUESTION), ref)
    assert texted.prompt_tokens == len(reader._ids(prompt)) - 1 + texted.image_tokens
    assert plain.prompt_tokens == len(reader._ids(task_question("qa", QUESTION))) - 1 + plain.image_tokens


def _page_text(pdf) -> str:
    from docread.intake import open_document
    from docread.text.evidence import PageTexts

    with open_document(str(pdf)) as document:
        return PageTexts(document).get(document.pages[0]).text


def test_tiles_are_reduced_before_the_prompt_fails(reader):
    tokenizer = reader.base.tokenizer
    full, _ = reader.plan(1000, 1400, QUESTION, max_slices=16, max_new_tokens=8)
    assert not full.reduced
    room = reader.context - full.tokens.image_tokens - 8  # what the prompt may take with all 16 tiles
    long_text = "word " * (2 * room)
    ref = reference(tokenizer, long_text, "layer", room)  # a little over the room: tiles must give way
    reduced, ids = reader.plan(1000, 1400, with_reference(QUESTION, ref), max_slices=16, max_new_tokens=8)
    assert reduced.reduced and reduced.max_slices < 16
    assert len(ids) - 1 + reduced.tokens.image_tokens + 8 <= reader.context
    too_long = reference(tokenizer, long_text * 4, "layer", reader.context)  # no tile budget is small enough
    with pytest.raises(DocreadError) as raised:
        reader.plan(1000, 1400, with_reference(QUESTION, too_long), max_slices=16, max_new_tokens=8)
    assert raised.value.code == "context_overflow"  # an error, never a question cut short


def test_ask_records_say_whether_text_was_added(tiny_llava, pdf, reuse_loaded_models):
    def ask(*extra):
        args = ["--model", tiny_llava, "--device", "cpu", "--max-slices", "0", "--max-new-tokens", "1", "--json"]
        result = docread("ask", pdf, QUESTION, *args, *extra)
        assert result.returncode == 0, result.output
        return json.loads(result.stdout)

    assert ask()["text_prompt"]["source"] == "layer"  # auto: a PDF's own text layer, hires view
    assert ask("--text-prompt", "off")["text_prompt"] is None
    assert ask("--text-tokens", "16")["text_prompt"] == {"source": "layer", "tokens": 16, "cut": True}
