"""Adapter files: the trained HiRes parts (SRA, SMS, separators, LoRA) in one safetensors file.

Layout: tensors `hires.<name>` (HiResModules' state dict), `lora.<name>` (LoRA weights,
named as in the llava-hf model) and `base.<name>` (base-model weights that training
changed: the projector after stage 1, every weight after `docread train --full`);
metadata `format`, `version`, `hires_config`, `lora_config` and `training` as JSON
strings. Safetensors only: loading never runs code. A `--full` adapter replaces the
whole base, so it needs that base's config and tokenizer (`--model`) and `--quant none`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from docread.errors import DocreadError

ADAPTER_FILE = "adapter.safetensors"  # the file inside an adapter folder
FORMAT = "docread-adapter"
VERSION = 1
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLaMA linears


def attach_lora(llava, *, r: int = 128, alpha: int = 256, dropout: float = 0.0,
                targets: tuple[str, ...] = LORA_TARGETS) -> dict:
    """Add LoRA (peft) to the language model's linear layers; returns the config as saved."""
    from peft import LoraConfig, inject_adapter_in_model

    config = {"r": r, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": list(targets)}
    inject_adapter_in_model(LoraConfig(**config), llava.model.language_model)
    return config


def lora_parameters(llava) -> dict:
    return {name: p for name, p in llava.named_parameters() if "lora_" in name}


def save_adapter(path: Path, modules, llava=None, *, lora_config: dict | None = None,
                 base_parameters: Iterable[str] = (), training: dict | None = None) -> Path:
    """Write `modules` (and the LoRA weights of `llava`, if any) to path; a folder gets adapter.safetensors.

    `base_parameters` names llava parameters to store too (the trained projector, or all of
    them for a `--full` run); `training` is a JSON-able note of how the adapter was made."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path.mkdir(parents=True, exist_ok=True)
        path = path / ADAPTER_FILE
    tensors = {f"hires.{k}": v.detach().cpu().contiguous() for k, v in modules.state_dict().items()}
    lora = lora_parameters(llava) if llava is not None else {}
    tensors.update({f"lora.{k}": v.detach().cpu().contiguous() for k, v in lora.items()})
    named = dict(llava.named_parameters()) if llava is not None else {}
    for name in base_parameters:
        if name not in named or "lora_" in name:
            raise ValueError(f"{name!r} is not a base parameter of this model")
        tensors[f"base.{name}"] = named[name].detach().cpu().contiguous()
    metadata = {"format": FORMAT, "version": str(VERSION), "hires_config": json.dumps(asdict(modules.config))}
    if lora:
        metadata["lora_config"] = json.dumps(lora_config or {})
    if training:
        metadata["training"] = json.dumps(training)
    save_file(tensors, str(path), metadata=metadata)
    return path


def adapter_contents(path: Path) -> tuple[dict[str, str], list[str]]:
    """An adapter file's metadata and tensor names, without reading any tensor."""
    from safetensors import SafetensorError, safe_open

    path = _adapter_path(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise DocreadError("corrupt", f"adapter {path} cannot be read ({e}): re-save or re-download it") from None


def _adapter_path(path: Path) -> Path:
    if path.is_dir():
        path = path / ADAPTER_FILE
    if not path.is_file():
        raise DocreadError("adapter_missing", f"no adapter at {path}: pass a .safetensors file or a folder with {ADAPTER_FILE}")
    if path.suffix != ".safetensors":
        raise DocreadError("unsafe_weights", f"{path} is not a .safetensors file: docread loads adapters from safetensors only")
    return path


def trained_with_global_view(path: Path) -> bool:
    """Whether the adapter at `path` was trained with the global view (read from its metadata only)."""
    from safetensors import SafetensorError, safe_open

    path = _adapter_path(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DocreadError("corrupt", f"adapter {path} cannot be read ({e}): re-save or re-download it") from None
    try:
        return bool(json.loads(metadata.get("hires_config", "{}")).get("global_view", True))
    except ValueError:
        raise DocreadError("bad_adapter", f"{path}: its hires_config metadata is not JSON") from None


def load_adapter(path: Path, modules, llava) -> None:
    """Load an adapter into `modules` (and LoRA into `llava`), checking it fits this base."""
    from safetensors import SafetensorError, safe_open

    path = _adapter_path(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise DocreadError("corrupt", f"adapter {path} cannot be read ({e}): re-save or re-download it") from None
    if metadata.get("format") != FORMAT:
        raise DocreadError("bad_adapter", f"{path} is not a docread adapter (no '{FORMAT}' metadata)")
    saved = json.loads(metadata["hires_config"])
    mine = asdict(modules.config)
    differs = {k: (saved.get(k), v) for k, v in mine.items() if k in ("vision_width", "text_width", "tokens_side", "k")
               and saved.get(k) != v}
    if differs:
        detail = ", ".join(f"{k} {a} vs model {b}" for k, (a, b) in differs.items())
        raise DocreadError("bad_adapter", f"adapter {path} was trained for another base ({detail}): use its base --model")
    trained_global = saved.get("global_view", True)
    if trained_global != mine.get("global_view", True):
        raise DocreadError("bad_adapter", f"adapter {path} was trained {'with' if trained_global else 'without'} the "
                           f"global view: load it with global_view={trained_global}")
    hires = {k[len("hires."):]: v for k, v in tensors.items() if k.startswith("hires.")}
    try:
        modules.load_state_dict(hires, strict=True)
    except RuntimeError as e:
        raise DocreadError("bad_adapter", f"adapter {path} does not match this model's modules: {str(e).splitlines()[0]}") from None
    _load_base_weights(path, llava, {k[len("base."):]: v for k, v in tensors.items() if k.startswith("base.")})
    lora = {k[len("lora."):]: v for k, v in tensors.items() if k.startswith("lora.")}
    if lora:
        config = json.loads(metadata.get("lora_config", "{}"))
        attach_lora(llava, r=config.get("r", 128), alpha=config.get("lora_alpha", 256),
                    targets=tuple(config.get("target_modules", LORA_TARGETS)))
        params = lora_parameters(llava)
        missing = sorted(set(params) - set(lora))
        if missing or set(lora) - set(params):
            raise DocreadError("bad_adapter", f"adapter {path}: LoRA weights do not match this model ({len(missing)} missing)")
        import torch

        with torch.no_grad():
            for name, p in params.items():
                p.copy_(lora[name].to(p.device, p.dtype))


def _load_base_weights(path: Path, llava, weights: dict) -> None:
    """Copy an adapter's `base.` tensors (a trained projector, or a --full run's every weight) into llava."""
    import torch

    if not weights:
        return
    params = dict(llava.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise DocreadError("bad_adapter", f"adapter {path} holds base weights this model lacks ({unknown[0]}, "
                           f"{len(unknown)} in all): use the --model it was trained on")
    for name, tensor in weights.items():
        p = params[name]
        if not p.dtype.is_floating_point or p.shape != tensor.shape:
            raise DocreadError("bad_adapter", f"adapter {path} replaces {name} {tuple(tensor.shape)}, which this "
                               f"model holds as {p.dtype} {tuple(p.shape)} (quantized?): load it with --quant none")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
