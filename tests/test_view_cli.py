"""`--view native` through the commands: `docread ask --json` answers as transformers' own LLaVA-NeXT
(and LLaVA-1.5) generate does, fed by transformers' processors, for images of every shape and a PDF
page; inspect counts the tokens the processor expands `<image>` into; records say which view."""

import json

import pytest
from kit.cli import docread
from kit.native import QUESTION, Setup, random_image
from PIL import Image

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

NEW_TOKENS = 6
SIZES = [(336, 336), (900, 300), (300, 900), (20, 14), (2000, 1500)]  # square, wide, tall, tiny, beyond pinpoints


@pytest.fixture(scope="module")
def next_setup(tiny_llava_next):
    return Setup(tiny_llava_next, "llava_next")


def ask_native(path, setup) -> dict:
    result = docread(
        "ask",
        str(path),
        QUESTION,
        "--view",
        "native",
        "--json",
        "--model",
        str(setup.path),
        "--max-new-tokens",
        str(NEW_TOKENS),
        "--device",
        "cpu",
        "--quant",
        "none",
        "--text",
        "off",  # transformers' prompt has no page text; OCR of a noise image finds none, slowly
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    return record


def expected(setup, image) -> tuple[str, int, int]:
    tokens, inputs = setup.greedy(image)
    text = setup.processor.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    image_tokens = int((inputs["input_ids"] == setup.model.config.image_token_id).sum())
    return text, len(tokens), image_tokens


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ask_native_json_answers_as_transformers_llava_next(next_setup, tmp_path, size):
    path = tmp_path / "page.png"
    random_image(*size, seed=size[0]).save(path)
    text, count, image_tokens = expected(next_setup, Image.open(path).convert("RGB"))
    record = ask_native(path, next_setup)
    assert (record["answer"], record["generated_tokens"]) == (text, count) and count > 0
    assert record["view"] == "native" and record["image_tokens"] == image_tokens


def test_ask_native_json_on_a_pdf_page(next_setup, tmp_path):
    import pymupdf

    from docread.intake import open_document

    path = tmp_path / "letter.pdf"
    document = pymupdf.open()
    document.new_page(width=612, height=792).insert_text((72, 72), "Total due: 1,234.56", fontsize=14)
    document.save(path)
    with open_document(str(path)) as opened:  # the page as docread renders it: at its nominal size
        page = opened.pages[0]
        image = opened.render(page, page.width, page.height)
    text, count, _ = expected(next_setup, image)
    record = ask_native(path, next_setup)
    assert (record["answer"], record["generated_tokens"]) == (text, count)


def test_ask_native_on_llava_1_5_letterboxes_as_llava_hf(tiny_llava, tmp_path):
    setup = Setup(tiny_llava, "llava")
    path = tmp_path / "wide.png"
    random_image(600, 400, seed=3).save(path)  # where --max-slices 0 pads differently from llava-hf
    text, count, image_tokens = expected(setup, Image.open(path).convert("RGB"))
    record = ask_native(path, setup)
    assert (record["answer"], record["generated_tokens"], record["image_tokens"]) == (text, count, image_tokens)
    assert (record["rows"], record["cols"]) == (0, 0)


def test_inspect_native_counts_what_the_processor_expands(next_setup, tmp_path):
    paths = []
    for width, height in SIZES:
        paths.append(tmp_path / f"{width}x{height}.png")
        random_image(width, height).save(paths[-1])
    result = docread("inspect", *map(str, paths), "--view", "native", "--json", "--model", str(next_setup.path))
    assert result.returncode == 0, result.stderr
    for path, record in zip(paths, (json.loads(line) for line in result.stdout.splitlines())):
        assert record["view"] == "native"
        assert record["image_tokens"] == next_setup.image_tokens(Image.open(path).convert("RGB")), path.name


def test_native_preview_and_unknown_views_are_usage_errors(tmp_path):
    path = tmp_path / "p.png"
    random_image(50, 40).save(path)
    assert docread("inspect", str(path), "--view", "native", "--preview", str(tmp_path / "x.png")).returncode == 2
    assert docread("inspect", str(path), "--view", "sideways").returncode == 2


def test_batch_records_say_which_view(next_setup, tmp_path):
    path = tmp_path / "p.png"
    random_image(300, 200).save(path)
    questions = tmp_path / "q.txt"
    questions.write_text(QUESTION + "\n")
    out = tmp_path / "out.jsonl"
    result = docread(
        "batch",
        str(path),
        "-Q",
        str(questions),
        "-o",
        str(out),
        "--view",
        "native",
        "--model",
        str(next_setup.path),
        "--max-new-tokens",
        "2",
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["view"] == "native" and record["status"] == "ok"
