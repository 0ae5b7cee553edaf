"""Dynamic slicing: a page's tile grid, its global view, and its visual-token count.

Pure functions of sizes (docs/method.md#slicing). The grid is chosen from the
page's nominal size before anything is rendered, so a PDF page is rasterised once, at
exactly the scale its grid needs; `page_views` then cuts the rendered page into the
global view and the row-major S x S tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and Pillow load only where pixels are cut
    import numpy as np
    from PIL import Image

DEFAULT_SIZE = 336  # S: CLIP-ViT-L/14-336 input side
DEFAULT_MAX_SLICES = 16  # N: the paper's tile budget
NEAR_SCALE = 0.10  # grids whose content scale is within 10% of the best count as equal
PAD_RGB = (255, 255, 255)  # documents are padded with paper white


@dataclass(frozen=True)
class SlicePlan:
    """How one page is cut: an m x n grid of S x S tiles holding the page at `width` x `height`.

    `width` x `height` is the size the page is rendered at: the aspect-preserving fit
    into the grid's canvas (cols*S x rows*S), or into S x S when there are no tiles.
    """

    rows: int  # m; 0 when the page is read from the global view alone
    cols: int  # n
    size: int  # S
    width: int  # rendered page width, <= cols*S (or S without tiles)
    height: int  # rendered page height

    @property
    def tiles(self) -> int:
        return self.rows * self.cols

    @property
    def canvas(self) -> tuple[int, int]:
        """(width, height) of the padded tile canvas; (S, S) without tiles."""
        if not self.tiles:
            return (self.size, self.size)
        return (self.cols * self.size, self.rows * self.size)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Tile boxes (left, top, right, bottom) on the canvas, row-major."""
        s = self.size
        return [(c * s, r * s, (c + 1) * s, (r + 1) * s) for r in range(self.rows) for c in range(self.cols)]


@dataclass(frozen=True)
class TokenCount:
    """Visual-token accounting for one page (docs/method.md#layout)."""

    global_tokens: int  # the global view, uncompressed: (S/patch)^2 = 576; 0 when it is left out
    tokens_per_tile: int  # one tile after the sampler's k x k pooling: (S/patch/k)^2 = 144
    tiles: int

    @property
    def visual_tokens(self) -> int:
        """Image-feature tokens: global view + tiles x tokens per tile."""
        return self.global_tokens + self.tiles * self.tokens_per_tile

    @property
    def separator_tokens(self) -> int:
        """SEP_A after the global view (when there are tiles), then one SEP_B or SEP_C after each tile."""
        return self.tiles + (1 if self.tiles and self.global_tokens else 0)

    @property
    def image_tokens(self) -> int:
        """Sequence positions the page occupies in the prompt: visual + separators."""
        return self.visual_tokens + self.separator_tokens


def fit(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The aspect-preserving size of a width x height image fitted into a box."""
    scale = min(box_width / width, box_height / height)
    return (
        min(box_width, max(1, round(width * scale))),
        min(box_height, max(1, round(height * scale))),
    )


def _content_scale(width: int, height: int, rows: int, cols: int, size: int) -> float:
    return min(cols * size / width, rows * size / height)


def choose_grid(
    width: int, height: int, *, size: int = DEFAULT_SIZE, max_slices: int = DEFAULT_MAX_SLICES
) -> tuple[int, int]:
    """(rows, cols) for a width x height page, by the rule of docs/method.md#slicing.

    m = ceil(H/S), n = ceil(W/S); both doubled when 4*m*n < N (strict, so a 2S x 2S
    page stays 2 x 2 at N = 16). When m*n > N, among grids with at most N tiles take
    the one that keeps the largest content scale, preferring fewer tiles among those
    within 10% of it (a letter page: 4 rows x 3 columns).
    """
    if width < 1 or height < 1:
        raise ValueError(f"page size must be positive, got {width}x{height}")
    if size < 1 or max_slices < 0:
        raise ValueError(f"need size >= 1 and max_slices >= 0, got {size}, {max_slices}")
    if max_slices == 0:
        return (0, 0)
    rows, cols = math.ceil(height / size), math.ceil(width / size)
    if 4 * rows * cols < max_slices:
        rows, cols = 2 * rows, 2 * cols
    if rows * cols <= max_slices:
        return (rows, cols)
    grids = [(r, c) for r in range(1, max_slices + 1) for c in range(1, max_slices // r + 1)]
    scales = {g: _content_scale(width, height, *g, size) for g in grids}
    best = max(scales.values())
    near = [g for g in grids if scales[g] > best * (1 - NEAR_SCALE)]
    return min(near, key=lambda g: (g[0] * g[1], -scales[g], g[0]))


def plan_slices(
    width: int, height: int, *, size: int = DEFAULT_SIZE, max_slices: int = DEFAULT_MAX_SLICES
) -> SlicePlan:
    """The full plan for a page of nominal size width x height."""
    rows, cols = choose_grid(width, height, size=size, max_slices=max_slices)
    box = (cols * size, rows * size) if rows else (size, size)
    fitted_width, fitted_height = fit(width, height, *box)
    return SlicePlan(rows=rows, cols=cols, size=size, width=fitted_width, height=fitted_height)


def count_tokens(plan: SlicePlan, *, patch: int, k: int, global_view: bool = True) -> TokenCount:
    """Token count of a page cut by `plan`, for an encoder with this patch side and pooling k.
    `global_view=False` (an ablation: tiles alone) leaves the global view's tokens out."""
    side = plan.size // patch  # tokens per view side: 336 / 14 = 24
    if side * patch != plan.size or side % k:
        raise ValueError(f"S={plan.size} must be a multiple of patch={patch}, and S/patch of k={k}")
    if not global_view and not plan.tiles:
        raise ValueError("without the global view a page needs at least one tile (max_slices >= 1)")
    return TokenCount(
        global_tokens=side * side if global_view else 0, tokens_per_tile=(side // k) ** 2, tiles=plan.tiles
    )


def global_view(page: Image.Image, size: int) -> Image.Image:
    """The whole page fitted into S x S and padded white, centred (as LLaVA's own square view)."""
    from PIL import Image

    fitted = fit(page.width, page.height, size, size)
    if page.size == (size, size):
        return page
    resized = page if page.size == fitted else page.resize(fitted, Image.Resampling.BICUBIC)
    view = Image.new("RGB", (size, size), PAD_RGB)
    view.paste(resized, ((size - fitted[0]) // 2, (size - fitted[1]) // 2))
    return view


def page_views(page: Image.Image, plan: SlicePlan) -> np.ndarray:
    """All views of a rendered page as one uint8 array (1 + tiles, S, S, 3): global view, then tiles.

    `page` must have been rendered at (plan.width, plan.height). The tiles are cut from
    one padded canvas array by a reshape: no per-tile image round trips.
    """
    import numpy as np

    if page.size != (plan.width, plan.height):
        raise ValueError(f"page rendered at {page.size}, plan expects {(plan.width, plan.height)}")
    s = plan.size
    views = np.empty((1 + plan.tiles, s, s, 3), dtype=np.uint8)
    views[0] = np.asarray(global_view(page.convert("RGB"), s))
    if plan.tiles:
        canvas = np.full((plan.rows * s, plan.cols * s, 3), 255, dtype=np.uint8)  # (m*S, n*S, 3)
        canvas[: plan.height, : plan.width] = np.asarray(page.convert("RGB"))
        tiles = canvas.reshape(plan.rows, s, plan.cols, s, 3).transpose(0, 2, 1, 3, 4)  # (m, n, S, S, 3)
        views[1:] = tiles.reshape(plan.tiles, s, s, 3)
    return views
