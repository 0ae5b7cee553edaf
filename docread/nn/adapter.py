"""SliceRestore Adapter (SRA): restores the context that cutting a page into tiles destroyed.

The tiles of one image are merged back into one feature map, a local branch (depthwise
3x3 conv) and a global branch (pool -> multi-head self-attention -> upsample) see across
the tile borders, and the sum is cut back into tiles (docs/method.md#slicerestore-adapter).
It runs as a parallel branch of a CLIP layer's self-attention; its zero-initialised output
projection makes an untrained adapter an exact identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def merge_tiles(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows*cols, h*w, C) row-major tiles -> (C, rows*h, cols*w): the page as one feature map."""
    t, length, c = tiles.shape
    side = int(length**0.5)
    assert t == rows * cols and side * side == length, (tiles.shape, rows, cols)
    x = tiles.view(rows, cols, side, side, c)  # (m, n, h, w, C)
    return x.permute(4, 0, 2, 1, 3).reshape(c, rows * side, cols * side)  # (C, m*h, n*w)


def split_tiles(feature_map: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of merge_tiles: (C, rows*h, cols*w) -> (rows*cols, h*w, C)."""
    c, height, width = feature_map.shape
    h, w = height // rows, width // cols
    x = feature_map.view(c, rows, h, cols, w).permute(1, 3, 2, 4, 0)  # (m, n, h, w, C)
    return x.reshape(rows * cols, h * w, c)


class SliceRestoreAdapter(nn.Module):
    """Local + global context across the tiles of each image; zero output at init."""

    def __init__(self, width: int, *, heads: int = 16, pool: int = 24):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.pool = pool  # the global branch attends over at most pool x pool positions
        self.local = nn.Conv2d(width, width, kernel_size=3, padding=1, groups=width)  # depthwise 3x3
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.out = nn.Linear(width, width)  # zero-initialised: the adapter starts as an identity
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        nn.init.kaiming_uniform_(self.local.weight, a=5**0.5)
        nn.init.zeros_(self.local.bias)
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.xavier_uniform_(self.attn_out.weight)
        nn.init.zeros_(self.attn_out.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _global(self, feature_map: torch.Tensor) -> torch.Tensor:
        """(C, H, W) -> (C, H, W): self-attention over a pooled map, upsampled back."""
        c, height, width = feature_map.shape
        small = F.adaptive_avg_pool2d(
            feature_map[None], (min(self.pool, height), min(self.pool, width))
        )  # (1, C, H1, W1)
        h1, w1 = small.shape[-2:]
        tokens = small.flatten(2).transpose(1, 2)  # (1, H1*W1, C)
        q, k, v = (
            self.qkv(tokens).view(1, h1 * w1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        )  # 3 x (1, nh, P, hs)
        attended = F.scaled_dot_product_attention(q, k, v)  # (1, nh, P, hs)
        attended = self.attn_out(attended.transpose(1, 2).reshape(1, h1 * w1, c))  # (1, P, C)
        attended = attended.transpose(1, 2).reshape(1, c, h1, w1)
        return F.interpolate(attended, size=(height, width), mode="bilinear", align_corners=False)[0]  # (C, H, W)

    def forward(self, tiles: torch.Tensor, grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """tiles: (T, L, C) patch tokens of every image's tiles, image after image, row-major;
        grids: (rows, cols) of each image, sum(rows*cols) == T. Returns the (T, L, C) update."""
        out, start = [], 0
        for rows, cols in grids:
            count = rows * cols
            feature_map = merge_tiles(tiles[start : start + count], rows, cols)  # (C, m*h, n*w)
            local = self.local(feature_map[None])[0]
            restored = split_tiles(local + self._global(feature_map), rows, cols)  # (m*n, L, C)
            out.append(self.out(restored))
            start += count
        if start != tiles.shape[0]:
            raise ValueError(f"grids describe {start} tiles, the batch holds {tiles.shape[0]}")
        return torch.cat(out)
