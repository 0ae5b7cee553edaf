"""Loading: a llava-hf base (weights, quantization) wired with docread's HiRes modules into a
`DocReader`, untrained (an exact identity but for pooling and separators) or from an adapter.

    import docread
    reader = docread.load("llava-1.6-vicuna-7b")
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from docread.errors import DocreadError
from docread.model.presets import Preset, resolve_preset
from docread.reader import DocReader

if TYPE_CHECKING:
    from docread.model.weights import Base


def hires_config(hf_config, preset: Preset):
    """docread's module shapes for a llava-hf config and a preset."""
    from docread.nn.hires import HiResConfig, place_adapters

    vision, text = hf_config.vision_config, hf_config.text_config
    layer = hf_config.vision_feature_layer
    if not isinstance(layer, int):
        raise DocreadError(
            "unsupported_model",
            f"{preset.base}: multi-layer vision features "
            f"(vision_feature_layer={layer}) are not supported; use a LLaVA-1.5/1.6 checkpoint",
        )
    feature_layer = layer if layer > 0 else vision.num_hidden_layers + 1 + layer  # -2 -> 23 of 24
    return HiResConfig(
        vision_width=vision.hidden_size,
        text_width=text.hidden_size,
        tokens_side=vision.image_size // vision.patch_size,
        feature_layer=feature_layer,
        adapter_layers=place_adapters(preset.adapter_layers, feature_layer),
        adapter_heads=preset.adapter_heads,
        adapter_pool=preset.adapter_pool,
        k=preset.k,
        keep_cls=hf_config.vision_feature_select_strategy == "full",
    )


SEPARATOR_SEEDS = (":", ",", "\n")  # text tokens whose embeddings start SEP_A, SEP_B, SEP_C


def load(
    model: str | None = None,
    *,
    adapter: str | Path | None = None,
    device: str = "auto",
    quant: str = "auto",
    offline: bool | None = None,
    global_view: bool | None = None,
) -> DocReader:
    """Load a model: a preset name, a hub id or a local llava-hf directory; optionally a trained adapter.

    `global_view=False` reads pages from their tiles alone (an ablation, not for everyday use); by
    default it is on, or as the adapter was trained."""
    from docread.model.weights import load_base

    preset = resolve_preset(model)
    if global_view is None:
        from docread.model.adapters import trained_with_global_view

        global_view = trained_with_global_view(Path(adapter)) if adapter is not None else True
    base = load_base(preset.base, device=device, quant=quant, offline=offline)
    return assemble(preset, base, adapter=adapter, global_view=global_view)


def assemble(preset: Preset, base: Base, *, adapter: str | Path | None = None, global_view: bool = True) -> DocReader:
    """docread's modules around a loaded llava-hf base: untrained (an exact identity but for pooling
    and separators) or from a trained adapter."""
    import torch

    from docread.nn.hires import HiResLlava, HiResModules

    vision = base.model.config.vision_config
    preset = replace(preset, size=vision.image_size, patch=vision.patch_size)
    modules = HiResModules(replace(hires_config(base.model.config, preset), global_view=global_view))
    embed = base.model.get_input_embeddings()
    with torch.no_grad():
        seeds = [base.tokenizer(s, add_special_tokens=False).input_ids[-1] for s in SEPARATOR_SEEDS]
        modules.init_separators(embed(torch.tensor(seeds, device=embed.weight.device)).float())
    if adapter is not None:
        from docread.model.adapters import load_adapter

        load_adapter(Path(adapter), modules, base.model)
    modules.to(device=base.device, dtype=base.dtype).eval().requires_grad_(False)
    hires = HiResLlava(base.model, modules, image_token_id=base.image_token_id)
    return DocReader(preset, base, hires, adapter=str(adapter) if adapter else None)
