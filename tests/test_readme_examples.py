"""The README's JSON examples are real output: each example's command is run with the tiny checkpoint, and
the example's keys (in order) and its deterministic values (file, page, question, status) must equal the
run's. The answer text, scores and timings are the tiny random model's and are not compared."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pymupdf
import pytest
from kit.cli import docread

README = Path(__file__).resolve().parent.parent / "README.md"
COMPARED = ("file", "page", "question", "status")

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # the tiny model loaded once a session


def examples() -> dict[str, list[tuple[str, dict]]]:
    """Each `<!-- example: NAME ... -->` block's (command, record) pairs: a `$ ` line, then its JSON,
    wrapped over lines."""
    found = {}
    for name, block in re.findall(r"<!-- example: (\w+).*?-->\n```console\n(.*?)```", README.read_text(), re.S):
        pairs = []
        for chunk in block.split("$ ")[1:]:
            command, _, rest = chunk.partition("\n")
            pairs.append((command, json.loads(" ".join(line.strip() for line in rest.splitlines()))))
        found[name] = pairs
    return found


def _pdf(path: Path, lines_per_page: list[list[str]]) -> None:
    doc = pymupdf.open()
    for lines in lines_per_page:
        page = doc.new_page(width=300, height=400)
        for n, line in enumerate(lines):
            page.insert_text((40, 60 + 30 * n), line, fontsize=12)
    doc.save(path)


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_llava):
    """The files the README's examples read, in the working directory; `./tiny` is the tiny checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").symlink_to(tiny_llava)
    invoice = [["Invoice 17 total: 1,234.56", "Signed: Ada Lovelace"]]
    _pdf(tmp_path / "invoice.pdf", invoice)
    _pdf(tmp_path / "report.pdf", [[f"Report page {n}"] for n in (1, 2, 3)])
    (tmp_path / "scans").mkdir()
    _pdf(tmp_path / "scans" / "invoice.pdf", invoice)
    (tmp_path / "scans" / "broken.pdf").write_text("<html>not a pdf</html>")
    (tmp_path / "q.txt").write_text("# questions for every page\nWhat is the total amount?\nWho signed it?\n")
    return tmp_path


def _same(shown: dict, real: dict) -> None:
    assert list(shown) == list(real), "the README example's keys differ from the real output's"
    assert {k: shown[k] for k in COMPARED if k in real} == {k: real[k] for k in COMPARED if k in real}


@pytest.mark.parametrize("name", ["ask", "ocr"])
def test_a_command_example_is_its_real_output(workdir, name):
    ((command, shown),) = examples()[name]
    argv = shlex.split(command)
    assert argv[0] == "docread"
    run = docread(*argv[1:])
    assert run.returncode == 0, run.stderr
    _same(shown, json.loads(run.stdout.splitlines()[0]))


def test_the_batch_records_example_is_real_output(workdir):
    run = docread("batch", "scans/", "--question-file", "q.txt", "-o", "answers.jsonl", "--model", "./tiny")
    assert run.returncode == 1, run.stderr  # broken.pdf: error records, the run goes on
    lines = (workdir / "answers.jsonl").read_text().splitlines()
    shown = examples()["batch"]
    assert [command.split()[0] for command, _ in shown] == ["grep", "grep"]
    for command, record in shown:
        _, _, word, file = command.split()
        _same(record, json.loads(next(line for line in lines if word in line)))
