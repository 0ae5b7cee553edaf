"""What a new user hit (issue #10): each finding in the CLI, the record log and the document call,
driven in-process (kit.cli's `docread`: the console entry point) except where the process boundary is the point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kit.cli import docread
from PIL import Image

from docread.errors import DocreadError, UsageError
from docread.records import JsonLinesLog


def run(*args: str, input: str | bytes | None = None):
    return docread(*args, input=input)


def pdf(path: Path, pages: int = 3) -> Path:
    import pymupdf

    doc = pymupdf.open()
    for n in range(pages):
        doc.new_page(width=300, height=400).insert_text((40, 60), f"page {n + 1} total 1,234.56", fontsize=12)
    doc.save(path)
    return path


def png(path: Path, size=(120, 90)) -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


# -- the record log: resume, lock, write errors (findings 3, 5, 6, 11) -------------------------------
def test_resume_refuses_a_file_that_is_not_docread_output(tmp_path):
    for name, content in [
        ("notes.txt", b"my notes\nsecond line"),
        ("one-line.txt", b"no newline at all"),
        ("paper.pdf", pdf(tmp_path / "p.pdf").read_bytes()),
    ]:
        target = tmp_path / name
        target.write_bytes(content)
        with pytest.raises(UsageError) as raised:
            JsonLinesLog(target, key_field="key", resume=True)
        assert raised.value.code == "output_not_records" and "not docread output" in raised.value.message
        assert target.read_bytes() == content  # nothing cut, nothing appended


def test_resume_cuts_a_torn_line_and_appends_retries_without_rewriting(tmp_path):
    target = tmp_path / "out.jsonl"
    ok, bad = {"key": "a", "status": "ok"}, {"key": "b", "status": "error"}
    target.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n" + '{"key": "c", "sta')
    with JsonLinesLog(target, key_field="key", resume=True, retry=lambda r: r["status"] == "error") as log:
        assert log.done == {"a"} and log.retried == 1 and log.previous == [ok, bad]
        log.write({"key": "b", "status": "ok"})
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines == [ok, bad, {"key": "b", "status": "ok"}]  # append-only: the old error kept, the retry after it


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    target = tmp_path / "out.jsonl"
    with JsonLinesLog(target, key_field="key"):
        with pytest.raises(UsageError) as raised:
            JsonLinesLog(target, key_field="key", resume=True)
        assert raised.value.code == "output_locked"
    JsonLinesLog(target, key_field="key", resume=True).close()  # free again once the first is done


def test_a_write_error_keeps_the_records_before_it(tmp_path, monkeypatch):
    target = tmp_path / "out.jsonl"
    log = JsonLinesLog(target, key_field="key")
    log.write({"key": "a"})
    real_write = os.write

    def full(fd, data):
        if fd == log.fd:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DocreadError) as raised:
        log.write({"key": "b"})
    monkeypatch.undo()
    log.close()
    assert raised.value.code == "unwritable" and "No space left" in raised.value.message
    assert [json.loads(line) for line in target.read_text().splitlines()] == [{"key": "a"}]


# -- question files and repeated questions (findings 7, 8) ---------------------------------------------
def test_question_file_with_a_bom_and_repeats(tmp_path):
    from docread.cli.batch import read_questions

    path = tmp_path / "q.txt"
    path.write_bytes("# my questions\nSame?\n  Same?  \nSame?\nOther   one?\nOther one?\n".encode("utf-8-sig"))
    assert read_questions(path) == ["Same?", "Other one?"]


def test_unique_questions():
    from docread.document import unique_questions

    assert unique_questions(["a b", " a  b ", "c", "a b"]) == ["a b", "c"]
    with pytest.raises(UsageError):
        unique_questions(["  ", ""])


# -- usage errors before any model loads (findings 15, 18, 20) ------------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model must not load for a usage error")

    monkeypatch.setattr("docread.loading.load", fail)


@pytest.mark.parametrize("args", [["--pages", "abc"], ["--pages", "5-3"], ["--seed", str(2**64)]])
def test_usage_errors_exit_2_before_the_model(tmp_path, no_model, args):
    result = run("ask", str(pdf(tmp_path / "d.pdf")), "q", *args)
    assert result.returncode == 2, result.output


def test_preview_file_for_several_pages_is_one_usage_error(tmp_path):
    result = run("inspect", str(pdf(tmp_path / "d.pdf")), "--preview", str(tmp_path / "one.png"))
    assert result.returncode == 2
    assert result.stderr.count("one.png") == 1 and result.stderr.count("error:") == 1
    assert not (tmp_path / "one.png").exists()


def test_previews_of_files_with_the_same_name_do_not_overwrite(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        png(tmp_path / folder / "scan.png", size=(100 + len(folder) * 50, 80))
    result = run("inspect", str(tmp_path / "a"), str(tmp_path / "b"), "--preview", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.output
    previews = [json.loads(line)["preview"] for line in result.stdout.splitlines()]
    assert len(set(previews)) == 2 and all(Path(p).is_file() for p in previews)


def test_missing_model_folder_says_so(tmp_path):
    result = run("ask", str(png(tmp_path / "p.png")), "q", "--model", "./nonexistent")
    assert result.returncode == 2 and "no such folder" in result.stderr and "unknown model" not in result.stderr


def test_flags_take_no_value_in_help_and_offline_is_everywhere():
    import typer

    from docread.cli import app

    missing = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
            return
        result = run(*path, "--help")
        assert result.returncode == 0 and "<bool>" not in result.stdout, path
        if not any("--offline" in p.opts for p in cmd.params):
            missing.append(" ".join(path))

    walk(typer.main.get_command(app), [])
    assert not missing, f"--offline missing on: {missing}"


# -- rendering user text (findings 9, 13, 20) ----------------------------------------------------------
def test_brackets_in_file_names_are_shown_not_parsed(tmp_path):
    odd = png(tmp_path / "[red]x[red].png")
    (tmp_path / "a[").mkdir()
    closing = png(tmp_path / "a[" / "b].png")
    result = run("inspect", str(odd), str(closing))
    assert result.returncode == 0, result.output
    assert (
        "[red]x[red].png" in result.stdout.replace("\n", "").replace("│", "").replace(" ", "")
        or "[red]x[red]" in result.stdout
    )
    assert "b].png" in result.stdout


def test_long_errors_are_one_line_and_control_characters_escaped(tmp_path):
    long_name = tmp_path / ("very-long-name-" * 8 + "\x1b[31m.png")
    long_name.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = run("inspect", str(long_name))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) > 120 and lines[0].startswith("error: ")
    assert "\x1b" not in result.stderr and "\\x1b[31m" in result.stderr


def test_safe_text_escapes_controls_but_keeps_text():
    from docread.cli.output import safe_text

    assert safe_text("a\tb\nc\x1b[2J\x07\x9bd é") == "a\tb\nc\\x1b[2J\\x07\\x9bd é"


def test_unexpected_errors_are_one_line_without_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr("docread.inspection.inspect_paths", lambda *a, **k: 1 / 0)
    result = run("inspect", str(png(tmp_path / "p.png")))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "ZeroDivisionError" in result.stderr and "--debug" in result.stderr


# -- signals and pipes: the process boundary is the point (finding 14) ----------------------------------
def _docread(*args, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "docread", *args], env=env, **kwargs)


@pytest.mark.system
def test_json_output_into_head_exits_0(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(400):
        (folder / f"{n:03}.png").write_bytes(png(tmp_path / "seed.png").read_bytes())
    process = _docread("inspect", str(folder), "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    _, stderr = process.communicate(timeout=120)
    assert json.loads(first)["page"] == 1
    assert process.returncode == 0 and b"Traceback" not in stderr, stderr


def test_ctrl_c_while_loading_says_interrupted(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("docread.loading.load", interrupted)
    result = run("ask", str(png(tmp_path / "p.png")), "q")
    assert result.returncode == 130 and "interrupted" in result.stderr


# -- with the tiny model: nothing finished is lost (findings 1, 5, 8, 12, 16) ----------------------------
def _fail_page(monkeypatch, number: int):
    from docread.intake import Document

    real = Document.render

    def render(self, page, width, height):
        if page.number == number:
            raise DocreadError("corrupt", f"{self.name} page {number} cannot be rendered (test)")
        return real(self, page, width, height)

    monkeypatch.setattr(Document, "render", render)


@pytest.mark.usefixtures("reuse_loaded_models")  # the tiny model loaded once a session
def test_ask_keeps_the_answers_of_pages_read_before_one_that_fails(tiny_llava, tmp_path, monkeypatch):
    _fail_page(monkeypatch, 2)
    result = run(
        "ask",
        str(pdf(tmp_path / "d.pdf", pages=2)),
        "Total?",
        "Total?  ",
        "Date?",
        "--json",
        "--model",
        str(tiny_llava),
        "--max-new-tokens",
        "2",
        "--max-slices",
        "2",
    )
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["question"] for r in records] == ["Total?", "Date?"]  # the repeat asked once
    for record in records:
        assert record["status"] == "ok" and record["page"] == 1 and record["answer"] is not None
        assert record["errors"] == [{"page": 2, "code": "corrupt", "message": record["errors"][0]["message"]}]
    assert result.stderr.count("page 2 cannot be rendered") == 1  # said once, not once per question


@pytest.mark.slow
@pytest.mark.usefixtures("reuse_loaded_models")  # the tiny model loaded once a session
def test_ask_and_the_python_call_give_the_same_records(tiny_llava, tmp_path):
    import docread
    from docread.document import ask_document
    from docread.settings import Settings

    document = pdf(tmp_path / "d.pdf", pages=3)
    options = ["--model", str(tiny_llava), "--max-new-tokens", "3", "--max-slices", "2"]
    result = run("ask", str(document), "Total?", "Who?", "--json", *options)
    assert result.returncode == 0, result.output
    cli = [json.loads(line) for line in result.stdout.splitlines()]
    reader = docread.load(str(tiny_llava))  # the same arguments as `ask`'s load: the reader it read with
    api = [
        a.to_json()
        for a in ask_document(
            reader, str(document), ["Total?", "Who?"], settings=Settings(max_new_tokens=3, max_slices=2)
        )
    ]
    drop = lambda r: {k: v for k, v in r.items() if k != "timing_ms"}  # noqa: E731
    assert [drop(r) for r in cli] == [drop(r) for r in api]
    assert len(cli[0]["pages"]) == 3


@pytest.mark.usefixtures("reuse_loaded_models")  # the tiny model loaded once a session
def test_batch_quiet_still_shows_errors_and_resume_retries_them(tiny_llava, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    png(folder / "big.png", size=(400, 300))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage")
    questions = tmp_path / "q.txt"
    questions.write_text("What?\n")
    out = tmp_path / "out.jsonl"
    common = [
        str(folder),
        "-Q",
        str(questions),
        "-o",
        str(out),
        "--model",
        str(tiny_llava),
        "--max-new-tokens",
        "2",
        "--max-slices",
        "2",
    ]
    first = run("batch", *common, "--quiet", "--max-pixels", "1000")
    assert first.returncode == 1
    errors = first.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors), first.stderr
    assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == ["error", "error"]
    second = run("batch", *common, "--resume")  # the advice followed: the default pixel cap
    assert second.returncode == 1  # the broken PDF still fails
    assert "retrying 2 failed" in second.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # append-only: the first run's errors kept; the retry's records after them (as they finish: a file that
    # cannot be opened is written at once, a page's answer when its batch is decoded)
    got = [(Path(r["file"]).name, r["page"], r["status"]) for r in records]
    assert got[:2] == [("big.png", None, "error"), ("broken.pdf", None, "error")]
    assert sorted(got[2:], key=str) == [("big.png", 1, "ok"), ("broken.pdf", None, "error")]


@pytest.mark.usefixtures("reuse_loaded_models")  # the tiny model loaded once a session
def test_batch_to_a_full_disk_is_one_error_line(tiny_llava, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    questions = tmp_path / "q.txt"
    questions.write_text("What?\n")
    result = run(
        "batch",
        str(png(tmp_path / "p.png")),
        "-Q",
        str(questions),
        "-o",
        "/dev/full",
        "--model",
        str(tiny_llava),
        "--max-new-tokens",
        "2",
        "--max-slices",
        "2",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "No space left on device" in result.stderr


@pytest.mark.usefixtures("reuse_loaded_models")  # the tiny model loaded once a session
def test_a_second_ctrl_c_in_batch_keeps_records_and_says_how_to_resume(tiny_llava, tmp_path, monkeypatch):
    import docread.cli.batch

    questions = tmp_path / "q.txt"
    questions.write_text("One?\nTwo?\n")
    out = tmp_path / "out.jsonl"
    real = docread.cli.batch._Reporter.__call__

    def report_then_interrupt(self, record):  # the second Ctrl-C, right after the first record is written
        real(self, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(docread.cli.batch._Reporter, "__call__", report_then_interrupt)
    result = run(
        "batch",
        str(png(tmp_path / "p.png")),
        "-Q",
        str(questions),
        "-o",
        str(out),
        "--model",
        str(tiny_llava),
        "--max-new-tokens",
        "2",
        "--max-slices",
        "2",
    )
    assert result.returncode == 130 and "--resume" in result.stderr
    assert len(out.read_text().splitlines()) == 1 and json.loads(out.read_text())["status"] == "ok"


# -- what else a new user met (findings 4, 16, 19, 21) ---------------------------------------------------
def test_a_repaired_pdf_is_flagged(tmp_path):
    whole = pdf(tmp_path / "whole.pdf", pages=4).read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(whole[: int(len(whole) * 0.8)])  # the xref table and trailer gone: MuPDF repairs it
    result = run("inspect", str(cut), "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records and all(r.get("repaired") or r["error"]["code"] in ("damaged_page", "corrupt") for r in records)
    assert "repaired" in result.stderr


def test_batch_hashes_stdin_like_a_file(tiny_llava, tmp_path):
    import hashlib

    data = png(tmp_path / "p.png").read_bytes()
    questions = tmp_path / "q.txt"
    questions.write_text("What?\n")
    out = tmp_path / "out.jsonl"
    options = ["--model", tiny_llava, "--max-new-tokens", "2", "--max-slices", "2"]
    result = run("batch", "-", "-Q", questions, "-o", out, *options, input=data)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_prompt_longer_than_the_context_says_so_truly():
    from docread.views.processor import Budget, plan_page

    with pytest.raises(DocreadError) as raised:
        plan_page(
            800,
            600,
            size=336,
            patch=14,
            k=2,
            max_slices=16,
            budget=Budget(context=4096, prompt_tokens=20000, max_new_tokens=256),
        )
    assert "already exceed" in raised.value.message and "-" not in raised.value.message.split("tokens")[0][-8:]


def test_the_readme_first_command_reads_a_file_the_repository_ships():
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    install = readme[readme.index("## Install and run") :]
    match = re.search(r'docread ask (\S+) "', install)
    assert match, "the install-and-run command names a document"
    document = Path(__file__).parents[1] / match.group(1)
    assert document.is_file()
    result = run("inspect", str(document), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["page"] == 1
