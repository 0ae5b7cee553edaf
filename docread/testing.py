"""Random llava-hf models built without any download, for tests, benchmarks and scripts/ (never the runtime).

`build_tiny_llava` writes a toy checkpoint folder in the file layout and classes of llava-hf's
LLaVA-1.5 / 1.6 (CLIP width 32, 336 px at patch 42 -> 64 tokens a view; LLaMA width 64);
`build_reader` builds random weights in the real LLaVA-1.6 shapes in memory, the LLM 4-bit layer by layer;
`write_real_llava` writes them to disk as a llava-hf checkpoint (fp16 safetensors, ~14 GB), for `docread bench
load`: `python -m docread.testing write-real DIR`.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from docread.errors import UsageError
from docread.model.weights import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:
    import torch

    from docread.reader import DocReader

CORPUS = [
    "What is written here? The total amount is 1,234.56 dollars.",
    "USER: describe the chart. ASSISTANT: The chart shows sales by year: 2019, 2020, 2021.",
    "Invoice number: 0042, date: 2026-11-24, due: net 30 days.",
    "the quick brown fox jumps over the lazy dog\nTHE QUICK BROWN FOX\n",
]
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    image_size=336,
    patch_size=42,
    projection_dim=32,
)  # 336 / 42 = 8 → 64 tokens a view
TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    initializer_range=0.3,
)  # wide init: decisive logits, so greedy answers never hinge on rounding
IMAGE_MEAN = [0.5, 0.4, 0.3]  # not CLIP's: tests see that docread reads the checkpoint's own
IMAGE_STD = [0.2, 0.25, 0.3]
# CLIP-ViT-L/14-336 and Vicuna-7B-v1.5 (llava-hf/llava-v1.6-vicuna-7b-hf's config.json)
REAL_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)
REAL_TEXT = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)
REAL_VOCAB = 32064  # Vicuna's 32000 + LLaVA-1.6's added tokens, padded
SHARD_BYTES = 2 << 30  # safetensors shard size of the written real-shape checkpoint (hub's ~5 GB is coarser)
HUB_NAMES = (
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
)  # transformers 5's module names -> llava-hf's file names


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = 400):
    """A byte-level BPE tokenizer in the llava-hf shape: <s> prepended, `<image>` special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus or CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<image>"],
    )
    return fast


def llava_config(kind: str, tokenizer, vision: dict, text: dict, vocab_size: int | None = None):
    """A llava ("llava", LLaVA-1.5) or llava_next ("llava_next", LLaVA-1.6) config around `tokenizer`'s
    special tokens, with llava-hf's feature selection; llava_next gets LLaVA-1.6's five grid pinpoints."""
    import transformers as tf

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL}
    side = vision["image_size"]
    text_config = tf.LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        **text,
    )
    common = dict(
        vision_config=tf.CLIPVisionConfig(**vision),
        text_config=text_config,
        image_token_index=ids["<image>"],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    if kind == "llava":
        return tf.LlavaConfig(**common)
    if kind == "llava_next":
        pinpoints = [[side, 2 * side], [2 * side, side], [2 * side, 2 * side], [3 * side, side], [side, 3 * side]]
        return tf.LlavaNextConfig(image_grid_pinpoints=pinpoints, **common)
    raise ValueError(f"kind {kind!r}: llava or llava_next")


# -- a tiny checkpoint on disk -----------------------------------------------------------------------
def build_tiny_llava(
    path: Path,
    kind: str = "llava",
    seed: int = 0,
    *,
    vision: dict | None = None,
    text: dict | None = None,
    tokenizer=None,
) -> Path:
    """Save a random llava ("llava") or llava_next ("llava_next") checkpoint with its processor files."""
    import torch
    import transformers as tf

    path = Path(path)
    tokenizer = tokenizer or build_tokenizer()
    vision = {**VISION, **(vision or {})}
    config = llava_config(kind, tokenizer, vision, {**TEXT, **(text or {})})
    cls = tf.LlavaForConditionalGeneration if kind == "llava" else tf.LlavaNextForConditionalGeneration
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(path)
    _save_processor_files(path, kind, tokenizer, vision)
    return path


def _save_processor_files(path: Path, kind: str, tokenizer, vision: dict) -> None:
    import transformers as tf

    side = vision["image_size"]
    image_processor = tf.CLIPImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    if kind == "llava":
        processor = tf.LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=vision["patch_size"],
            vision_feature_select_strategy="default",
            image_token="<image>",
            num_additional_image_tokens=1,
        )
        processor.save_pretrained(path)
    else:
        tokenizer.save_pretrained(path)
        image_processor.save_pretrained(path)


# -- the real shapes, on disk ------------------------------------------------------------------------
def write_real_llava(
    path: Path,
    kind: str = "llava_next",
    seed: int = 0,
    *,
    vision: dict | None = None,
    text: dict | None = None,
    vocab_size: int = REAL_VOCAB,
    shard_bytes: int = SHARD_BYTES,
    log=lambda message: None,
) -> Path:
    """Write a random llava-hf checkpoint in the real CLIP-L/14-336 + Vicuna-7B shapes (or overrides): fp16
    safetensors in shards with their index, the hub's tensor names, config, tokenizer and processor files.
    Tensors are made one at a time (peak memory: one shard); norms are ones, biases zeros, the rest N(0, 0.02)."""
    import torch
    import transformers as tf
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    vision = {**REAL_VISION, **(vision or {})}
    config = llava_config(kind, tokenizer, vision, {**REAL_TEXT, **(text or {})}, vocab_size)
    config.dtype = torch.float16
    cls = tf.LlavaForConditionalGeneration if kind == "llava" else tf.LlavaNextForConditionalGeneration
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in cls(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    shards: list[list[str]] = []  # tensor names of each written shard
    current: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        tensor = torch.empty(shape, dtype=torch.float16)
        if name.endswith("bias"):
            tensor.zero_()
        elif "norm" in name and len(shape) == 1:
            tensor.fill_(1.0)
        else:
            tensor.normal_(0.0, 0.02, generator=generator)
        if current and sum(t.nbytes for t in current.values()) + tensor.nbytes > shard_bytes:
            shards.append(_write_shard(path, current, len(shards) + 1, save_file, log))
            current = {}
        current[_hub_name(name)] = tensor
    shards.append(_write_shard(path, current, len(shards) + 1, save_file, log))
    _name_shards(path, shards)
    config.save_pretrained(path)
    _save_processor_files(path, kind, tokenizer, vision)
    return path


def _hub_name(name: str) -> str:
    for new, old in HUB_NAMES:
        if name.startswith(new):
            return old + name[len(new) :]
    return name


def _write_shard(path: Path, tensors: dict, number: int, save_file, log) -> list[str]:
    save_file(tensors, str(path / f"part-{number:05d}.safetensors"), metadata={"format": "pt"})
    log(f"wrote shard {number} ({sum(t.nbytes for t in tensors.values()) / 2**30:.2f} GiB)")
    return list(tensors)


def _name_shards(path: Path, shards: list[list[str]]) -> None:
    """The parts renamed as save_pretrained names them: model.safetensors, or model-0000N-of-0000M plus an index."""
    import json

    if len(shards) == 1:
        (path / "part-00001.safetensors").rename(path / "model.safetensors")
        return
    weight_map, total = {}, 0
    for number, names in enumerate(shards, 1):
        final = path / f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        (path / f"part-{number:05d}.safetensors").rename(final)
        total += final.stat().st_size
        weight_map.update(dict.fromkeys(names, final.name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


# -- the real shapes, in memory ----------------------------------------------------------------------


def build_reader(
    *,
    device: str = "auto",
    quant: str = "auto",
    vision: dict | None = None,
    text: dict | None = None,
    vocab_size: int = REAL_VOCAB,
    seed: int = 0,
) -> DocReader:
    """A DocReader around random weights in the real shapes (or `vision`/`text` overrides), built in
    memory as `docread.load` would wrap a checkpoint. quant: auto (4-bit on CUDA) | none | 4bit."""
    import torch

    from docread.model.weights import compute_dtype, resolve_device, resolve_quant

    torch_device = resolve_device(device)
    mode = resolve_quant(quant, torch_device)
    if mode == "8bit":
        raise UsageError("--synthetic real builds 4-bit or unquantized models: use --quant 4bit or none")
    dtype = compute_dtype(torch_device)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = llava_config(
        "llava_next", tokenizer, {**REAL_VISION, **(vision or {})}, {**REAL_TEXT, **(text or {})}, vocab_size
    )
    model = _build_llava_next(config, torch_device, dtype, quantize=mode == "4bit")
    return wrap_reader(model, tokenizer, device=torch_device, dtype=dtype, quant=mode, name="synthetic-real")


def _build_llava_next(config, device: torch.device, dtype: torch.dtype, *, quantize: bool):
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
        linear = bnb.nn.Linear4bit(
            child.in_features,
            child.out_features,
            bias=child.bias is not None,
            compute_dtype=dtype,
            compress_statistics=True,
            quant_type="nf4",
            device="meta",
        )
        linear.weight = bnb.nn.Params4bit(
            child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4", module=linear
        ).to(child.weight.device)
        if child.bias is not None:
            linear.bias = nn.Parameter(child.bias.data, requires_grad=False)
        setattr(module, name, linear)


def wrap_reader(model, tokenizer, *, device, dtype, quant: str, name: str) -> DocReader:
    """A DocReader around an in-memory llava-hf model, wired by `docread.loading.assemble` as `load` wires one."""
    from docread.loading import assemble
    from docread.model.presets import resolve_preset
    from docread.model.weights import Base

    preset = replace(resolve_preset(None), name=name, base=name)
    base = Base(
        model=model,
        tokenizer=tokenizer,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        image_token_id=int(model.config.image_token_id),
        device=device,
        dtype=dtype,
        quant=quant,
        path=Path(name),
    )
    return assemble(preset, base)


def _main(argv: list[str] | None = None) -> None:
    """`python -m docread.testing write-real DIR [--kind llava_next|llava]`: the real-shape checkpoint on disk."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(prog="python -m docread.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    real = commands.add_parser("write-real", help="write a random Vicuna-7B + CLIP-L llava-hf checkpoint (~14 GB)")
    real.add_argument("folder", type=Path)
    real.add_argument("--kind", choices=("llava_next", "llava"), default="llava_next")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    write_real_llava(args.folder, kind=args.kind, log=lambda m: print(m, file=sys.stderr, flush=True))
    size = sum(f.stat().st_size for f in args.folder.iterdir())
    print(f"wrote {args.folder} ({size / 2**30:.1f} GiB) in {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    _main()
