"""The native view on tiny random llava-hf checkpoints: token for token what transformers'
`generate` answers when fed by transformers' own processors, for LLaVA-1.5 and LLaVA-1.6 (AnyRes),
on images of every shape and a PDF page; token counts equal the processors' `<image>` expansion."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from kit.native import MAX_NEW_TOKENS, QUESTION, Setup, random_image

import docread
from docread.errors import DocreadError
from docread.views.native import native_grid, select_best_resolution

# square, wide, tall, tiny, larger than every pinpoint (1008 max), LLaVA-1.5's letterbox case, odd sizes
SIZES = [(336, 336), (900, 300), (300, 900), (20, 14), (2000, 1500), (600, 400), (337, 1001)]
KINDS = ("llava", "llava_next")


@pytest.fixture(scope="module")
def setups(tiny_llava, tiny_llava_next):
    return {"llava": Setup(tiny_llava, "llava"), "llava_next": Setup(tiny_llava_next, "llava_next")}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_native_answers_token_for_token_as_transformers(setups, kind, size):
    setup = setups[kind]
    image = random_image(*size, seed=size[0])
    expected, inputs = setup.greedy(image)
    stream = setup.reader.stream(image, QUESTION, view="native", max_new_tokens=MAX_NEW_TOKENS)
    text = "".join(stream)
    assert stream.tokens == expected
    assert len(expected) >= 3  # the tiny model really says something
    answer = stream.answer
    assert text.strip() == answer.answer
    assert answer.view == "native"
    assert answer.prompt_tokens == inputs["input_ids"].shape[1]  # the same prompt, image expanded alike
    assert answer.image_tokens == setup.image_tokens(image)
    assert answer.reduced_from is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_native_embeddings_equal_what_transformers_splices(setups, kind, size):
    """The (N, D) sequence docread scatters is the model's own get_image_features of the processor's pixels."""
    setup = setups[kind]
    image = random_image(*size, seed=1)
    inputs = setup.inputs(image)
    with torch.inference_mode():
        (encoded,) = setup.reader.encode_pages(
            [docread.reader.PageSource(lambda w, h: image, *size)],
            QUESTION,
            view="native",
            max_new_tokens=MAX_NEW_TOKENS,
        )
        extra = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
        features = setup.model.get_image_features(pixel_values=inputs["pixel_values"], **extra).pooler_output
    reference = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features[0]
    assert torch.equal(encoded.sequence, reference)
    plan = encoded.page_plan
    assert (plan.plan.width, plan.plan.height) == size  # rendered once at its nominal size
    if kind == "llava":
        assert (plan.plan.rows, plan.plan.cols, plan.plan.tiles) == (0, 0, 0)
    else:  # the AnyRes grid the model packs by
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

        grid = get_anyres_image_grid_shape(
            inputs["image_sizes"][0],
            setup.model.config.image_grid_pinpoints,
            setup.model.config.vision_config.image_size,
        )
        assert (plan.plan.rows, plan.plan.cols) == tuple(grid)
        assert plan.plan.tiles == inputs["pixel_values"].shape[1] - 1  # tiles besides the base view


@pytest.mark.parametrize("kind", KINDS)
def test_native_pdf_page_equals_transformers_on_the_rendered_page(setups, kind, tmp_path):
    import pymupdf

    from docread.intake import open_document

    pdf = tmp_path / "page.pdf"
    doc = pymupdf.open()
    doc.new_page(width=300, height=200).insert_text((20, 40), "Total: 12.50", fontsize=14)
    doc.save(pdf)
    dpi = 150.0
    with open_document(str(pdf), pages="1", dpi=dpi) as document:
        page = document.pages[0]
        image = document.render(page, page.width, page.height)
    setup = setups[kind]
    expected, _ = setup.greedy(image)
    stream = setup.reader.stream(pdf, QUESTION, view="native", dpi=dpi, max_new_tokens=MAX_NEW_TOKENS)
    "".join(stream)
    assert stream.tokens == expected
    answer = stream.answer
    assert (answer.file, answer.page, answer.view) == (str(pdf), 1, "native")
    assert answer.image_tokens == setup.image_tokens(image)


@pytest.mark.parametrize("kind", KINDS)
def test_native_grid_counts_what_the_processor_expands(setups, kind):
    """The torch-free count (for `inspect`) from the config object, config.json's folder and a Preset."""
    from docread.model.presets import resolve_preset

    setup = setups[kind]
    preset = resolve_preset(str(setup.path))
    for width, height in SIZES + [(1, 1), (672, 336), (1008, 336), (5000, 40), (40, 5000)]:
        expected = setup.image_tokens(random_image(width, height))
        rows, cols, tokens = native_grid(width, height, setup.model.config)
        assert tokens == expected, (width, height)
        assert native_grid(width, height, setup.path) == native_grid(width, height, preset) == (rows, cols, tokens)
        plan, _ = setup.reader.plan(width, height, QUESTION, view="native")
        assert (plan.plan.rows, plan.plan.cols, plan.tokens.image_tokens) == (rows, cols, tokens)


def test_select_best_resolution_mirrors_transformers():
    from transformers.image_processing_utils import select_best_resolution as reference

    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 3000, (500, 2)).tolist() + [[336, 336], [14, 20], [1, 1]]:
        assert select_best_resolution(height, width, pinpoints) == reference((height, width), pinpoints)


@pytest.mark.system
def test_native_grid_imports_no_torch(tiny_llava_next):
    code = (
        "import sys; from docread.views.native import native_grid; "
        f"print(native_grid(900, 300, {str(tiny_llava_next)!r})); assert 'torch' not in sys.modules"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(1, 3, 264)"


def test_native_page_too_large_for_the_context_fails_naming_the_numbers(setups, monkeypatch):
    reader = setups["llava_next"].reader
    monkeypatch.setattr(reader, "context", 200)
    with pytest.raises(DocreadError) as error:
        reader.plan(2000, 1500, QUESTION, view="native", max_new_tokens=MAX_NEW_TOKENS)
    assert error.value.code == "context_overflow"
    assert "268 image tokens" in error.value.message and "200" in error.value.message


def test_views_are_checked_and_hires_stays_the_default(setups):
    from docread.errors import UsageError

    reader = setups["llava_next"].reader
    with pytest.raises(UsageError):
        reader.plan(600, 400, QUESTION, view="anyres")
    plan, _ = reader.plan(600, 400, QUESTION)
    assert plan.view == "hires"
    answer = reader.ask(random_image(600, 400), QUESTION, max_new_tokens=2)
    assert answer.view == "hires" and answer.image_tokens == plan.tokens.image_tokens


def test_several_native_pages_in_one_call_equal_one_at_a_time(setups):
    from docread.views.encoded import PageSource

    reader = setups["llava_next"].reader
    images = [random_image(900, 300, seed=5), random_image(300, 300, seed=6)]
    sources = [PageSource(lambda w, h, im=im: im, *im.size, page=i + 1) for i, im in enumerate(images)]
    together = reader.encode_pages(sources, QUESTION, view="native")
    alone = [reader.encode_pages([s], QUESTION, view="native")[0] for s in sources]
    assert [e.sequence.shape[0] for e in together] == [e.page_plan.tokens.image_tokens for e in alone]
    assert all(torch.equal(a.sequence, b.sequence) for a, b in zip(together, alone))
    hires = reader.plan(300, 300, QUESTION)[0]
    with pytest.raises(ValueError, match="one view"):
        reader.encode_pages(sources, QUESTION, plans=[together[0].page_plan, hires])


def test_native_grid_of_a_model_not_here_says_how_to_get_it():
    from docread.model.presets import Preset

    with pytest.raises(DocreadError) as error:
        native_grid(100, 100, Preset(name="absent", base="nobody/absent-llava"))
    assert error.value.code == "weights_missing" and "config.json" in error.value.message
