"""`docread ask` on the tiny checkpoint: the same tokens as transformers,
PDFs end to end, clean one-line errors."""

import json

import numpy as np
import pytest
from kit.cli import docread
from PIL import Image

QUESTION = "What is written here?"


# In-process (kit.cli: the same entry point as `python -m docread`), each tiny model loaded once.
pytestmark = pytest.mark.usefixtures("reuse_loaded_models")


@pytest.fixture(scope="module")
def square_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("ask") / "square.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8)).save(path)
    return path


def test_ask_json_gives_transformers_greedy_answer(tiny_llava, square_png):
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_llava)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava, dtype=torch.float32).eval()
    inputs = processor(
        images=Image.open(square_png).convert("RGB"), text=f"USER: <image>\n{QUESTION} ASSISTANT:", return_tensors="pt"
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    run = docread(
        "ask",
        square_png,
        QUESTION,
        "--model",
        tiny_llava,
        "--max-slices",
        0,
        "--max-new-tokens",
        12,
        "--device",
        "cpu",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1  # one JSON object, nothing streamed around it
    record = json.loads(lines[0])
    assert record["answer"] == expected and expected
    assert {"answer", "file", "page", "model", "rows", "cols", "visual_tokens"} <= record.keys()
    assert (record["file"], record["page"], record["rows"], record["cols"], record["visual_tokens"]) == (
        str(square_png),
        1,
        0,
        0,
        64,
    )


def test_ask_streams_a_pdf_page_and_reports_on_stderr(tiny_llava, tmp_path):
    import pymupdf

    pdf = tmp_path / "two.pdf"
    doc = pymupdf.open()
    for text in ("first page", "second page: total 12.50"):
        doc.new_page(width=612, height=792).insert_text((72, 72), text, fontsize=14)
    doc.save(pdf)
    run = docread(
        "ask", pdf, "What is the total?", "--model", tiny_llava, "--pages", 2, "--max-new-tokens", 5, "--max-slices", 4
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.endswith("\n") and run.stdout.strip()  # the streamed answer, then a newline
    assert "page 2" in run.stderr and "2x2 tiles" in run.stderr
    assert "\x1b[" not in run.stdout + run.stderr  # no colour codes when not on a terminal


def test_ask_errors_are_one_line_with_exit_codes(tiny_llava, tmp_path, square_png):
    broken = tmp_path / "broken.pdf"
    broken.write_text("<html><body>not a pdf</body></html>")
    run = docread("ask", broken, QUESTION, "--model", tiny_llava)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1
    assert "Traceback" not in run.stderr

    run = docread("ask", square_png, QUESTION, "--model", tiny_llava, "--max-new-tokens", 4090)
    assert run.returncode == 1 and "--max-new-tokens" in run.stderr and "Traceback" not in run.stderr

    run = docread("ask", square_png, QUESTION, "--quant", "3bit")
    assert run.returncode == 2 and "--quant" in run.stderr
