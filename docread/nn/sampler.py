"""Self-Mining Sampler (SMS): compresses a tile's tokens k x k-fold while keeping positions.

Queries are the tile's own average-pooled tokens (so each query sits where its k x k patch
block sits); they cross-attend over all of the tile's tokens. A residual from the queries
and a zero-initialised output make an untrained sampler plain average pooling, and k=1 an
identity (docs/method.md#self-mining-sampler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def average_pool(tiles: torch.Tensor, k: int) -> torch.Tensor:
    """(T, h*w, C) -> (T, (h/k)*(w/k), C) by k x k average pooling on the token grid."""
    t, length, c = tiles.shape
    side = int(length**0.5)
    grid = tiles.transpose(1, 2).reshape(t, c, side, side)  # (T, C, h, w)
    return F.avg_pool2d(grid, k).flatten(2).transpose(1, 2)  # (T, L/k^2, C)


class SelfMiningSampler(nn.Module):
    def __init__(self, width: int, *, k: int = 2, heads: int = 16):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.k = k
        self.heads = heads
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)  # zero-initialised: the sampler starts as average pooling
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for linear in (self.q, self.kv):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """tiles: (T, L, C) -> (T, L/k^2, C)."""
        t, length, c = tiles.shape
        hs = c // self.heads
        queries = average_pool(tiles, self.k)  # (T, Q, C)
        q = self.q(self.norm_q(queries)).view(t, -1, self.heads, hs).transpose(1, 2)  # (T, nh, Q, hs)
        k, v = (
            self.kv(self.norm_kv(tiles)).view(t, length, 2, self.heads, hs).permute(2, 0, 3, 1, 4)
        )  # 2 x (T, nh, L, hs)
        mined = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(t, -1, c)  # (T, Q, C)
        return queries + self.out(mined)
