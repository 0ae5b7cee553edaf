"""The "what does the model see?" picture: the page on its tile canvas with the grid drawn over
it, and the global view beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from docread.views.slicing import SlicePlan, global_view

if TYPE_CHECKING:
    from PIL import Image

GRID_RGB = (220, 30, 30)  # tile borders
PAD_TINT = (235, 235, 235)  # canvas padding, shown slightly grey so it reads as "not page"
LABEL_RGB = (40, 40, 40)
GAP = 24  # pixels between the canvas and the global view


def draw_preview(page: Image.Image, plan: SlicePlan) -> Image.Image:
    """A picture of how `page` (rendered at the plan's size) is cut: tiles left, global view right."""
    from PIL import Image, ImageDraw

    s = plan.size
    canvas_w, canvas_h = plan.canvas
    canvas = Image.new("RGB", (canvas_w, canvas_h), PAD_TINT)
    canvas.paste(page.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    line = max(2, s // 112)  # 3 px at S = 336
    for index, (left, top, right, bottom) in enumerate(plan.boxes()):
        draw.rectangle((left, top, right - 1, bottom - 1), outline=GRID_RGB, width=line)
        draw.text((left + 2 * line, top + 2 * line), f"{index // plan.cols},{index % plan.cols}", fill=GRID_RGB)

    view = global_view(page.convert("RGB"), s)
    label_h = 16
    out = Image.new("RGB", (canvas_w + GAP + s, max(canvas_h, s + label_h)), (255, 255, 255))
    out.paste(canvas, (0, 0))
    out.paste(view, (canvas_w + GAP, label_h))
    draw = ImageDraw.Draw(out)
    draw.rectangle((canvas_w + GAP, label_h, canvas_w + GAP + s - 1, label_h + s - 1), outline=LABEL_RGB)
    draw.text((canvas_w + GAP, 2), f"global view {s}x{s}", fill=LABEL_RGB)
    return out
