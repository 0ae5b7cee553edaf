"""What `docread bench speed` runs on: synthetic letter-size PDF pages, and one llava-hf LLaVA-1.6 model
shared by docread and the transformers baseline (a `--model`, or `--synthetic tiny|real`: the random
models of `docread.testing`; nothing downloaded, nothing written but the tiny checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docread.errors import UsageError
from docread.intake.limits import DEFAULT_DPI
from docread.intake.pdf import import_pymupdf

if TYPE_CHECKING:
    from docread.reader import DocReader

LETTER_PT = (612, 792)  # US letter in PDF points (8.5 x 11 in at 72 pt/in)
MARGIN_PT = 54  # 0.75 in
FONT_SIZES = (16, 10, 10, 8)  # a heading, then body text in three sizes
SYNTHETIC = ("tiny", "real")
WORDS = (
    "invoice total amount due date net payable account order item quantity price tax shipping "
    "customer reference balance credit terms delivery"
).split()


# -- pages ------------------------------------------------------------------------------------------
def write_pages(path: Path, count: int, seed: int = 0, *, dpi: float = DEFAULT_DPI) -> Path:
    """A PDF of `count` letter pages of text (a heading and ~50 lines), so intake renders real glyphs.
    Without PyMuPDF (its wheel is too big to carry to the GPU check), the same lines drawn by Pillow into a
    multi-page TIFF at `dpi`, returned instead: intake's render stage then decodes an image."""
    try:
        pymupdf = import_pymupdf()
    except ImportError:
        return _write_image_pages(path.with_suffix(".tiff"), count, seed, dpi)
    document = pymupdf.open()
    for lines in _page_lines(count, seed):
        page = document.new_page(width=LETTER_PT[0], height=LETTER_PT[1])
        for y, size, text in lines:
            page.insert_text((MARGIN_PT, y), text, fontsize=size)
    document.save(str(path))
    document.close()
    return path


def _page_lines(count: int, seed: int) -> list[list[tuple[float, int, str]]]:
    """Each page's lines: (baseline y in points, font size, text)."""
    import random

    rng = random.Random(seed)
    pages = []
    for number in range(1, count + 1):
        y, size = MARGIN_PT + FONT_SIZES[0], FONT_SIZES[0]
        lines = [(y, size, f"Statement {number:04d} - page {number} of {count}")]
        while y < LETTER_PT[1] - MARGIN_PT - 2 * size:
            size = rng.choice(FONT_SIZES[1:])
            y += 1.6 * size
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
            lines.append((y, size, f"{words} {rng.randint(1, 99999) / 100:,.2f}"))
        pages.append(lines)
    return pages


def _write_image_pages(path: Path, count: int, seed: int, dpi: float) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    scale = dpi / 72  # pixels per point
    images = []
    for lines in _page_lines(count, seed):
        image = Image.new("RGB", (round(LETTER_PT[0] * scale), round(LETTER_PT[1] * scale)), "white")
        draw = ImageDraw.Draw(image)
        for y, size, text in lines:
            font = ImageFont.load_default(size=size * scale)
            draw.text((MARGIN_PT * scale, y * scale), text, fill="black", font=font, anchor="ls")
        images.append(image)
    images[0].save(path, save_all=True, append_images=images[1:], compression="tiff_deflate")
    return path


def questions(count: int) -> list[str]:
    stems = (
        "What is the total amount?",
        "What is the statement number?",
        "What is the tax on line 3?",
        "Which item has the largest price?",
        "What is the balance due?",
    )
    return [stems[i % len(stems)] + ("" if i < len(stems) else f" ({i // len(stems) + 1})") for i in range(count)]


# -- models -----------------------------------------------------------------------------------------
@dataclass
class BenchModel:
    """One LLaVA-1.6 model: docread's reader around it, and its name in the report."""

    reader: DocReader
    name: str

    @property
    def llava(self):
        """The transformers LlavaNextForConditionalGeneration the baseline runs (the reader's own)."""
        return self.reader.base.model


def load_model(
    model: str | None, synthetic: str | None, *, device: str, quant: str, workdir: Path, llava: bool = False
) -> BenchModel:
    """The model a run measures; the tiny checkpoint is written under `workdir`. `llava`: LLaVA-1.5
    checkpoints too (the throughput peer has a processor for them), not only LLaVA-1.6."""
    import docread
    from docread.testing import build_reader, build_tiny_llava

    if model is not None and synthetic is not None:
        raise UsageError("--model and --synthetic exclude each other: choose one")
    if synthetic is not None and synthetic not in SYNTHETIC:
        raise UsageError(f"--synthetic {synthetic!r}: choose tiny or real")
    if synthetic == "real":
        return BenchModel(build_reader(device=device, quant=quant), "synthetic-real")
    if synthetic == "tiny":
        path = build_tiny_llava(workdir / "tiny-llava-next", kind="llava_next", seed=0)
        return BenchModel(docread.load(str(path), device=device, quant=quant), "synthetic-tiny")
    reader = docread.load(model, device=device, quant=quant)
    if reader.base.model.config.model_type != "llava_next" and not (
        llava and reader.base.model.config.model_type == "llava"
    ):
        raise UsageError(
            f"--model {model}: the baseline is transformers' LLaVA-NeXT; give a LLaVA-1.6 "
            "(llava_next) checkpoint such as llava-1.6-vicuna-7b, or --synthetic tiny|real"
        )
    return BenchModel(reader, reader.name)


# -- the baseline's processor -------------------------------------------------------------------------
def baseline_processor(reader: DocReader):
    """transformers' LlavaNextProcessor over the Pillow-backend LlavaNextImageProcessorPil, configured as
    llava-hf/llava-v1.6-vicuna-7b-hf's (its default grid), with the model's own normalisation."""
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    config = reader.base.model.config
    side = config.vision_config.image_size
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=list(reader.base.image_mean),
        image_std=list(reader.base.image_std),
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    tokenizer = reader.base.tokenizer
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=tokenizer.convert_ids_to_tokens(reader.base.image_token_id),
        num_additional_image_tokens=1,
    )


def baseline_content_size(width: int, height: int, pinpoints, side: int) -> tuple[int, int, tuple[int, int]]:
    """(width, height) the LLaVA-NeXT processor resizes a width x height page to before cutting it into
    side x side tiles, and its (rows, cols) of tiles."""
    import numpy as np
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension

    best = select_best_resolution((height, width), pinpoints)
    shape_only = np.broadcast_to(np.uint8(0), (3, height, width))  # no pixels allocated
    new_height, new_width = get_patch_output_size(shape_only, best, input_data_format=ChannelDimension.FIRST)
    return new_width, new_height, (best[0] // side, best[1] // side)
