"""Model presets: the small declarative files in `models/` (base checkpoint, slicing, sampler, adapter).

Reading a preset never imports torch, so `docread inspect` can count tokens instantly.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from docread.errors import UsageError

DEFAULT_MODEL = "llava-1.6-vicuna-7b"
LLAVA_PROMPT = "USER: <image>\n{question} ASSISTANT:"  # llava-hf's LLaVA-1.5/1.6 Vicuna format


@dataclass(frozen=True)
class Preset:
    """Everything docread needs to know about a model besides its weights."""

    name: str  # preset name, or the hub id / path it was derived from
    base: str  # llava-hf checkpoint: hub id or local directory
    description: str = ""
    prompt: str = LLAVA_PROMPT  # chat format; `<image>` marks where the page goes
    size: int = 336  # S: encoder input side
    patch: int = 14  # encoder patch side
    max_slices: int = 16  # N: default tile budget per page
    k: int = 2  # Self-Mining Sampler pooling kernel
    adapter_layers: tuple[int, ...] = (19, 20, 21, 22)  # 1-based encoder layers with an SRA
    adapter_heads: int = 16  # heads of the SRA's global-branch attention
    adapter_pool: int = 24  # SRA global branch attends over at most pool x pool
    extra: dict = field(default_factory=dict, compare=False)  # unknown keys, kept for forward compatibility

    def __post_init__(self):
        if self.size % self.patch or (self.size // self.patch) % self.k:
            raise UsageError(
                f"preset {self.name}: size {self.size} must be a multiple of patch {self.patch} "
                f"and size/patch of k {self.k}",
                code="bad_preset",
            )
        if "<image>" not in self.prompt or "{question}" not in self.prompt:
            raise UsageError(f"preset {self.name}: prompt must contain <image> and {{question}}", code="bad_preset")


def _preset_dir() -> Path:
    """The presets shipped inside an installed package (docread/_presets), else `models/` of a source
    checkout (editable installs, running from the repository)."""
    package = Path(__file__).resolve().parent.parent  # docread/
    installed = package / "_presets"
    return installed if installed.is_dir() else package.parent / "models"


def _from_toml(path: Path) -> Preset:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    slicing, sampler, adapter = data.get("slicing", {}), data.get("sampler", {}), data.get("adapter", {})
    kwargs = dict(
        name=data.get("name", path.stem),
        base=data["base"],
        description=data.get("description", ""),
        prompt=data.get("prompt", LLAVA_PROMPT),
        size=slicing.get("size", 336),
        patch=slicing.get("patch", 14),
        max_slices=slicing.get("max_slices", 16),
        k=sampler.get("k", 2),
        adapter_layers=tuple(adapter.get("layers", (19, 20, 21, 22))),
        adapter_heads=adapter.get("heads", 16),
        adapter_pool=adapter.get("pool", 24),
    )
    return Preset(**kwargs)


def list_presets() -> list[Preset]:
    """All presets shipped in `models/`, by name."""
    return sorted((_from_toml(p) for p in _preset_dir().glob("*.toml")), key=lambda p: p.name)


def resolve_preset(model: str | None) -> Preset:
    """The preset for `--model`: a preset name, a local llava-hf directory, or a hub id.

    A directory or hub id gets the default settings, with S and patch read from the
    directory's config.json when there is one.
    """
    model = model or DEFAULT_MODEL
    named = _preset_dir() / f"{model}.toml"
    if "/" not in model and named.is_file():
        return _from_toml(named)
    path = Path(model).expanduser()
    if path.is_dir():
        return _with_vision_config(Preset(name=str(path), base=str(path)), path / "config.json")
    if path.exists():
        raise UsageError(f"--model {model}: expected a preset name, a hub id or a model directory, got a file")
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return Preset(name=model, base=model)
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UsageError(
            f"--model {model}: no such folder; check the path (a local model is a llava-hf "
            "directory with config.json and safetensors)",
            code="not_found",
        )
    names = ", ".join(p.name for p in list_presets())
    raise UsageError(
        f"unknown model {model!r}: use a preset ({names}), a hub id like llava-hf/llava-1.5-7b-hf, or a local directory"
    )


def _with_vision_config(preset: Preset, config_path: Path) -> Preset:
    try:
        vision = json.loads(config_path.read_text(encoding="utf-8")).get("vision_config", {})
    except (OSError, ValueError):
        return preset
    return replace(preset, size=vision.get("image_size", preset.size), patch=vision.get("patch_size", preset.patch))
