"""A new user's findings (issue #23): --highlight's path checked first, folder and format; context
overflow advice naming its cause; a closed stdout ending batch cleanly; third-party noise kept off
stderr; --help and usage errors; locate's empty texts; train --resume with a raised --max-steps."""

from __future__ import annotations

import pymupdf
import pytest
from kit.cli import docread

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

QUESTION = "What is the total?"
FAST = ("--device", "cpu", "--max-slices", "0", "--max-new-tokens", "2")


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("findings") / "two.pdf"
    doc = pymupdf.open()
    for text in ("Total: 12.50 EUR", "Signed by Ada"):
        doc.new_page(width=200, height=200).insert_text((20, 60), text, fontsize=14)
    doc.save(path)
    return path


# -- --highlight -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "named"),
    [("missing/dir/x.png", "does not exist"), ("out.gif", ".png, .jpg"), ("out", ".png, .jpg")],
)
def test_highlight_path_is_checked_before_the_model_loads(pdf, tmp_path, where, named):
    target = tmp_path / where
    run = docread("ask", pdf, QUESTION, "--model", tmp_path / "no-such-model", "--highlight", target)
    assert run.returncode == 2, run.output
    (line,) = run.stderr.strip().splitlines()
    assert str(target) in line and named in line and "model" not in line  # the model was never looked for


def test_highlight_suffix_picks_the_format_and_a_folder_gets_each_page(pdf, tiny_llava, tmp_path):
    jpg = tmp_path / "out.jpg"
    run = docread("ask", pdf, QUESTION, "--model", tiny_llava, *FAST, "--pages", "1-2", "--highlight", jpg)
    assert run.returncode == 0, run.output
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name
    folder = tmp_path / "pages"
    run = docread("ask", pdf, QUESTION, "--model", tiny_llava, *FAST, "--pages", "1-2", "--highlight", f"{folder}/")
    assert run.returncode == 0, run.output
    assert sorted(p.name for p in folder.iterdir()) == ["page-1.png", "page-2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in folder.iterdir())
    again = docread("ask", pdf, QUESTION, "--model", tiny_llava, *FAST, "--pages", "2", "--highlight", folder)
    assert again.returncode == 0 and "page-2.png" in again.stderr  # an existing folder, named without /


# -- a closed stdout -----------------------------------------------------------------------------------
def test_batch_to_a_closed_stdout_ends_cleanly(pdf, tiny_llava, tmp_path):
    """`batch -o - | head -1`: the reader leaves, batch's next write meets EPIPE on fd 1 (as in the real
    process: the log writes to fd 1 itself) and the command ends with 0, saying nothing."""
    import os

    questions = tmp_path / "q.txt"
    questions.write_text(f"{QUESTION}\nWho signed?\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # `head` has read its line and left
    saved = os.dup(1)
    os.dup2(write_end, 1)
    try:
        run = docread("batch", pdf, "-Q", questions, "-o", "-", "--model", tiny_llava, *FAST)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
    assert run.returncode == 0, run.output
    assert "Broken pipe" not in run.stderr and "--resume" not in run.stderr and "error" not in run.stderr


# -- --help and usage errors ---------------------------------------------------------------------------
def test_help_paragraphs_flow_whole_and_usage_names_arguments_in_capitals():
    import inspect

    from docread.cli.batch import batch

    run = docread("batch", "--help", env={"COLUMNS": "1000"})
    assert run.returncode == 0, run.output
    lines = [line.strip(" │") for line in run.stdout.splitlines()]
    for paragraph in inspect.getdoc(batch).split("\n\n"):
        assert " ".join(paragraph.split()) in lines  # one line at any width that holds it: no break mid-sentence
    assert "batch [OPTIONS] PATHS..." in run.stdout and "{" not in run.stdout.split("\n\n")[0]
    from docread.cli.read import ask

    listed = docread("--help", env={"COLUMNS": "1000"})  # the command list: each first paragraph whole too
    rows = [" ".join(line.strip(" │").split()) for line in listed.stdout.splitlines()]
    first = " ".join(inspect.getdoc(ask).split("\n\n")[0].split())  # written over several lines
    assert "\n" in inspect.getdoc(ask).split("\n\n")[0] and f"ask {first}" in rows, listed.stdout


def test_no_color_gives_usage_errors_in_plain_text():
    as_on_a_terminal = {"FORCE_COLOR": "1"}  # Rich styles for a terminal; NO_COLOR must still win
    coloured = docread("ask", env={**as_on_a_terminal, "NO_COLOR": ""})
    plain = docread("ask", env={**as_on_a_terminal, "NO_COLOR": "1"})
    assert coloured.returncode == plain.returncode == 2
    assert "\x1b[" in coloured.stderr  # the check can fail: styles are written without NO_COLOR
    assert "\x1b[" not in plain.stderr and "ask [OPTIONS] FILE QUESTION..." in plain.stderr


# -- locate ---------------------------------------------------------------------------------------------
def test_locate_refuses_an_empty_text_among_others_and_takes_dpi(pdf):
    run = docread("locate", pdf, "Total", "", "Ada")
    assert run.returncode == 2 and run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert "empty text" in line
    import json

    at_72, at_144 = (docread("locate", pdf, "Total", "--json", "--dpi", dpi) for dpi in (72, 144))
    assert at_72.returncode == at_144.returncode == 0, at_72.output
    box, doubled = json.loads(at_72.stdout)["bbox_px"], json.loads(at_144.stdout)["bbox_px"]
    assert doubled == pytest.approx([2 * v for v in box], abs=1)  # bbox_px are pixels at --dpi


# -- third-party noise and the hub ------------------------------------------------------------------------
def test_the_bitsandbytes_kernel_notice_is_kept_off_stderr(caplog):
    import logging

    from docread.model.noise import quiet_third_parties

    quiet_third_parties()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")  # what bitsandbytes logs it through
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. pip install kernels", "x")
        logger.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]  # only the known line goes


def test_train_with_weights_already_here_never_asks_the_hub(tiny_llava, tmp_path, monkeypatch):
    """No --offline, HF_HUB_OFFLINE unset: a local model trains offline all the same (what each library
    then reads), and nothing opens a connection."""
    import os
    import socket

    from docread.train import loop

    seen = {}

    def train(config):
        seen["offline"] = os.environ.get("HF_HUB_OFFLINE")
        return iter(())

    def no_network(*args, **kwargs):
        raise AssertionError(f"a network call: {args}")

    monkeypatch.setattr(loop, "train", train)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    args = ("train", "--model", tiny_llava, "--data", tmp_path / "d.json", "-o", tmp_path / "out", "--stage", "2")
    run = docread(*args, env={"HF_HUB_OFFLINE": None})
    assert run.returncode == 0, run.output
    assert seen["offline"] == "1"
    hub = docread(*(a if a != tiny_llava else "llava-hf/not-here-hf" for a in args), env={"HF_HUB_OFFLINE": None})
    assert hub.returncode == 0 and seen["offline"] is None  # weights still to fetch: the hub stays allowed


# -- context overflow: the cause named, on each surface -------------------------------------------------
@pytest.fixture(scope="module")
def wordy(tmp_path_factory):
    """One page whose text layer holds some 5,000 tokens: more than the tiny model's 4,096 context."""
    path = tmp_path_factory.mktemp("wordy") / "wordy.pdf"
    doc = pymupdf.open()
    body = "Invoice 4471 total amount due 1,234.56 EUR on the first of May. " * 330
    doc.new_page(width=700, height=900).insert_textbox(pymupdf.Rect(5, 5, 695, 895), body, fontsize=2.5)
    doc.save(path)
    return path


def test_context_overflow_from_the_page_text_names_text_tokens(wordy, tiny_llava):
    import re

    common = ("ask", wordy, QUESTION, "--model", tiny_llava, *FAST, "--text-prompt", "on")
    run = docread(*common, "--text-tokens", 5000)
    assert run.returncode == 1, run.output
    (line,) = run.stderr.strip().splitlines()
    assert "--text-tokens" in line and "context" in line, line
    keep = int(re.search(r"--text-tokens to (\d+)", line).group(1))
    assert 3000 < keep < 5000
    fits = docread(*common, "--text-tokens", keep, "--json")  # the advice is exact: that many fit
    assert fits.returncode == 0, fits.output


def test_server_errors_name_the_request_field(wordy, tiny_reader):
    import base64

    from kit.serving import http, serving

    from docread.errors import ContextOverflow
    from docread.serve.protocol import CHAT_FIELDS, from_docread

    error = ContextOverflow("lower --max-new-tokens or --max-slices", needed=5000, context=4096)
    api = from_docread(error, fields=CHAT_FIELDS)
    assert api.param == "max_tokens" and api.message == "lower max_tokens or docread.max_slices"
    pdf = base64.b64encode(wordy.read_bytes()).decode()
    with serving(tiny_reader) as url:
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": QUESTION},
                        {"type": "image_url", "image_url": {"url": f"data:application/pdf;base64,{pdf}"}},
                    ],
                }
            ],
            "max_tokens": 2,
            "docread": {"max_slices": 0, "text_prompt": "on", "text_tokens": 5000},
        }
        response = http().post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_overflow" and error["param"] == "docread.text_tokens"
    assert "--" not in error["message"] and "docread.text_tokens to" in error["message"]


# -- Ray: as many readers as CPUs, and quiet -------------------------------------------------------------
@pytest.mark.needs("ray")
def test_ray_asks_for_no_more_readers_than_cpus_and_keeps_its_noise_plain(pdf, tmp_path, monkeypatch):
    import os
    import warnings

    import docread.batch.raydata as raydata

    monkeypatch.setattr(raydata, "local_cpus", lambda: 2)
    monkeypatch.setattr(raydata, "_connect", lambda *a: pytest.fail("Ray started"))
    questions = tmp_path / "q.txt"
    questions.write_text(QUESTION + "\n")
    args = ("batch", pdf, "-Q", questions, "-o", tmp_path / "out.jsonl", "--engine", "ray", "--workers", "5")
    run = docread(*args)
    assert run.returncode == 2 and not (tmp_path / "out.jsonl").exists()  # refused before the log opens: no file
    (line,) = run.stderr.strip().splitlines()
    assert "--workers 5" in line and "has 2" in line and "--workers 2 or fewer" in line

    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raydata.require_ray()  # stderr here is not a terminal
        warnings.warn_explicit("Ray Data notice", UserWarning, "ray/data/x.py", 1, module="ray.data.x")
        warnings.warn_explicit("the user's own", UserWarning, "mine.py", 1, module="mine")
    assert os.environ["RAY_COLOR_PREFIX"] == "0"  # Ray's `(raylet)` prefixes without colour codes
    assert [str(w.message) for w in caught] == ["the user's own"]
