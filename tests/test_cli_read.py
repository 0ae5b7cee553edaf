"""The everyday commands on the tiny checkpoint: multi-question and multi-page `ask`, `ocr`,
`batch` with exact records and resume after SIGKILL, `models`, JSON safety, OOM fallback."""

import json
import os
import signal
import time

import pymupdf
import pytest
from kit.cli import docread as docread_cli
from kit.forked import GROUP, Forked
from PIL import Image

from docread.batch.core import record_log, run_batch
from docread.batch.local import LocalEngine
from docread.settings import Settings

# The commands run in-process (kit.cli: the same entry point as `python -m docread`, no interpreter
# start per command), each tiny model loaded once; only the SIGKILL test needs a real process.
pytestmark = [pytest.mark.usefixtures("reuse_loaded_models", "forkserver"), pytest.mark.xdist_group(GROUP)]


def make_pdf(path, texts):
    doc = pymupdf.open()
    for text in texts:
        doc.new_page(width=300, height=300).insert_text((30, 60), text, fontsize=18)
    doc.save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    make_pdf(root / "a.pdf", ["first: 12.50", "second: 99"])
    Image.new("RGB", (300, 200), (250, 250, 250)).save(root / "b.png")
    (root / "c.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 50)  # corrupt
    return root


def test_ask_several_questions_several_pages_json(tiny_llava, folder):
    run = docread_cli(
        "ask",
        folder / "a.pdf",
        "What is the total?",
        'Say "hi"',
        "--model",
        tiny_llava,
        "--max-new-tokens",
        4,
        "--max-slices",
        4,
        "--json",
    )
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["question"] for r in records] == ["What is the total?", 'Say "hi"']
    for record in records:
        assert {
            "file",
            "question",
            "answer",
            "page",
            "score",
            "pages",
            "model",
            "rows",
            "cols",
            "visual_tokens",
            "timing_ms",
        } <= record.keys()
        assert [p["page"] for p in record["pages"]] == [1, 2]
        best = max(record["pages"], key=lambda p: p["score"])
        assert (record["page"], record["answer"], record["score"]) == (best["page"], best["answer"], best["score"])
        assert set(record["timing_ms"]) == {"render", "encode", "prefill", "decode"}
    # the second question reuses each page's encoding: it reports no render or encode time
    assert records[1]["timing_ms"]["render"] == 0 and records[1]["timing_ms"]["encode"] == 0
    assert "\x1b[" not in run.stdout + run.stderr


def test_ask_plain_multi_page_prints_best_answer_and_page(tiny_llava, folder):
    run = docread_cli(
        "ask",
        folder / "a.pdf",
        "What is the total?",
        "--model",
        tiny_llava,
        "--max-new-tokens",
        3,
        "--max-slices",
        1,
        "--task",
        "chart",
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1
    assert "best of 2" in run.stderr and "score" in run.stderr
    quiet = docread_cli("ask", folder / "b.png", "What?", "--model", tiny_llava, "--max-new-tokens", 3, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.strip()


def test_ask_json_stays_valid_with_quotes_and_newlines(tiny_llava, folder, monkeypatch):
    """A scripted answer with quotes, backslashes and newlines still gives one valid JSON line."""
    from docread.generate.text import TextStream

    nasty = 'He said "total: 12"\\ and\nthen\t{left}'
    monkeypatch.setattr(TextStream, "text", lambda self: nasty)
    result = docread_cli("ask", folder / "b.png", "q?", "--model", tiny_llava, "--max-new-tokens", "2", "--json")
    assert result.returncode == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert json.loads(line)["answer"] == nasty.strip()


def test_ocr_json_lines_per_page(tiny_llava, folder):
    run = docread_cli(
        "ocr", folder / "a.pdf", "--model", tiny_llava, "--max-new-tokens", 5, "--max-slices", 1, "--json"
    )
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["file"], r["page"]) for r in records] == [(str(folder / "a.pdf"), 1), (str(folder / "a.pdf"), 2)]
    assert all(isinstance(r["text"], str) for r in records)


def write_questions(path):
    path.write_text("# questions\nWhat is the total?\n\nWho signed it?\n")
    return path


def test_batch_records_for_a_folder_with_a_corrupt_file(tiny_llava, folder, tmp_path):
    out = tmp_path / "out.jsonl"
    questions = write_questions(tmp_path / "q.txt")
    run = docread_cli(
        "batch",
        folder,
        "--question-file",
        questions,
        "-o",
        out,
        "--model",
        tiny_llava,
        "--max-new-tokens",
        3,
        "--max-slices",
        1,
    )
    assert run.returncode == 1  # the corrupt file failed, the rest went on
    records = [json.loads(line) for line in out.read_text().splitlines()]

    # written as they finish (pairs decode in batches across files): in order of file, page and question here
    def order(r):
        return os.path.basename(r["file"]), r["page"] or 0, r["question"]

    records.sort(key=order)
    got = [(os.path.basename(r["file"]), r["page"], r["question"], r["status"]) for r in records]
    assert got == [
        ("a.pdf", 1, "What is the total?", "ok"),
        ("a.pdf", 1, "Who signed it?", "ok"),
        ("a.pdf", 2, "What is the total?", "ok"),
        ("a.pdf", 2, "Who signed it?", "ok"),
        ("b.png", 1, "What is the total?", "ok"),
        ("b.png", 1, "Who signed it?", "ok"),
        ("c.pdf", None, "What is the total?", "error"),
        ("c.pdf", None, "Who signed it?", "error"),
    ]
    for r in records:
        assert {"file", "sha256", "page", "question", "answer", "score", "status", "error", "timing_ms"} <= r.keys()
    assert records[-1]["error"]["code"] == "corrupt" and records[0]["error"] is None
    assert len(records[0]["sha256"]) == 64
    # resume adds nothing but a retry of the failed file, appended (the log is append-only)
    again = docread_cli(
        "batch",
        folder,
        "-Q",
        questions,
        "-o",
        out,
        "--model",
        tiny_llava,
        "--max-new-tokens",
        3,
        "--max-slices",
        1,
        "--resume",
    )
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert again.returncode == 1 and sorted(resumed[:8], key=order) == records
    assert [(os.path.basename(r["file"]), r["status"]) for r in resumed[8:]] == [("c.pdf", "error")] * 2
    refused = docread_cli("batch", folder, "-Q", questions, "-o", out, "--model", tiny_llava)
    assert refused.returncode == 2 and "--resume" in refused.stderr


def test_oom_on_a_page_retries_with_fewer_tiles(tiny_reader, tmp_path, monkeypatch):
    """Simulated CUDA out-of-memory: in the group's vision pass, then per page at 16 and 9 tiles,
    then once more while answering alone (batch 1: the prefix prefill); the page ends degraded, not failed.
    (A batch that runs out halves first: tests/test_batching_cli.py.)"""
    import torch

    reader = tiny_reader  # its methods are patched for this test only (monkeypatch undoes it)
    real_encode_pages, real_answer = reader.encode_pages, reader.answer
    budgets, answers = [], []

    def encode_pages(sources, questions, *, max_slices=None, **kwargs):
        budgets.append((len(sources), max_slices))
        if max_slices is None or max_slices > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_encode_pages(sources, questions, max_slices=max_slices, **kwargs)

    def answer(encoded, question, **kwargs):
        answers.append(encoded.page_plan.max_slices)
        if len(answers) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_answer(encoded, question, **kwargs)

    monkeypatch.setattr(reader, "encode_pages", encode_pages)
    monkeypatch.setattr(reader, "answer", answer)
    for name in ("big1.png", "big2.png"):
        Image.new("RGB", (1200, 1200), "white").save(tmp_path / name)
    sink = record_log(str(tmp_path / "out.jsonl"), resume=False)
    failed = run_batch(
        LocalEngine(reader, batch_size=1),
        [str(tmp_path / "big1.png"), str(tmp_path / "big2.png")],
        ["What?", "Who?"],
        sink,
        settings=Settings(max_new_tokens=2),
    )
    sink.close()
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert failed == 0 and len(records) == 4
    assert budgets[:4] == [(1, None), (1, 16), (1, 9), (1, 4)]  # one page a file: group, then 16 -> 9 -> 4
    assert budgets[4] == (1, 0) and answers[:2] == [4, 0]  # answering at 4 tiles ran out too: re-encoded below 4
    assert all(r["status"] == "ok" and r["degraded"] is True and r["rows"] * r["cols"] <= 4 for r in records)


def test_models_list_and_path(tiny_llava):
    run = docread_cli("models", "list", "--json")
    assert run.returncode == 0
    rows = [r for r in map(json.loads, run.stdout.splitlines()) if r["kind"] == "preset"]  # not quantized copies
    assert {r["name"] for r in rows} == {"llava-1.5-7b", "llava-1.6-vicuna-7b"}
    assert all(r["cached"] is False for r in rows) and sum(r["default"] for r in rows) == 1
    missing = docread_cli("models", "path", "llava-1.5-7b")
    assert missing.returncode == 1 and "docread models pull llava-1.5-7b" in missing.stderr
    offline = docread_cli("models", "pull", "llava-1.5-7b", "--offline")
    assert offline.returncode == 1 and offline.stderr.count("\n") == 1
    found = docread_cli("models", "path", tiny_llava)
    assert found.returncode == 0 and found.stdout.strip() == str(tiny_llava)


# last in the module: kit.forked's server imports while the tests above run
@pytest.mark.system
def test_batch_resume_after_sigkill_has_every_record_once(tiny_llava, tmp_path, reuse_loaded_models):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        Image.new("RGB", (200, 200), (i * 40, 100, 100)).save(docs / f"p{i}.png")
    questions = write_questions(tmp_path / "q.txt")
    out = tmp_path / "out.jsonl"
    # a process of its own (SIGKILL in the middle of a run is the point), forked from this one (kit: Forked)
    args = [
        "batch",
        str(docs),
        "-Q",
        str(questions),
        "-o",
        str(out),
        "--model",
        str(tiny_llava),
        "--max-new-tokens",
        "24",
        "--max-slices",
        "4",
        "--batch-size",
        "4",  # records land four at a time: the kill comes between batches (or in one's writing)
    ]
    proc = Forked(args, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.time() + 300  # a safety bound: the wait ends when the lines are there (or the run)
    while time.time() < deadline and proc.poll() is None and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(out, "ab") as f:  # as if killed in the middle of writing a line
        f.write(b'{"key": "torn", "file": "x')
    before = out.read_text().count("\n")
    assert 3 <= before < 12
    run = docread_cli(*args, "--resume")  # the resume itself needs no process of its own: in-process
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line parses: no torn line
    pairs = [(os.path.basename(r["file"]), r["question"]) for r in records]
    assert len(pairs) == len(set(pairs)) == 12
    assert sorted(pairs) == sorted((f"p{i}.png", q) for i in range(6) for q in ("What is the total?", "Who signed it?"))
