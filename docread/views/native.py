"""The native view: a page exactly as the base checkpoint's own llava-hf pipeline sees it, no HiRes
modules. LLaVA-1.5 (`llava`): one view, CLIP's resize-shortest-side + center crop. LLaVA-1.6
(`llava_next`): AnyRes (best grid pinpoint, resize + pad, tiles, base view) packed with
`image_newline` as `LlavaNextForConditionalGeneration` does.

Counting (`native_spec`, `native_tokens`, `native_grid`) is pure Python, torch-free, for `inspect`;
pixels and embeddings come from transformers' own image processors and model methods, so they
equal what transformers splices into `inputs_embeds` by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from docread.errors import ContextOverflow, DocreadError
from docread.views.slicing import SlicePlan

if TYPE_CHECKING:
    import torch
    from PIL import Image

NATIVE_KINDS = ("llava", "llava_next")
# What transformers builds when config.json leaves these out (LlavaConfig / LlavaNextConfig defaults).
DEFAULT_VISION = {"image_size": 336, "patch_size": 14}  # LLaVA's CLIP-L/14-336 when vision_config is absent
CLIP_VISION_DEFAULTS = {"image_size": 224, "patch_size": 32}  # CLIPVisionConfig's own, for a key left out
DEFAULT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))  # (height, width), LLaVA-1.6
# Image-processor settings a checkpoint's preprocessor config may carry; all else is the class default.
PROCESSOR_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


@dataclass(frozen=True)
class NativeSpec:
    """What the native token count depends on, read from a llava-hf config (dict or object)."""

    kind: str  # "llava" (LLaVA-1.5) or "llava_next" (LLaVA-1.6)
    size: int  # S: encoder input side (336)
    patch: int  # encoder patch side (14)
    pinpoints: tuple[tuple[int, int], ...]  # AnyRes resolutions (height, width); () for llava
    keep_cls: bool = False  # vision_feature_select_strategy "full" keeps CLS

    def __post_init__(self):
        if self.kind not in NATIVE_KINDS:
            raise DocreadError(
                "unsupported_model",
                f"the native view reads {' and '.join(NATIVE_KINDS)} checkpoints, not {self.kind!r}",
            )
        if self.kind == "llava_next" and self.keep_cls:
            raise DocreadError(
                "unsupported_model",
                "LLaVA-1.6 with vision_feature_select_strategy 'full' has no "
                "square feature map to unpad; transformers cannot pack it either",
            )

    @property
    def tokens_side(self) -> int:
        return self.size // self.patch  # 336 / 14 = 24


@dataclass(frozen=True)
class NativeTokens:
    """Image-token accounting of a native page, in the fields a HiRes `TokenCount` has."""

    global_tokens: int  # the base view: (S/patch)^2 = 576 (+1 CLS with the "full" strategy)
    tokens_per_tile: int  # one AnyRes tile before unpadding: (S/patch)^2 = 576, never pooled
    tiles: int  # rows x cols of the AnyRes grid; 0 for LLaVA-1.5
    grid_tokens: int  # the grid's merged feature map after unpadding (no newlines)
    separator_tokens: int  # one image_newline per row of that map

    @property
    def visual_tokens(self) -> int:
        return self.global_tokens + self.grid_tokens

    @property
    def image_tokens(self) -> int:
        """Positions the page takes in the prompt: what transformers expands `<image>` into."""
        return self.visual_tokens + self.separator_tokens


@dataclass(frozen=True)
class NativePlan:
    """A native page's plan, with the fields callers print from a HiRes `PagePlan`."""

    plan: SlicePlan  # rows x cols: the AnyRes grid (0 x 0: LLaVA-1.5's one view); width x height:
    # the page as rendered, its nominal size (the image processor resizes it)
    tokens: NativeTokens
    view: ClassVar[str] = "native"

    @property
    def requested_slices(self) -> int:
        return self.plan.tiles  # no tile budget: the checkpoint's own grid, never reduced

    @property
    def max_slices(self) -> int:
        return self.plan.tiles

    @property
    def reduced(self) -> bool:
        return False


def native_spec(config) -> NativeSpec:
    """A NativeSpec from config.json's dict or a transformers LlavaConfig / LlavaNextConfig."""
    if not isinstance(config, dict):
        config = config.to_dict()
    kind = config.get("model_type")
    vision = config.get("vision_config")
    vision = DEFAULT_VISION if vision is None else {**CLIP_VISION_DEFAULTS, **vision}
    pinpoints = config.get("image_grid_pinpoints", DEFAULT_PINPOINTS) if kind == "llava_next" else ()
    return NativeSpec(
        kind=kind,
        size=int(vision["image_size"]),
        patch=int(vision["patch_size"]),
        pinpoints=tuple((int(h), int(w)) for h, w in pinpoints),
        keep_cls=config.get("vision_feature_select_strategy", "default") == "full",
    )


def select_best_resolution(height: int, width: int, pinpoints) -> tuple[int, int]:
    """The pinpoint (height, width) keeping most of the image's pixels, then wasting least: a mirror
    of transformers.image_processing_utils.select_best_resolution."""
    best, most_kept, least_wasted = None, 0, float("inf")
    for pin_h, pin_w in pinpoints:
        scale = min(pin_w / width, pin_h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        wasted = pin_w * pin_h - kept
        if kept > most_kept or (kept == most_kept and wasted < least_wasted):
            best, most_kept, least_wasted = (pin_h, pin_w), kept, wasted
    return best


def native_tokens(width: int, height: int, spec: NativeSpec) -> tuple[int, int, NativeTokens]:
    """(rows, cols, tokens) of a width x height image: the AnyRes grid and what it costs, mirroring
    LlavaNextProcessor._get_number_of_features (= the model's unpad_image), or LlavaProcessor's count."""
    side = spec.tokens_side
    view = side * side + (1 if spec.keep_cls else 0)
    if spec.kind == "llava":
        return 0, 0, NativeTokens(view, view, 0, 0, 0)
    best_h, best_w = select_best_resolution(height, width, spec.pinpoints)
    rows, cols = best_h // spec.size, best_w // spec.size
    map_h, map_w = rows * side, cols * side  # the merged feature map, padding included
    if width / height > map_w / map_h:  # padded above and below: drop those feature rows
        kept = int(round(height * (map_w / width), 7))
        map_h -= (map_h - kept) // 2 * 2
    else:  # padded left and right
        kept = int(round(width * (map_h / height), 7))
        map_w -= (map_w - kept) // 2 * 2
    return rows, cols, NativeTokens(view, view, rows * cols, map_h * map_w, map_h)


def plan_native(
    width: int, height: int, spec: NativeSpec, *, prompt_tokens: int, max_new_tokens: int, context: int
) -> NativePlan:
    """The native plan of a width x height page; a page that leaves no room for the prompt and the
    answer fails (native cannot drop tiles without ceasing to be native)."""
    rows, cols, tokens = native_tokens(width, height, spec)
    needed = tokens.image_tokens + prompt_tokens + max_new_tokens
    if needed > context:
        raise ContextOverflow(
            f"in the native view this page takes {tokens.image_tokens} image "
            f"tokens; with the prompt ({prompt_tokens}) and --max-new-tokens {max_new_tokens} that is "
            f"{needed} of the model's {context} context tokens: lower --max-new-tokens, shorten the "
            "question, or use the hires view",
            needed=needed,
            context=context,
        )
    return NativePlan(SlicePlan(rows=rows, cols=cols, size=spec.size, width=width, height=height), tokens)


def native_grid(width: int, height: int, config) -> tuple[int, int, int]:
    """(rows, cols, image_tokens) of a width x height page in the native view, without torch.

    `config`: a llava-hf config.json dict, a transformers config, a checkpoint folder, or a Preset
    (its base's config.json is read from a local folder or the HF cache, never the network)."""
    from docread.model.presets import Preset

    if isinstance(config, (str, Path, Preset)):
        config = read_config(config)
    rows, cols, tokens = native_tokens(width, height, native_spec(config))
    return rows, cols, tokens.image_tokens


def read_config(where) -> dict:
    """config.json of a checkpoint folder, or of a Preset's base found locally (no network)."""
    from docread.model.presets import Preset
    from docread.model.weights import cached_folder

    name = where.base if isinstance(where, Preset) else str(where)
    folder = cached_folder(name)
    if folder is None or not (folder / "config.json").is_file():
        pull = f"`docread models pull {where.name}`" if isinstance(where, Preset) else "`docread models pull`"
        raise DocreadError(
            "weights_missing",
            f"{name}: the native view's grid needs the checkpoint's config.json, "
            f"and it is not here: download the model first ({pull}), or pass a local folder",
        )
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


# -- pixels and embeddings, through transformers ------------------------------------------------------
def processor_settings(folder: Path | None) -> dict:
    """The image-processor settings of a checkpoint folder (preprocessor_config.json, the llava-hf hub
    layout, or processor_config.json's image_processor, transformers 5's); {} when it has none."""
    if folder is None:
        return {}
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = Path(folder) / name
        if path.is_file():
            found = json.loads(path.read_text(encoding="utf-8"))
            found = found.get(key, {}) if key else found
            if found:
                return {k: v for k, v in found.items() if k in PROCESSOR_KEYS}
    return {}


def image_processor(model_config, settings: dict, mean, std):
    """The checkpoint's own image processor, Pillow backend (llava-hf's reference): CLIPImageProcessorPil
    for llava, LlavaNextImageProcessorPil with the *model's* pinpoints for llava_next (the model packs
    by config.image_grid_pinpoints, so the processor must tile by them too). `mean`/`std` and the
    encoder side fill in what a folder without processor files leaves out."""
    from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil

    spec = native_spec(model_config)
    kwargs = {
        "size": {"shortest_edge": spec.size},
        "crop_size": {"height": spec.size, "width": spec.size},
        "image_mean": list(mean),
        "image_std": list(std),
        **settings,
    }
    if spec.kind == "llava":
        return CLIPImageProcessorPil(**kwargs)
    return LlavaNextImageProcessorPil(image_grid_pinpoints=[list(p) for p in spec.pinpoints], **kwargs)


def native_pixels(image: Image.Image, processor) -> dict:
    """{"pixel_values": (1, V, 3, S, S) or (1, 3, S, S), "image_sizes": (1, 2) (H, W), llava_next only}."""
    out = processor(images=image.convert("RGB"), return_tensors="pt")
    return {k: out[k] for k in ("pixel_values", "image_sizes") if k in out}


def native_embeddings(model, pixels: dict, *, dtype: torch.dtype) -> torch.Tensor:
    """(N, D) image embeddings of one image exactly as the model's forward splices them into
    inputs_embeds: `get_image_features(...).pooler_output` (LlavaNext: projected, packed, newlines)."""
    import torch

    pixel_values = pixels["pixel_values"].to(model.device, dtype)
    kwargs = {"image_sizes": pixels["image_sizes"].to(model.device)} if "image_sizes" in pixels else {}
    features = model.get_image_features(pixel_values=pixel_values, return_dict=True, **kwargs).pooler_output
    if isinstance(features, (list, tuple)):  # llava_next: one packed (N, D) per image
        features = torch.cat(list(features))
    return features.reshape(-1, features.shape[-1])  # llava: (1, L, D) -> (L, D)
