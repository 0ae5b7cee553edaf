"""The EntityGrid-QA entities and how each is drawn with Pillow (nothing is downloaded).

32 entities in four kinds: words, numbers, shapes, objects and signs. Entities come in
look-alike groups of four ("rainbow" / "raincoat" ...), so a model that sees only half
of a cut entity meets a plausible wrong option. Every drawing fills a square box given
in pixels, so entities scale with the cell; text uses Pillow's bundled font only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from PIL import ImageDraw, ImageFont

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in pixels
RGB = tuple[int, int, int]

KINDS = ("word", "number", "shape", "object")
TEXT_KINDS = ("word", "number")
INK: RGB = (20, 20, 20)  # text colour: near-black on white
TEXT_WIDTH = 0.95  # text spans at most this fraction of the box width
TEXT_HEIGHT = 0.42  # ... and this fraction of its height
TEXT_STROKE = 0.035  # stroke width per font pixel: bolder glyphs survive downscaling
REFERENCE_FONT_PX = 100  # text is measured once at this size, then scaled
SHAPE_COLOURS: tuple[RGB, ...] = (
    (214, 39, 40),
    (31, 119, 180),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (23, 190, 207),
)  # shapes get one of these at random


@dataclass(frozen=True)
class Entity:
    """One thing that can be placed in a cell."""

    name: str  # the option text: "rainbow", "0.596", "triangle", "stop sign"
    kind: str  # one of KINDS
    group: str  # look-alike group: recognition distractors come from here

    @property
    def phrase(self) -> str:
        """How a question names it: 'the word "rainbow"', 'the number 0.596', 'the stop sign'."""
        if self.kind == "word":
            return f'the word "{self.name}"'
        if self.kind == "number":
            return f"the number {self.name}"
        return f"the {self.name}"

    @property
    def plural(self) -> str:
        """How a counting question names copies of it."""
        if self.kind in TEXT_KINDS:
            return f"copies of {self.phrase}"
        return f"{self.name}s"


def _entities() -> tuple[Entity, ...]:
    groups = {
        ("word", "rain"): ("rainbow", "raincoat", "rainfall", "raindrop"),
        ("word", "sun"): ("sunflower", "sunlight", "sunset", "sunrise"),
        ("number", "596"): ("0.596", "0.569", "0.956", "5.96"),
        ("number", "273"): ("27.3", "23.7", "2.73", "72.3"),
        ("shape", "polygon"): ("triangle", "square", "pentagon", "hexagon"),
        ("shape", "other"): ("circle", "semicircle", "star", "diamond"),
        ("object", "sign"): ("stop sign", "yield sign", "traffic light", "arrow"),
        ("object", "thing"): ("teddy bear", "house", "tree", "umbrella"),
    }
    return tuple(Entity(name, kind, group) for (kind, group), names in groups.items() for name in names)


ENTITIES: tuple[Entity, ...] = _entities()
BY_NAME: dict[str, Entity] = {e.name: e for e in ENTITIES}


# -- geometry helpers ---------------------------------------------------------------------
def _polygon(cx: float, cy: float, radius: float, sides: int, rotation: float = -90.0) -> list[tuple[float, float]]:
    """Vertices of a regular polygon; rotation -90 puts the first vertex on top."""
    step = 360.0 / sides
    return [
        (
            cx + radius * math.cos(math.radians(rotation + i * step)),
            cy + radius * math.sin(math.radians(rotation + i * step)),
        )
        for i in range(sides)
    ]


def _star(cx: float, cy: float, outer: float, inner: float, points: int = 5) -> list[tuple[float, float]]:
    vertices = []
    for i in range(2 * points):
        radius = outer if i % 2 == 0 else inner
        angle = math.radians(-90 + i * 180 / points)
        vertices.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return vertices


def _font(px: float) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(1, int(px)))


def _centred_text(
    draw: ImageDraw.ImageDraw, cx: float, cy: float, text: str, px: float, fill: RGB, stroke: int = 0
) -> Box:
    font = _font(px)
    draw.text((cx, cy), text, font=font, fill=fill, anchor="mm", stroke_width=stroke, stroke_fill=fill)
    return draw.textbbox((cx, cy), text, font=font, anchor="mm", stroke_width=stroke)


def text_size(text: str, box_side: float) -> float:
    """Font size (px) at which `text` fills a box_side square as far as TEXT_WIDTH/TEXT_HEIGHT allow."""
    left, top, right, bottom = _font(REFERENCE_FONT_PX).getbbox(text, anchor="mm")
    scale = min(TEXT_WIDTH * box_side / (right - left), TEXT_HEIGHT * box_side / (bottom - top))
    return REFERENCE_FONT_PX * scale / (1 + 2 * TEXT_STROKE)


# -- drawings -------------------------------------------------------------------------------
def _draw_text(draw, box: Box, entity: Entity, colour: RGB) -> Box:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    px = text_size(entity.name, box[2] - box[0])
    return _centred_text(draw, cx, cy, entity.name, px, INK, stroke=max(1, round(px * TEXT_STROKE)))


def _draw_shape(draw, box: Box, entity: Entity, colour: RGB) -> Box:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    name = entity.name
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "semicircle":
        draw.pieslice((x0, cy - r / 2, x1, y1 + r / 2), 180, 360, fill=colour)  # flat side down, centred
        return (x0, cy - r / 2, x1, cy + r / 2)
    elif name == "square":
        inset = r * 0.1
        box = (x0 + inset, y0 + inset, x1 - inset, y1 - inset)
        draw.rectangle(box, fill=colour)
    elif name == "diamond":
        draw.polygon([(cx, y0), (x1 - r * 0.25, cy), (cx, y1), (x0 + r * 0.25, cy)], fill=colour)
    elif name == "star":
        draw.polygon(_star(cx, cy + r * 0.1, r, r * 0.42), fill=colour)
    else:
        sides = {"triangle": 3, "pentagon": 5, "hexagon": 6}[name]
        centre = cy + (r * 0.25 if sides == 3 else 0)  # a triangle's centroid sits low in its box
        draw.polygon(_polygon(cx, centre, r * (1.15 if sides == 3 else 1.0), sides), fill=colour)
    return box


def _stop_sign(draw, x0, y0, x1, y1):
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    draw.polygon(_polygon(cx, cy, r, 8, rotation=22.5), fill=(200, 16, 46))
    draw.polygon(_polygon(cx, cy, r * 0.9, 8, rotation=22.5), outline=(255, 255, 255), width=max(1, round(r * 0.05)))
    _centred_text(draw, cx, cy, "STOP", text_size("STOP", 1.45 * r), (255, 255, 255), max(1, round(r * 0.03)))


def _yield_sign(draw, x0, y0, x1, y1):
    cx, r = (x0 + x1) / 2, (x1 - x0) / 2
    radius = 1.12 * r  # widest that fits: the side, radius * sqrt(3), stays under 2r
    centre = y0 + r - radius / 4  # centres the triangle's height (1.5 * radius) in the box
    draw.polygon(_polygon(cx, centre, radius, 3, rotation=90), fill=(200, 16, 46))
    draw.polygon(_polygon(cx, centre, 0.7 * radius, 3, rotation=90), fill=(255, 255, 255))
    top = centre - 0.35 * radius  # upper edge of the white inner triangle
    _centred_text(draw, cx, top + 0.22 * r, "YIELD", text_size("YIELD", 0.9 * r), (200, 16, 46))


def _traffic_light(draw, x0, y0, x1, y1):
    cx, r = (x0 + x1) / 2, (x1 - x0) / 2
    draw.rounded_rectangle((cx - r * 0.38, y0, cx + r * 0.38, y1), radius=r * 0.15, fill=(40, 40, 40))
    for i, colour in enumerate(((230, 30, 30), (250, 200, 0), (30, 190, 60))):
        ly = y0 + r * (0.35 + 0.65 * i)
        draw.ellipse((cx - r * 0.26, ly - r * 0.26, cx + r * 0.26, ly + r * 0.26), fill=colour)


def _arrow(draw, x0, y0, x1, y1):
    cy, r = (y0 + y1) / 2, (x1 - x0) / 2
    colour = (30, 90, 200)
    draw.rectangle((x0, cy - r * 0.2, x1 - r * 0.7, cy + r * 0.2), fill=colour)
    draw.polygon([(x1 - r * 0.8, y0 + r * 0.35), (x1, cy), (x1 - r * 0.8, y1 - r * 0.35)], fill=colour)


def _teddy_bear(draw, x0, y0, x1, y1):
    cx, r = (x0 + x1) / 2, (x1 - x0) / 2
    fur, light, dark = (150, 95, 45), (215, 170, 120), (30, 20, 10)

    def disc(x, y, radius, fill):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)

    for side in (-1, 1):
        disc(cx + side * r * 0.42, y0 + r * 0.2, r * 0.18, fur)  # ears
        disc(cx + side * r * 0.62, y0 + r * 1.15, r * 0.2, fur)  # arms
        disc(cx + side * r * 0.4, y1 - r * 0.2, r * 0.22, fur)  # legs
    draw.ellipse((cx - r * 0.5, y0 + r * 0.75, cx + r * 0.5, y1 - r * 0.15), fill=fur)  # body
    disc(cx, y0 + r * 0.5, r * 0.42, fur)  # head
    disc(cx, y0 + r * 0.65, r * 0.17, light)  # muzzle
    disc(cx, y0 + r * 0.58, r * 0.06, dark)  # nose
    for side in (-1, 1):
        disc(cx + side * r * 0.17, y0 + r * 0.38, r * 0.055, dark)  # eyes


def _house(draw, x0, y0, x1, y1):
    r = (x1 - x0) / 2
    draw.polygon([(x0, y0 + r * 0.85), ((x0 + x1) / 2, y0), (x1, y0 + r * 0.85)], fill=(180, 40, 40))  # roof
    draw.rectangle((x0 + r * 0.2, y0 + r * 0.85, x1 - r * 0.2, y1), fill=(235, 200, 120))  # walls
    draw.rectangle((x0 + r * 0.8, y1 - r * 0.65, x0 + r * 1.15, y1), fill=(110, 60, 20))  # door
    draw.rectangle((x0 + r * 1.35, y0 + r * 1.05, x0 + r * 1.65, y0 + r * 1.35), fill=(120, 180, 230))  # window


def _tree(draw, x0, y0, x1, y1):
    cx, r = (x0 + x1) / 2, (x1 - x0) / 2
    draw.rectangle((cx - r * 0.14, y0 + r * 1.1, cx + r * 0.14, y1), fill=(110, 70, 30))
    draw.ellipse((cx - r * 0.75, y0, cx + r * 0.75, y0 + r * 1.35), fill=(40, 140, 50))


def _umbrella(draw, x0, y0, x1, y1):
    cx, r = (x0 + x1) / 2, (x1 - x0) / 2
    canopy = (150, 40, 160)
    draw.pieslice((x0, y0 + r * 0.1, x1, y0 + r * 1.9), 180, 360, fill=canopy)
    for i in range(4):  # scalloped hem: white bites out of the canopy's lower edge
        left = x0 + i * r / 2
        draw.pieslice((left, y0 + r * 0.85, left + r / 2, y0 + r * 1.15), 180, 360, fill=(255, 255, 255))
    width = max(1, round(r * 0.08))
    draw.line((cx, y0 + r, cx, y1 - r * 0.2), fill=(40, 40, 40), width=width)
    draw.arc((cx - r * 0.3, y1 - r * 0.45, cx, y1), 0, 180, fill=(40, 40, 40), width=width)


OBJECTS: dict[str, Callable] = {
    "stop sign": _stop_sign,
    "yield sign": _yield_sign,
    "traffic light": _traffic_light,
    "arrow": _arrow,
    "teddy bear": _teddy_bear,
    "house": _house,
    "tree": _tree,
    "umbrella": _umbrella,
}


def draw_entity(draw: ImageDraw.ImageDraw, entity: Entity, box: Box, colour: RGB) -> Box:
    """Draw `entity` filling the square `box`; return the box its ink occupies (about)."""
    if entity.kind in TEXT_KINDS:
        return _draw_text(draw, box, entity, colour)
    if entity.kind == "shape":
        return _draw_shape(draw, box, entity, colour)
    OBJECTS[entity.name](draw, *box)
    return box
