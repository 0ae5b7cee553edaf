"""Adapter files: the trained HiRes parts (SRA, SMS, separators), base weights and LoRA, safetensors only.

adapter.safetensors holds `hires.<name>` (HiResModules' state dict) and `base.<name>` (base weights training
changed: the projector after stage 1, all after `--full`), with JSON metadata. An adapter folder keeps LoRA
in peft's own layout beside it (adapter_config.json + adapter_model.safetensors), which peft and hub tools
read; a single .safetensors file, and folders saved before, hold it inside as `lora.<name>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from docread.errors import DocreadError

ADAPTER_FILE = "adapter.safetensors"  # the file inside an adapter folder
FORMAT = "docread-adapter"
VERSION = 1
LORA_R, LORA_ALPHA = 128, 256  # rank and scale of the LLM's LoRA (docs/method.md#training)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # LLaMA linears
PEFT_CONFIG = "adapter_config.json"  # peft's file names: PeftModel.from_pretrained(llava, folder) reads them
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft names weights from the PeftModel that wraps the llava-hf model
PEFT_ADAPTER_NAME = "default"  # the adapter name peft drops from saved names and adds back on load


def attach_lora(
    llava, *, r: int = LORA_R, alpha: int = LORA_ALPHA, dropout: float = 0.0, targets: tuple[str, ...] = LORA_TARGETS
) -> dict:
    """Add LoRA (peft) to the language model's linear layers; returns the config as saved."""
    from peft import LoraConfig, inject_adapter_in_model

    config = {"r": r, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": list(targets)}
    inject_adapter_in_model(LoraConfig(**config), llava.model.language_model)
    return config


def lora_parameters(llava) -> dict:
    return {name: p for name, p in llava.named_parameters() if "lora_" in name}


def save_adapter(
    path: Path,
    modules,
    llava=None,
    *,
    lora_config: dict | None = None,
    base_parameters: Iterable[str] = (),
    training: dict | None = None,
    base_model: str | None = None,
) -> Path:
    """Write `modules` (and the LoRA weights of `llava`, if any) to path; returns the adapter.safetensors written.

    A folder gets adapter.safetensors and, with LoRA, peft's two files; a `.safetensors` path gets one file
    holding everything. `base_parameters` names llava parameters to store too (the trained projector, or all
    of them for a `--full` run); `training` is a JSON-able note of how the adapter was made; `base_model` the
    checkpoint peft's config names as the base (a hub id or folder)."""
    from safetensors.torch import save_file

    path = Path(path)
    folder = path.suffix != ".safetensors"
    if folder:
        path.mkdir(parents=True, exist_ok=True)
        path = path / ADAPTER_FILE
    tensors = {f"hires.{k}": v.detach().cpu().contiguous() for k, v in modules.state_dict().items()}
    lora = {k: v.detach().cpu().contiguous() for k, v in (lora_parameters(llava) if llava is not None else {}).items()}
    named = dict(llava.named_parameters()) if llava is not None else {}
    for name in base_parameters:
        if name not in named or "lora_" in name:
            raise ValueError(f"{name!r} is not a base parameter of this model")
        tensors[f"base.{name}"] = named[name].detach().cpu().contiguous()
    metadata = {"format": FORMAT, "version": str(VERSION), "hires_config": json.dumps(asdict(modules.config))}
    if lora:
        metadata["lora_config"] = json.dumps(lora_config or {})
        if folder:
            metadata["lora_file"] = PEFT_WEIGHTS
            _save_peft(path.parent, lora, lora_config or {}, base_model)
        else:
            tensors.update({f"lora.{k}": v for k, v in lora.items()})
    if training:
        metadata["training"] = json.dumps(training)
    save_file(tensors, str(path), metadata=metadata)
    return path


def peft_name(name: str) -> str:
    """A LoRA parameter's llava-hf name -> peft's saved name: `base_model.model.` + name, adapter name dropped."""
    return PEFT_PREFIX + re.sub(rf"\.(lora_[AB])\.{PEFT_ADAPTER_NAME}\.", r".\1.", name)


def docread_name(name: str) -> str:
    """Inverse of peft_name."""
    return re.sub(r"\.(lora_[AB])\.", rf".\1.{PEFT_ADAPTER_NAME}.", name.removeprefix(PEFT_PREFIX))


def _save_peft(folder: Path, lora: dict, config: dict, base_model: str | None) -> None:
    """LoRA as peft's save_pretrained writes it, targeting the language model's linears only (CLIP has q_proj too)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    targets = "|".join(config.get("target_modules", LORA_TARGETS))
    peft_config = LoraConfig(
        r=config.get("r", LORA_R),
        lora_alpha=config.get("lora_alpha", LORA_ALPHA),
        lora_dropout=config.get("lora_dropout", 0.0),
        target_modules=rf".*language_model\..*\.({targets})",
        base_model_name_or_path=base_model,
    )
    peft_config.save_pretrained(str(folder))
    save_file({peft_name(k): v for k, v in lora.items()}, str(folder / PEFT_WEIGHTS), metadata={"format": "pt"})


def read_adapter(path: Path) -> tuple[dict[str, str], dict]:
    """An adapter's metadata and all its tensors, LoRA as `lora.<llava-hf name>` whichever layout holds it."""
    from safetensors import SafetensorError, safe_open

    path = _adapter_path(Path(path))
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
        if "lora_file" in metadata:
            with safe_open(str(path.parent / metadata["lora_file"]), framework="pt") as f:
                tensors.update({f"lora.{docread_name(k)}": f.get_tensor(k) for k in f.keys()})
    except (SafetensorError, OSError, ValueError) as e:
        raise DocreadError("corrupt", f"adapter {path} cannot be read ({e}): re-save or re-download it") from None
    return metadata, tensors


def adapter_contents(path: Path) -> tuple[dict[str, str], list[str]]:
    """An adapter's metadata and tensor names (LoRA's as in read_adapter), without reading any tensor."""
    from safetensors import SafetensorError, safe_open

    path = _adapter_path(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata, names = dict(f.metadata() or {}), list(f.keys())
        if "lora_file" in metadata:
            with safe_open(str(path.parent / metadata["lora_file"]), framework="pt") as f:
                names += [f"lora.{docread_name(k)}" for k in f.keys()]
        return metadata, names
    except (SafetensorError, OSError, ValueError) as e:
        raise DocreadError("corrupt", f"adapter {path} cannot be read ({e}): re-save or re-download it") from None


def _adapter_path(path: Path) -> Path:
    if path.is_dir():
        path = path / ADAPTER_FILE
    if not path.is_file():
        raise DocreadError(
            "adapter_missing", f"no adapter at {path}: pass a .safetensors file or a folder with {ADAPTER_FILE}"
        )
    if path.suffix != ".safetensors":
        raise DocreadError(
            "unsafe_weights", f"{path} is not a .safetensors file: docread loads adapters from safetensors only"
        )
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
    path = _adapter_path(Path(path))
    metadata, tensors = read_adapter(path)
    if metadata.get("format") != FORMAT:
        raise DocreadError("bad_adapter", f"{path} is not a docread adapter (no '{FORMAT}' metadata)")
    saved = json.loads(metadata["hires_config"])
    mine = asdict(modules.config)
    differs = {
        k: (saved.get(k), v)
        for k, v in mine.items()
        if k in ("vision_width", "text_width", "tokens_side", "k") and saved.get(k) != v
    }
    if differs:
        detail = ", ".join(f"{k} {a} vs model {b}" for k, (a, b) in differs.items())
        raise DocreadError(
            "bad_adapter", f"adapter {path} was trained for another base ({detail}): use its base --model"
        )
    trained_global = saved.get("global_view", True)
    if trained_global != mine.get("global_view", True):
        raise DocreadError(
            "bad_adapter",
            f"adapter {path} was trained {'with' if trained_global else 'without'} the "
            f"global view: load it with global_view={trained_global}",
        )
    hires = {k[len("hires.") :]: v for k, v in tensors.items() if k.startswith("hires.")}
    try:
        modules.load_state_dict(hires, strict=True)
    except RuntimeError as e:
        raise DocreadError(
            "bad_adapter", f"adapter {path} does not match this model's modules: {str(e).splitlines()[0]}"
        ) from None
    _load_base_weights(path, llava, {k[len("base.") :]: v for k, v in tensors.items() if k.startswith("base.")})
    lora = {k[len("lora.") :]: v for k, v in tensors.items() if k.startswith("lora.")}
    if lora:
        config = json.loads(metadata.get("lora_config", "{}"))
        attach_lora(
            llava,
            r=config.get("r", LORA_R),
            alpha=config.get("lora_alpha", LORA_ALPHA),
            targets=tuple(config.get("target_modules", LORA_TARGETS)),
        )
        params = lora_parameters(llava)
        missing = sorted(set(params) - set(lora))
        if missing or set(lora) - set(params):
            raise DocreadError(
                "bad_adapter", f"adapter {path}: LoRA weights do not match this model ({len(missing)} missing)"
            )
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
        raise DocreadError(
            "bad_adapter",
            f"adapter {path} holds base weights this model lacks ({unknown[0]}, "
            f"{len(unknown)} in all): use the --model it was trained on",
        )
    for name, tensor in weights.items():
        p = params[name]
        if not p.dtype.is_floating_point or p.shape != tensor.shape:
            raise DocreadError(
                "bad_adapter",
                f"adapter {path} replaces {name} {tuple(tensor.shape)}, which this "
                f"model holds as {p.dtype} {tuple(p.shape)} (quantized?): load it with --quant none",
            )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
