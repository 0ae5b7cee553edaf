"""The slicing rule (docs/method.md#slicing), token accounting, and tile cutting."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from docread.views.slicing import choose_grid, count_tokens, fit, global_view, page_views, plan_slices

S = 336


@pytest.mark.parametrize(
    "width, height, max_slices, grid",
    [
        (2 * S, 2 * S, 16, (2, 2)),  # EntityGrid canvas: exactly 2x2, not doubled (strict <)
        (S, S, 16, (2, 2)),  # 1x1 doubled: 4*1*1 < 16
        (100, 100, 16, (2, 2)),  # small images gain detail too
        (S, S, 4, (1, 1)),  # 4*1*1 == 4: not doubled
        (S, S, 5, (2, 2)),  # 4 < 5: doubled
        (1700, 2200, 16, (4, 3)),  # US letter at 200 dpi: 4 rows x 3 cols, not 4x4
        (2200, 1700, 16, (3, 4)),  # landscape letter
        (1654, 2339, 16, (4, 3)),  # A4 at 200 dpi
        (3 * S, 2 * S, 16, (2, 3)),  # fits as is: 6 <= 16, 4*6 >= 16
        (4 * S, 4 * S, 16, (4, 4)),
        (5 * S, 5 * S, 16, (4, 4)),  # 25 > 16: the largest square
        (1000, 1000, 0, (0, 0)),  # global view only
        (5000, 400, 16, (1, 12)),  # wide strip: 1 row; 12 cols keep 96% of 13 cols' scale
        (400, 5000, 16, (12, 1)),
        (1700, 2200, 9, (3, 3)),
        (1700, 2200, 1, (1, 1)),
    ],
)
def test_grid_golden_table(width, height, max_slices, grid):
    assert choose_grid(width, height, size=S, max_slices=max_slices) == grid


def test_letter_page_plan_matches_method_md():
    plan = plan_slices(1700, 2200, size=S, max_slices=16)  # 8.5 x 11 in at 200 dpi
    assert (plan.rows, plan.cols) == (4, 3)
    assert plan.width == 3 * S and plan.height <= 4 * S
    assert round(200 * plan.width / 1700) == 119  # "at about 119 dpi"


def test_token_accounting_at_clip_l():
    plan = plan_slices(1700, 2200)
    tokens = count_tokens(plan, patch=14, k=2)
    assert (tokens.global_tokens, tokens.tokens_per_tile) == (576, 144)
    assert tokens.visual_tokens == 576 + 12 * 144
    assert tokens.separator_tokens == 13  # SEP_A + one per tile
    assert tokens.image_tokens == 576 + 12 * 144 + 13
    no_tiles = count_tokens(plan_slices(1700, 2200, max_slices=0), patch=14, k=2)
    assert (no_tiles.visual_tokens, no_tiles.separator_tokens, no_tiles.image_tokens) == (576, 0, 576)
    assert count_tokens(plan_slices(S, S, max_slices=4), patch=14, k=1).tokens_per_tile == 576


def test_token_accounting_rejects_bad_shapes():
    with pytest.raises(ValueError):
        count_tokens(plan_slices(S, S), patch=15, k=2)
    with pytest.raises(ValueError):
        count_tokens(plan_slices(S, S), patch=14, k=5)


@pytest.mark.parametrize("bad", [(0, 10), (10, 0), (-5, 5)])
def test_rejects_empty_pages(bad):
    with pytest.raises(ValueError):
        choose_grid(*bad)


sizes = st.integers(min_value=1, max_value=30_000)


@settings(max_examples=400, deadline=None)
@given(width=sizes, height=sizes, max_slices=st.integers(min_value=0, max_value=36))
def test_grid_properties(width, height, max_slices):
    rows, cols = choose_grid(width, height, size=S, max_slices=max_slices)
    assert rows * cols <= max_slices
    if max_slices == 0:
        assert (rows, cols) == (0, 0)
        return
    assert rows >= 1 and cols >= 1
    # the grid follows the page's aspect ratio: taller pages never get more columns than rows
    if height >= 2 * width and max_slices >= 2:
        assert rows >= cols
    if width >= 2 * height and max_slices >= 2:
        assert cols >= rows
    # no grid within the budget keeps a content scale more than 10% larger
    scale = min(cols * S / width, rows * S / height)
    best = max(
        min(c * S / width, r * S / height) for r in range(1, max_slices + 1) for c in range(1, max_slices // r + 1)
    )
    if rows * cols < max(1, math.ceil(height / S)) * max(1, math.ceil(width / S)):
        assert scale > best * 0.9 - 1e-12


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 5000), height=st.integers(1, 5000), max_slices=st.integers(0, 20))
def test_plan_fits_canvas_preserving_aspect(width, height, max_slices):
    plan = plan_slices(width, height, size=S, max_slices=max_slices)
    canvas_w, canvas_h = plan.canvas
    assert 1 <= plan.width <= canvas_w and 1 <= plan.height <= canvas_h
    # one side fills the canvas (aspect-preserving fit), up to rounding
    assert plan.width == canvas_w or plan.height == canvas_h
    if min(width, height) >= 50 and min(plan.width, plan.height) >= 50:
        assert abs(plan.width / plan.height - width / height) <= 0.03 * (width / height)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 4))
def test_tiles_cover_the_canvas_without_gaps(rows, cols):
    """Tiles re-assembled row-major give back the padded canvas exactly: no gap, no overlap."""
    s = 14
    plan = plan_slices(cols * s, rows * s, size=s, max_slices=rows * cols)
    assert (plan.rows, plan.cols) == (rows, cols)
    rng = np.random.default_rng(rows * 10 + cols)
    pixels = rng.integers(0, 256, (plan.height, plan.width, 3), dtype=np.uint8)
    views = page_views(Image.fromarray(pixels), plan)
    assert views.shape == (1 + rows * cols, s, s, 3)
    rebuilt = np.concatenate(
        [np.concatenate(list(views[1 + r * cols : 1 + (r + 1) * cols]), axis=1) for r in range(rows)]
    )
    assert np.array_equal(rebuilt, pixels)
    boxes = plan.boxes()
    assert len(boxes) == rows * cols and len(set(boxes)) == rows * cols
    assert sum((right - left) * (bottom - top) for left, top, right, bottom in boxes) == plan.canvas[0] * plan.canvas[1]


def test_padding_is_white_and_page_sits_top_left():
    plan = plan_slices(1700, 2200)
    page = Image.new("RGB", (plan.width, plan.height), (0, 0, 0))
    views = page_views(page, plan)
    last_row_tile = views[1 + 9]  # tile (3, 0): holds the page's bottom edge and the padding below it
    assert (last_row_tile[: plan.height - 3 * S] == 0).all()
    assert (last_row_tile[plan.height - 3 * S :] == 255).all()


def test_global_view_is_centred_fit_and_exact_at_size():
    square = Image.fromarray(np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8))
    assert global_view(square, S) is square  # no resample at the encoder's own size
    wide = Image.new("RGB", (2 * S, S), (0, 0, 0))
    view = np.asarray(global_view(wide, S))
    assert view.shape == (S, S, 3)
    assert (view[S // 2, :, 0] == 0).all()  # the page fills the width
    assert (view[0, :, :] == 255).all() and (view[-1, :, :] == 255).all()  # padded above and below


def test_page_views_checks_render_size():
    plan = plan_slices(1000, 1000)
    with pytest.raises(ValueError, match="rendered at"):
        page_views(Image.new("RGB", (10, 10)), plan)


def test_fit():
    assert fit(1700, 2200, 1008, 1344) == (1008, 1304)
    assert fit(1, 20000, 336, 336) == (1, 336)
