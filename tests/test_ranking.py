"""`--pages auto` (issue #13): BM25 of the question against each page's text puts the answer's page
in the top 3 of a 30-page PDF; pages without text are read as before; records say what was read."""

from __future__ import annotations

import json
import random

import pymupdf
import pytest
from kit import per_page
from kit.cli import docread

import docread.document as document_module
from docread.document import PageAnswer, ask_document
from docread.intake import open_document
from docread.results import Answer
from docread.settings import Settings
from docread.text.ranking import choose_pages, pick_pages

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

FACTS = {
    7: ("The contract was signed by Maria Keller on 12 May 2021.", "Who signed the contract?"),
    17: ("Invoice total amount due: 4,210.00 EUR, payable by bank transfer.", "What is the total amount due?"),
    23: ("The main warehouse is located in the Rotterdam harbour district.", "Where is the warehouse located?"),
    29: ("Warranty period: 24 months from the date of delivery.", "How long is the warranty period?"),
    3: ("Our support hotline can be reached at +49 30 1234567.", "What is the phone number of the support hotline?"),
}
OFF = Settings(text_prompt="off")  # no model here: no tokenizer to count page text with
FILLER = (
    "quarterly report revenue growth marketing strategy team meeting agenda customer feedback product "
    "roadmap budget review office schedule training session project milestone supplier audit policy "
    "update amount signed located period"
).split()


def thirty_pages(path, *, blank=()):
    rng = random.Random(0)
    doc = pymupdf.open()
    for number in range(1, 31):
        page = doc.new_page(width=400, height=500)
        if number in blank:
            page.draw_rect(pymupdf.Rect(50, 50, 350, 450), color=(0, 0, 0), fill=(0.9, 0.9, 0.9))
            continue
        lines = [" ".join(rng.choice(FILLER) for _ in range(8)) for _ in range(12)]
        if number in FACTS:
            lines.insert(rng.randrange(len(lines)), FACTS[number][0])
        page.insert_textbox(pymupdf.Rect(30, 30, 370, 470), "\n".join(lines), fontsize=9)
    doc.save(path)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return thirty_pages(tmp_path_factory.mktemp("rank") / "report.pdf")


def test_the_answer_page_is_in_the_top_three(report):
    with open_document(str(report)) as document:
        picks = choose_pages(document, [q for _, q in FACTS.values()], pages="auto", max_pages=20)
    for number, (_, question) in FACTS.items():
        chosen = picks[question]
        assert len(chosen) <= 3 and all(p.why == "bm25" and p.score > 0 for p in chosen)
        assert number in [p.page for p in chosen], (question, chosen)


def test_pages_without_text_are_read_as_before(tmp_path):
    path = thirty_pages(tmp_path / "mixed.pdf", blank={2, 5, 30})
    with open_document(str(path)) as document:
        (chosen,) = choose_pages(document, ["Who signed the contract?"], pages="auto", max_pages=20).values()
    assert [(p.page, p.why) for p in chosen if p.why == "no_text"] == [(2, "no_text"), (5, "no_text"), (30, "no_text")]
    assert 7 in [p.page for p in chosen if p.why == "bm25"]
    # no page matches at all: the first pages, as without ranking
    assert [p.why for p in pick_pages({1: "alpha", 2: "beta"}, "gamma?")] == ["fallback", "fallback"]
    assert pick_pages({1: "", 2: ""}, "gamma?", max_pages=1) == [pick_pages({1: ""}, "x")[0]]


def test_ask_document_reads_only_the_picked_pages_and_says_why(report, monkeypatch):
    read = []

    def fake_answer_page(reader, document, page, questions, settings, **_):
        read.append((page.number, tuple(questions)))
        for q in questions:
            yield PageAnswer(
                q,
                page.number,
                Answer(
                    document.name,
                    page.number,
                    q,
                    "x",
                    -1.0 + page.number / 100,
                    "stub",
                    0,
                    0,
                    0,
                    1,
                    1,
                    1,
                    1,
                    0,
                    None,
                    "eos",
                ),
            )

    monkeypatch.setattr(document_module, "answer_pages", per_page(fake_answer_page))
    questions = [FACTS[7][1], FACTS[23][1]]
    results = ask_document(None, str(report), questions, settings=OFF.replace(pages="auto", top_pages=2))
    for result, number in zip(results, (7, 23)):
        record = result.to_json()
        assert number in record["pages_read"] and len(record["pages_read"]) <= 2
        assert all(p["why"] == "bm25" and p["score"] > 0 for p in record["page_selection"])
        assert {a["page"] for a in record["pages"]} <= set(record["pages_read"])
    asked = {n: set(qs) for n, qs in read}
    assert set(asked) == set(results[0].pages_read) | set(results[1].pages_read)
    assert all(questions[0] in asked[n] for n in results[0].pages_read)
    plain = ask_document(None, str(report), questions[:1], settings=OFF.replace(pages="1-2"))[0].to_json()
    assert plain["pages_read"] == [1, 2] and plain["page_selection"][0] == {"page": 1, "why": "given"}


def test_ask_pages_auto_through_the_cli(tiny_llava, report):
    result = docread(
        "ask",
        str(report),
        FACTS[29][1],
        "--pages",
        "auto",
        "--top-pages",
        "2",
        "--model",
        str(tiny_llava),
        "--device",
        "cpu",
        "--max-slices",
        "0",
        "--max-new-tokens",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.output
    record = json.loads(result.stdout)
    assert 29 in record["pages_read"] and len(record["pages"]) == len(record["pages_read"]) <= 2
    bad = docread("ask", str(report), "q", "--pages", "automatic")
    assert bad.returncode == 2
