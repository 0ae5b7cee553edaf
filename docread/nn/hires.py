"""HiRes-LLaVA assembly: CLIP with SliceRestore Adapters, the Self-Mining Sampler, the base
projector and the three separators, laid out as docs/method.md#layout says, then scattered into the prompt.

`HiResModules` holds only what docread adds (the trainable parts saved in an adapter
file); `HiResLlava` wires them around a loaded llava-hf model without owning it, so a
4-bit base is never moved or cast. Nothing here reads files or prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from docread.nn.adapter import SliceRestoreAdapter
from docread.nn.sampler import SelfMiningSampler

REFERENCE_FEATURE_LAYER = 23  # CLIP-L/14 (24 layers) feeds LLaVA its 23rd layer's output; SRAs sit in 19-22
SEPARATORS = ("SEP_A", "SEP_B", "SEP_C")  # after the global view / between tiles of a row / after a row


@dataclass(frozen=True)
class HiResConfig:
    """Shapes and placement of docread's modules for one base checkpoint."""

    vision_width: int  # C: CLIP hidden size (1024 for ViT-L)
    text_width: int  # D: LLM hidden size (4096 for Vicuna-7B)
    tokens_side: int  # h = w = S / patch (24)
    feature_layer: int  # 1-based encoder layer whose output LLaVA uses (23 for CLIP-L)
    adapter_layers: tuple[int, ...]  # 1-based layers holding an SRA, all < feature_layer + 1
    adapter_heads: int = 16  # SRA global-branch heads
    adapter_pool: int = 24  # SRA global branch attends over at most pool x pool
    k: int = 2  # SMS pooling kernel
    sampler_heads: int = 16  # SMS cross-attention heads
    keep_cls: bool = False  # vision_feature_select_strategy "full" keeps CLS
    global_view: bool = True  # False: tiles alone, no global view (the fragmentation ablation)

    def __post_init__(self):
        bad = [layer for layer in self.adapter_layers if not 1 <= layer <= self.feature_layer]
        if bad:
            raise ValueError(f"adapter layers {bad} outside the encoder's used layers 1..{self.feature_layer}")
        if self.tokens_side % self.k:
            raise ValueError(f"tokens per side {self.tokens_side} not divisible by k={self.k}")

    @property
    def tokens_per_tile(self) -> int:
        return (self.tokens_side // self.k) ** 2


def place_adapters(layers: Sequence[int], feature_layer: int) -> tuple[int, ...]:
    """Map the preset's CLIP-L layers to an encoder of another depth, same place relative to
    the feature layer: 19-22 stay 19-22 for CLIP-L, become 1-4 when the feature layer is 5."""
    shift = feature_layer - REFERENCE_FEATURE_LAYER
    return tuple(sorted({min(max(1, layer + shift), feature_layer) for layer in layers}))


def _divisor_heads(width: int, wanted: int) -> int:
    """The largest head count <= wanted that divides width (16 for 1024; 4 for a tiny 32)."""
    return max(h for h in range(1, wanted + 1) if width % h == 0)


class HiResModules(nn.Module):
    """What HiRes-LLaVA adds to LLaVA: one SRA per chosen layer, the SMS and three separators.

    All start neutral (SRA output zero, SMS = average pooling), so an untrained set
    leaves the base checkpoint's behaviour unchanged but for pooling and separators.
    """

    def __init__(self, config: HiResConfig):
        super().__init__()
        self.config = config
        c = config.vision_width
        self.adapters = nn.ModuleDict(
            {
                str(layer): SliceRestoreAdapter(
                    c, heads=_divisor_heads(c, config.adapter_heads), pool=config.adapter_pool
                )
                for layer in config.adapter_layers
            }
        )
        self.sampler = SelfMiningSampler(c, k=config.k, heads=_divisor_heads(c, config.sampler_heads))
        self.separators = nn.Parameter(torch.zeros(len(SEPARATORS), config.text_width))  # (3, D)

    @torch.no_grad()
    def init_separators(self, token_embeddings: torch.Tensor) -> None:
        """Start the separators from text-token embeddings (3, D), e.g. of ':', ',', and newline."""
        self.separators.copy_(token_embeddings.to(self.separators.dtype))


def _adapted_layer(
    layer: nn.Module,
    adapter: SliceRestoreAdapter,
    h: torch.Tensor,
    tile_index: torch.Tensor,
    tile_grids: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """A CLIPEncoderLayer with the SRA as a parallel branch of its self-attention: (V, 1 + L, C) -> same."""
    residual = h
    x = layer.layer_norm1(h)
    attn, _ = layer.self_attn(hidden_states=x, attention_mask=None)  # (V, 1 + L, C)
    delta = adapter(x[tile_index, 1:], tile_grids)  # (T, L, C): patch tokens of tiles only
    attn = attn.index_add(0, tile_index, nn.functional.pad(delta, (0, 0, 1, 0)))  # CLS untouched
    h = residual + attn
    return h + layer.mlp(layer.layer_norm2(h))


class HiResLlava:
    """Runs a llava-hf model's parts with docread's modules in between.

    Not an nn.Module on purpose: it must never `.to()` the (possibly 4-bit) base.
    """

    def __init__(self, llava: nn.Module, modules: HiResModules, *, image_token_id: int):
        self.llava = llava
        self.modules = modules
        self.image_token_id = image_token_id
        inner = llava.model  # LlavaModel / LlavaNextModel
        tower = inner.vision_tower
        self.vision = getattr(tower, "vision_model", tower)  # transformers < 5 nests CLIPVisionTransformer
        self.projector = inner.multi_modal_projector
        self.language_model = inner.language_model
        self.lm_head = llava.lm_head
        self.gradient_checkpointing = False  # training: recompute the SRA layers in backward, not keep activations

    # -- vision ---------------------------------------------------------------------------
    def encode_views(self, pixels: torch.Tensor, grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """CLIP features of every view, SRAs applied across each image's tiles.

        pixels: (V, 3, S, S), for each image its global view then its rows*cols tiles.
        grids:  (rows, cols) per image, in order; (0, 0) for a global view alone.
        Returns (V, L, C) features of the feature layer, CLS dropped as LLaVA does.
        """
        cfg = self.modules.config
        is_tile = torch.ones(pixels.shape[0], dtype=torch.bool, device=pixels.device)
        start = 0
        for rows, cols in grids:
            is_tile[start] = False  # the global view has no cuts to restore
            start += 1 + rows * cols
        if start != pixels.shape[0]:
            raise ValueError(f"grids describe {start} views, pixels hold {pixels.shape[0]}")
        tile_grids = [g for g in grids if g[0] * g[1]]
        tile_index = is_tile.nonzero().squeeze(1)  # (T,)

        vm = self.vision
        h = vm.pre_layrnorm(vm.embeddings(pixels))  # (V, 1 + L, C)
        for number, layer in enumerate(vm.encoder.layers[: cfg.feature_layer], start=1):
            adapter = self.modules.adapters[str(number)] if str(number) in self.modules.adapters else None
            if adapter is None or not tile_grids:
                h = layer(h, None)
                continue
            if self.gradient_checkpointing and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                h = checkpoint(_adapted_layer, layer, adapter, h, tile_index, tile_grids, use_reentrant=False)
            else:
                h = _adapted_layer(layer, adapter, h, tile_index, tile_grids)
        return h if cfg.keep_cls else h[:, 1:]

    def image_embeddings(self, pixels: torch.Tensor, grids: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Per image, its laid-out embedding sequence (N_i, D):
        [global] SEP_A [tile 0,0] SEP_B [tile 0,1] ... SEP_C, row after row (no separators without tiles).
        """
        cfg = self.modules.config
        features = self.encode_views(pixels, grids)  # (V, L, C)
        sep_a, sep_b, sep_c = self.modules.separators
        out, start = [], 0
        for rows, cols in grids:
            tiles = rows * cols
            global_tokens = self.projector(features[start])  # (L, D)
            parts = [global_tokens] if cfg.global_view else []
            if tiles:
                pooled = self.modules.sampler(features[start + 1 : start + 1 + tiles])  # (T, L/k^2, C)
                projected = self.projector(pooled)  # (T, L/k^2, D)
                dtype = projected.dtype
                if cfg.global_view:
                    parts.append(sep_a.to(dtype)[None])
                for i in range(tiles):
                    sep = sep_c if (i + 1) % cols == 0 else sep_b
                    parts += [projected[i], sep.to(dtype)[None]]
            sequence = torch.cat(parts)  # (N_i, D)
            expected = (
                (features.shape[1] if cfg.global_view else 0)
                + tiles * (cfg.tokens_per_tile + 1)
                + (1 if tiles and cfg.global_view else 0)
            )
            assert sequence.shape[0] == expected, (sequence.shape, expected)
            out.append(sequence)
            start += 1 + tiles
        return out

    # -- language -------------------------------------------------------------------------
    def embed_prompt(self, input_ids: torch.Tensor, image_sequences: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token embeddings of input_ids (1, T) with the image placeholders replaced, in order.

        The processor expanded each `<image>` to exactly as many placeholders as its
        sequence has rows; a mismatch is a bug and raises naming both counts.
        """
        mask = input_ids == self.image_token_id  # (1, T)
        embed = self.language_model.get_input_embeddings()
        embeds = embed(input_ids.masked_fill(mask, 0))  # (1, T, D)
        visual = torch.cat(list(image_sequences)).to(embeds.dtype) if image_sequences else embeds[:0, 0]
        placeholders = int(mask.sum())
        if placeholders != visual.shape[0]:
            raise ValueError(
                f"the prompt has {placeholders} image placeholder tokens but the images "
                f"produced {visual.shape[0]} embeddings"
            )
        return embeds.masked_scatter(mask[..., None].to(embeds.device), visual.to(embeds.device))
