"""What `docread bench speed` runs on: synthetic letter-size PDF pages, and one llava-hf LLaVA-1.6 model
shared by docread and the transformers baseline (a `--model`, the tiny random checkpoint, or random
weights in the real shapes built in memory, the LLM quantized layer by layer: nothing downloaded,
nothing written but the tiny checkpoint).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from docread.errors import UsageError

if TYPE_CHECKING:
    import torch

    from docread.api import DocReader

LETTER_PT = (612, 792)        # US letter in PDF points (8.5 x 11 in at 72 pt/in)
MARGIN_PT = 54                # 0.75 in
FONT_SIZES = (16, 10, 10, 8)  # a heading, then body text in three sizes
SYNTHETIC = ("tiny", "real")
# CLIP-ViT-L/14-336 and Vicuna-7B-v1.5 (llava-hf/llava-v1.6-vicuna-7b-hf's config.json)
REAL_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=336, patch_size=14, projection_dim=768)
REAL_TEXT = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)
REAL_VOCAB = 32064            # Vicuna's 32000 + LLaVA-1.6's added tokens, padded
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WORDS = ("invoice total amount due date net payable account order item quantity price tax shipping "
         "customer reference balance credit terms delivery").split()


# -- pages ------------------------------------------------------------------------------------------
def write_pages(path: Path, count: int, seed: int = 0) -> Path:
    """A PDF of `count` letter pages of text (a heading and ~50 lines), so intake renders real glyphs."""
    import random

    import pymupdf

    rng = random.Random(seed)
    document = pymupdf.open()
    for number in range(1, count + 1):
        page = document.new_page(width=LETTER_PT[0], height=LETTER_PT[1])
        y, size = MARGIN_PT + FONT_SIZES[0], FONT_SIZES[0]
        page.insert_text((MARGIN_PT, y), f"Statement {number:04d} - page {number} of {count}", fontsize=size)
        while y < LETTER_PT[1] - MARGIN_PT - 2 * size:
            size = rng.choice(FONT_SIZES[1:])
            y += 1.6 * size
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
            page.insert_text((MARGIN_PT, y), f"{words} {rng.randint(1, 99999) / 100:,.2f}", fontsize=size)
    document.save(str(path))
    document.close()
    return path


def questions(count: int) -> list[str]:
    stems = ("What is the total amount?", "What is the statement number?", "What is the tax on line 3?",
             "Which item has the largest price?", "What is the balance due?")
    return [stems[i % len(stems)] + ("" if i < len(stems) else f" ({i // len(stems) + 1})") for i in range(count)]


# -- models -----------------------------------------------------------------------------------------
@dataclass
class BenchModel:
    """One LLaVA-1.6 model: docread's reader around it, and its name in the report."""

    reader: "DocReader"
    name: str

    @property
    def llava(self):
        """The transformers LlavaNextForConditionalGeneration the baseline runs (the reader's own)."""
        return self.reader.base.model


def load_model(model: str | None, synthetic: str | None, *, device: str, quant: str, workdir: Path) -> BenchModel:
    """The model a run measures; the tiny checkpoint is written under `workdir`."""
    import docread
    from docread.testing import build_tiny_llava

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
    if reader.base.model.config.model_type != "llava_next":
        raise UsageError(f"--model {model}: the baseline is transformers' LLaVA-NeXT; give a LLaVA-1.6 "
                         "(llava_next) checkpoint such as llava-1.6-vicuna-7b, or --synthetic tiny|real")
    return BenchModel(reader, reader.name)


def build_reader(*, device: str = "auto", quant: str = "auto", vision: dict | None = None, text: dict | None = None,
                 vocab_size: int = REAL_VOCAB, seed: int = 0) -> "DocReader":
    """A DocReader around random weights in the real shapes (or `vision`/`text` overrides), built in
    memory as `docread.load` would wrap a checkpoint. quant: auto (4-bit on CUDA) | none | 4bit."""
    import torch

    from docread.testing import build_tokenizer
    from docread.weights import compute_dtype, resolve_device, resolve_quant

    torch_device = resolve_device(device)
    mode = resolve_quant(quant, torch_device)
    if mode == "8bit":
        raise UsageError("--synthetic real builds 4-bit or unquantized models: use --quant 4bit or none")
    dtype = compute_dtype(torch_device)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = _llava_next_config(tokenizer, {**REAL_VISION, **(vision or {})}, {**REAL_TEXT, **(text or {})}, vocab_size)
    model = _build_llava_next(config, torch_device, dtype, quantize=mode == "4bit")
    return wrap_reader(model, tokenizer, device=torch_device, dtype=dtype, quant=mode, name="synthetic-real")


def _llava_next_config(tokenizer, vision: dict, text: dict, vocab_size: int):
    import transformers as tf

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in ("<s>", "</s>", "<pad>", "<image>")}
    side = vision["image_size"]
    text_config = tf.LlamaConfig(vocab_size=vocab_size, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                                 pad_token_id=ids["<pad>"], **text)
    pinpoints = [[side, 2 * side], [2 * side, side], [2 * side, 2 * side], [3 * side, side], [side, 3 * side]]
    return tf.LlavaNextConfig(vision_config=tf.CLIPVisionConfig(**vision), text_config=text_config,
                              image_token_index=ids["<image>"], vision_feature_layer=-2,
                              vision_feature_select_strategy="default", projector_hidden_act="gelu",
                              image_grid_pinpoints=pinpoints)


def _build_llava_next(config, device: "torch.device", dtype: "torch.dtype", *, quantize: bool):
    """Random LlavaNextForConditionalGeneration on `device`; the LLM's decoder layers are made one at a
    time and (4-bit) quantized at once, so the full-precision 7B never exists (peak: one layer)."""
    import torch
    from transformers import LlavaNextForConditionalGeneration
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layers = config.text_config.num_hidden_layers
    config.text_config.num_hidden_layers = 0  # vision tower, projector, embeddings, norm, lm_head only
    with torch.device(device):
        model = LlavaNextForConditionalGeneration._from_config(config, dtype=dtype)
    language_model = model.model.language_model
    for text_config in {id(c): c for c in (config.text_config, language_model.config)}.values():
        text_config.num_hidden_layers = layers
    for index in range(layers):
        with torch.device(device), _default_dtype(dtype):
            layer = LlamaDecoderLayer(language_model.config, layer_idx=index)
        if quantize:
            quantize_linears(layer, dtype)
        language_model.layers.append(layer)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def _default_dtype(dtype):
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def quantize_linears(module, dtype) -> None:
    """Replace every nn.Linear under `module` by a bitsandbytes NF4 Linear4bit (double-quantized), as
    transformers' BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4") loads the LLM."""
    import bitsandbytes as bnb
    from torch import nn

    for name, child in list(module.named_children()):
        if not isinstance(child, nn.Linear):
            quantize_linears(child, dtype)
            continue
        linear = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                   compute_dtype=dtype, compress_statistics=True, quant_type="nf4", device="meta")
        linear.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                          quant_type="nf4", module=linear).to(child.weight.device)
        if child.bias is not None:
            linear.bias = nn.Parameter(child.bias.data, requires_grad=False)
        setattr(module, name, linear)


def wrap_reader(model, tokenizer, *, device, dtype, quant: str, name: str) -> "DocReader":
    """A DocReader around an in-memory llava-hf model, wired by `docread.api.assemble` as `load` wires one."""
    from docread.api import assemble
    from docread.presets import resolve_preset
    from docread.weights import Base

    preset = replace(resolve_preset(None), name=name, base=name)
    base = Base(model=model, tokenizer=tokenizer, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                image_token_id=int(model.config.image_token_id), device=device, dtype=dtype, quant=quant,
                path=Path(name))
    return assemble(preset, base)


# -- the baseline's processor -------------------------------------------------------------------------
def baseline_processor(reader: "DocReader"):
    """transformers' LlavaNextProcessor over the Pillow-backend LlavaNextImageProcessorPil, configured as
    llava-hf/llava-v1.6-vicuna-7b-hf's (its default grid), with the model's own normalisation."""
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    config = reader.base.model.config
    side = config.vision_config.image_size
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        image_mean=list(reader.base.image_mean), image_std=list(reader.base.image_std),
        image_grid_pinpoints=config.image_grid_pinpoints)
    tokenizer = reader.base.tokenizer
    return LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                              patch_size=config.vision_config.patch_size,
                              vision_feature_select_strategy=config.vision_feature_select_strategy,
                              image_token=tokenizer.convert_ids_to_tokens(reader.base.image_token_id),
                              num_additional_image_tokens=1)


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
