"""`batch`: one core over three engines; resume that loses nothing (append-only, settings told apart)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kit.cli import docread
from PIL import Image

from docread.batch.keys import Resume

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # the tiny model loaded once a session


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    Image.new("RGB", (120, 90), (200, 30, 30)).save(folder / "red.png")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage")
    questions = tmp_path / "q.txt"
    questions.write_text("What?\nWho?\n")
    return folder, questions


def _batch(tiny_llava, paths, questions, out, *extra):
    common = ["-Q", questions, "-o", out, "--model", tiny_llava, "--max-slices", "0"]
    return docread("batch", *paths, *common, *extra)


def test_resume_over_fewer_inputs_keeps_the_other_files_records(tiny_llava, inputs, tmp_path):
    folder, questions = inputs
    out = tmp_path / "out.jsonl"
    first = _batch(tiny_llava, [folder], questions, out, "--max-new-tokens", "2")
    assert first.returncode == 1 and f"2 answers, 2 errors → {out}" in first.stderr
    before = _records(out)
    assert sorted((Path(r["file"]).name, r["status"]) for r in before) == [
        ("broken.pdf", "error"),
        ("broken.pdf", "error"),
        ("red.png", "ok"),
        ("red.png", "ok"),
    ]
    again = _batch(tiny_llava, [folder / "red.png"], questions, out, "--max-new-tokens", "2", "--resume")
    assert again.returncode == 0, again.stderr
    assert "resuming: 2 records done" in again.stderr and "retrying 2 failed" in again.stderr
    assert _records(out) == before  # nothing owed for red.png; broken.pdf's error records still there


def test_another_max_new_tokens_appends_rows_told_apart_by_settings(tiny_llava, inputs, tmp_path):
    folder, questions = inputs
    out = tmp_path / "out.jsonl"
    image = folder / "red.png"
    _batch(tiny_llava, [image], questions, out, "--max-new-tokens", "2")
    first = _records(out)
    again = _batch(tiny_llava, [image], questions, out, "--max-new-tokens", "3", "--resume")
    assert again.returncode == 0, again.stderr
    assert "2 with other settings kept, redone for these settings" in again.stderr
    records = _records(out)
    assert records[:2] == first and len(records) == 4
    assert [r["key"] for r in records[2:]] == [r["key"] for r in first]  # the same (file, sha256, page, question)
    assert len({r["settings"] for r in first}) == len({r["settings"] for r in records[2:]}) == 1
    assert first[0]["settings"] != records[2]["settings"]
    third = _batch(tiny_llava, [image], questions, out, "--max-new-tokens", "3", "--resume")
    assert "resuming: 2 records done; 2 with other settings kept" in third.stderr
    assert len(_records(out)) == 4  # done for both settings: nothing appended


def test_resume_counts_only_ok_records_of_these_settings():
    log = [
        {"key": "a", "status": "ok", "settings": "s1"},
        {"key": "b", "status": "error", "settings": "s1"},
        {"key": "c", "status": "error", "settings": "s1"},
        {"key": "c", "status": "ok", "settings": "s1"},  # a retry appended after its failure
        {"key": "a", "status": "ok", "settings": "s2"},
        {"key": "d", "status": "ok"},  # an older docread's record: no digest
    ]
    resume = Resume.of(log, "s1")
    assert resume.done == {"a", "c"} and resume.retrying == 1 and resume.other_settings == 2
    assert (
        resume.summary()
        == "resuming: 2 records done; 2 with other settings kept, redone for these settings; retrying 1 failed"
    )
    assert Resume.of([], "s1").summary() is None


def _pdf(path: Path, texts: list[str]) -> Path:
    import pymupdf

    doc = pymupdf.open()
    for text in texts:
        doc.new_page(width=300, height=300).insert_text((30, 60), text, fontsize=18)
    doc.save(path)
    return path


def test_batch_reads_pages_as_ask_does_with_the_page_text(tiny_llava, tmp_path):
    """The same per-page call as `ask`: the page's text in the prompt (--text-prompt), the same answer."""
    paper = _pdf(tmp_path / "paper.pdf", ["total: 12.50", "signed by Ada"])
    questions = tmp_path / "q.txt"
    questions.write_text("What is the total?\n")
    options = ["--model", tiny_llava, "--max-slices", "0", "--max-new-tokens", "3"]
    out = tmp_path / "out.jsonl"
    assert docread("batch", paper, "-Q", questions, "-o", out, *options).returncode == 0
    records = _records(out)
    assert [r["page"] for r in records] == [1, 2]
    assert all(r["text_prompt"]["source"] == "layer" and r["text_prompt"]["tokens"] > 0 for r in records)
    for record in records:
        asked = docread("ask", paper, "What is the total?", "--pages", record["page"], "--json", *options)
        (expected,) = [json.loads(line) for line in asked.stdout.splitlines()]
        assert (record["answer"], record["text_prompt"]) == (expected["answer"], expected["text_prompt"])
        assert record["score"] == pytest.approx(expected["score"], rel=1e-5)  # pairs batched otherwise: float rounding
    image_alone = tmp_path / "off.jsonl"
    run = docread("batch", paper, "-Q", questions, "-o", image_alone, *options, "--text-prompt", "off")
    assert run.returncode == 0 and [r["text_prompt"] for r in _records(image_alone)] == [None, None]
    assert _records(image_alone)[0]["settings"] != records[0]["settings"]  # text_prompt shapes the answer
    short = tmp_path / "short.jsonl"
    docread("batch", paper, "-Q", questions, "-o", short, *options, "--text-tokens", "2")
    assert [r["text_prompt"]["cut"] for r in _records(short)] == [True, True]


def test_batch_records_have_the_same_keys_ok_or_failed(tiny_llava, inputs, tmp_path):
    folder, questions = inputs
    out = tmp_path / "out.jsonl"
    _batch(tiny_llava, [folder], questions, out, "--max-new-tokens", "2")
    records = _records(out)
    assert {r["status"] for r in records} == {"ok", "error"}
    assert len({tuple(r) for r in records}) == 1  # one key list, in one order
    unopened = next(r for r in records if r["status"] == "error")
    assert unopened["repaired"] is None and unopened["page"] is None and unopened["settings"] == records[-1]["settings"]


def test_the_last_line_counts_in_words():
    from docread.cli.batch import summary

    assert summary(1, 0, "a.jsonl") == "1 answer, 0 errors → a.jsonl"
    assert summary(2, 1, "a.jsonl") == "2 answers, 1 error → a.jsonl"
