"""EntityGrid-QA (docs/method.md#entitygrid): synthetic multiple-choice questions about cut entities.

A 2S x 2S canvas holds an invisible 3 x 3 grid; slicing it at S cuts cells 2, 4, 5, 6, 8 (edge) and not 1, 3, 7, 9
(center). `generate` writes images and questions.jsonl (format: `docread.formats.entitygrid`); `score` computes
the per-cell accuracies and the center-edge discrepancy. Same seed, same bytes.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from docread.bench.draw import ENTITIES, SHAPE_COLOURS, Entity, draw_entity
from docread.errors import DocreadError

# The question format lives in docread.formats (training reads it too); re-exported for bench's callers.
from docread.formats.entitygrid import (  # noqa: F401
    CELLS,
    CENTER_CELLS,
    EDGE_CELLS,
    GRID,
    IMAGES_DIR,
    LETTERS,
    QUESTIONS_FILE,
    TASKS,
    Question,
    prompt,
    read_questions,
)

DEFAULT_SIZE = 336  # S: the encoder's input side, so the canvas is 2S x 2S
DEFAULT_N = 1080  # 3 tasks x 9 cells x 4 answer letters x 10
ENTITY_FILL = 0.85  # an entity's box side, as a fraction of the cell side
JITTER = 0.025  # max offset from the cell centre (cell sides); less than half the
# thinnest word's height, so edge entities are always cut
MAX_COUNT = 4  # counting places 1..4 copies; options are 1..4
SUPERSAMPLE_SIDE = 1344  # draw at least this large, then box-downsample: smooth at any S
# Relations clockwise, so DIRECTIONS[i] and DIRECTIONS[i + 4] are opposites.
DIRECTIONS = ("above", "upper right", "right", "lower right", "below", "lower left", "left", "upper left")
_DIRECTION_OF = {
    (-1, 0): "above",
    (-1, 1): "upper right",
    (0, 1): "right",
    (1, 1): "lower right",
    (1, 0): "below",
    (1, -1): "lower left",
    (0, -1): "left",
    (-1, -1): "upper left",
}  # (d_row, d_col)
_RECOGNITION_QUESTIONS = {
    "word": "What is written in the image?",
    "number": "What is written in the image?",
    "shape": "What shape is in the image?",
    "object": "What is the object in the image?",
}


def relation(cell_a: int, cell_b: int) -> str:
    """Where cell_a lies relative to cell_b: 'above', 'lower left', ... (cells 1-9, row-major)."""
    (ra, ca), (rb, cb) = divmod(cell_a - 1, GRID), divmod(cell_b - 1, GRID)
    if (ra, ca) == (rb, cb):
        raise ValueError(f"cells {cell_a} and {cell_b} are the same: no relation")
    return _DIRECTION_OF[((ra > rb) - (ra < rb), (ca > cb) - (ca < cb))]


# -- generation -----------------------------------------------------------------------------
class _Rounds:
    """Hands out items in shuffled rounds, so each is used equally often."""

    def __init__(self, items: Sequence, rng: random.Random):
        self.items, self.rng, self.deck = tuple(items), rng, []

    def next(self):
        if not self.deck:
            self.deck = list(self.items)
            self.rng.shuffle(self.deck)
        return self.deck.pop()


class _TaskState:
    """What one task has handed out so far: cells, entities, answer letters and counts stay balanced."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.cell_use: Counter[int] = Counter()
        self.entities = _Rounds(ENTITIES, rng)
        self.letters = _Rounds(LETTERS, rng)
        self.counts = _Rounds(range(1, MAX_COUNT + 1), rng)

    def cells(self, k: int) -> list[int]:
        """k distinct cells, the least used so far first (ties broken at random)."""
        chosen = sorted(CELLS, key=lambda c: (self.cell_use[c], self.rng.random()))[:k]
        self.cell_use.update(chosen)
        return chosen

    def options(self, answer: str, distractors: Sequence[str]) -> tuple[tuple[str, ...], str]:
        """Answer at the next letter of a balanced schedule, distractors shuffled around it."""
        others = list(distractors)
        self.rng.shuffle(others)
        letter = self.letters.next()
        others.insert(LETTERS.index(letter), answer)
        return tuple(others), letter


class _Draft(NamedTuple):
    """A question before its options are lettered."""

    text: str
    answer: str
    distractors: list[str]
    entities: list[Entity]
    cells: list[int]


# Option sets are built so that the set alone never gives the answer away (the benchmark also
# trains models): a recognition question offers its whole look-alike group, a position question
# two opposite pairs, a counting question always 1-4.
def _recognition(state: _TaskState) -> _Draft:
    entity = state.entities.next()
    distractors = [e.name for e in ENTITIES if e.group == entity.group and e.kind == entity.kind and e != entity]
    return _Draft(_RECOGNITION_QUESTIONS[entity.kind], entity.name, distractors, [entity], state.cells(1))


def _position(state: _TaskState) -> _Draft:
    a = state.entities.next()
    b = state.entities.next()
    while b == a:
        b = state.rng.choice(ENTITIES)
    cells = state.cells(2)
    state.rng.shuffle(cells)
    answer = relation(*cells)
    i = DIRECTIONS.index(answer)
    other = state.rng.choice([d for j, d in enumerate(DIRECTIONS) if j % 4 != i % 4])
    distractors = [DIRECTIONS[(i + 4) % 8], other, DIRECTIONS[(DIRECTIONS.index(other) + 4) % 8]]
    return _Draft(f"Where is {a.phrase} relative to {b.phrase}?", answer, distractors, [a, b], cells)


def _counting(state: _TaskState) -> _Draft:
    entity, count = state.entities.next(), state.counts.next()
    distractors = [str(c) for c in range(1, MAX_COUNT + 1) if c != count]
    cells = sorted(state.cells(count))
    return _Draft(f"How many {entity.plural} are in the image?", str(count), distractors, [entity] * count, cells)


_MAKERS = {"recognition": _recognition, "position": _position, "counting": _counting}


def _render(placed: list[tuple[Entity, int]], size: int, rng: random.Random):
    """Draw entities in their cells on a 2S x 2S canvas; returns the image and each entity's ink box."""
    from PIL import Image, ImageDraw

    side = 2 * size
    factor = max(1, math.ceil(SUPERSAMPLE_SIDE / side))
    cell = side * factor / GRID
    canvas = Image.new("RGB", (side * factor, side * factor), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    colour = rng.choice(SHAPE_COLOURS)  # copies of a shape share one colour
    records = []
    for entity, number in placed:
        row, col = divmod(number - 1, GRID)
        cx = (col + 0.5 + rng.uniform(-JITTER, JITTER)) * cell
        cy = (row + 0.5 + rng.uniform(-JITTER, JITTER)) * cell
        half = ENTITY_FILL * cell / 2
        ink = draw_entity(draw, entity, (cx - half, cy - half, cx + half, cy + half), colour)
        box = [
            math.floor(ink[0] / factor),
            math.floor(ink[1] / factor),
            math.ceil(ink[2] / factor),
            math.ceil(ink[3] / factor),
        ]
        records.append({"name": entity.name, "kind": entity.kind, "cell": number, "box": box})
    return canvas.reduce(factor) if factor > 1 else canvas, records


def generate(out: Path, *, n: int = DEFAULT_N, seed: int = 0, size: int = DEFAULT_SIZE) -> Iterator[Question]:
    """Write n questions (tasks in turn) and their PNGs under `out`; yields each as it is written."""
    if n < 1 or size < GRID:
        raise ValueError(f"need n >= 1 and size >= {GRID}, got n={n}, size={size}")
    out = Path(out)
    rng = random.Random(seed)
    states = {task: _TaskState(random.Random(rng.getrandbits(64))) for task in TASKS}
    draw_rng = random.Random(rng.getrandbits(64))
    try:
        (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        with open(out / QUESTIONS_FILE, "w", encoding="utf-8", newline="\n") as file:
            for index in range(n):
                question, image = _make(index, states, draw_rng, size)
                image.save(out / question.image, format="PNG")
                file.write(json.dumps(question.to_json(), ensure_ascii=False) + "\n")
                yield question
    except OSError as e:
        raise DocreadError("unwritable", f"cannot write the benchmark under {out}: {e.strerror or e}") from None


def _make(index: int, states: dict[str, _TaskState], draw_rng: random.Random, size: int):
    """Question `index` (tasks take turns) and its image."""
    task = TASKS[index % len(TASKS)]
    state = states[task]
    draft = _MAKERS[task](state)
    if task == "counting":  # counts read in order; balanced counts balance the letters
        options = tuple(str(c) for c in range(1, MAX_COUNT + 1))
        letter = LETTERS[options.index(draft.answer)]
    else:
        options, letter = state.options(draft.answer, draft.distractors)
    image, drawn = _render(list(zip(draft.entities, draft.cells)), size, draw_rng)
    question = Question(
        id=f"eg{index:05d}",
        image=f"{IMAGES_DIR}/eg{index:05d}.png",
        task=task,
        question=draft.text,
        options=options,
        answer=letter,
        cells=tuple(draft.cells),
        entities=tuple(drawn),
    )
    return question, image


# -- scoring --------------------------------------------------------------------------------
def parse_letter(prediction: object) -> str | None:
    """'B', 'b', 'B.', '(B)', 'B. circle' -> 'B'; anything else -> None (malformed)."""
    if not isinstance(prediction, str):
        return None
    text = prediction.strip().lstrip("(").upper()
    if text[:1] in LETTERS and (len(text) == 1 or not text[1].isalnum()):
        return text[0]
    return None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class GridScore:
    """EntityGrid-QA scores; None where a cell or task has no questions."""

    accuracy: float | None  # all questions
    accuracy_center: float | None  # mean of a_i over CENTER_CELLS
    accuracy_edge: float | None  # mean of a_i over EDGE_CELLS
    discrepancy: float | None  # accuracy_center - accuracy_edge
    per_cell: dict[str, float | None]  # a_i: mean over tasks of the task's accuracy at cell i
    per_task: dict[str, float | None]
    per_task_cell: dict[str, dict[str, float | None]]
    n: int  # questions
    correct: int
    missing: int  # questions without a prediction (counted wrong)
    malformed: int  # unreadable lines + predictions that are no letter (wrong)
    extra: int  # predictions for ids not in the benchmark (ignored)

    def to_json(self) -> dict:
        return asdict(self)


def score(questions: Sequence[Question], predictions: Mapping[str, object], *, unreadable: int = 0) -> GridScore:
    """Score raw predictions (id -> letter text) as docs/method.md#entitygrid defines it."""
    right: dict[str, bool] = {}
    malformed = unreadable
    for q in questions:
        letter = parse_letter(predictions[q.id]) if q.id in predictions else None
        malformed += q.id in predictions and letter is None
        right[q.id] = letter == q.answer
    hits: dict[tuple[str, int], list[bool]] = {}
    for q in questions:
        for cell in set(q.cells):  # a question about two entities counts for each of its cells
            hits.setdefault((q.task, cell), []).append(right[q.id])
    per_task_cell = {t: {str(c): _mean(hits.get((t, c), [])) for c in CELLS} for t in TASKS}
    per_cell = {str(c): _mean([v for t in TASKS if (v := per_task_cell[t][str(c)]) is not None]) for c in CELLS}
    center = _mean([v for c in CENTER_CELLS if (v := per_cell[str(c)]) is not None])
    edge = _mean([v for c in EDGE_CELLS if (v := per_cell[str(c)]) is not None])
    ids = {q.id for q in questions}
    return GridScore(
        accuracy=_mean([right[q.id] for q in questions]),
        accuracy_center=center,
        accuracy_edge=edge,
        discrepancy=None if center is None or edge is None else center - edge,
        per_cell=per_cell,
        per_task={t: _mean([right[q.id] for q in questions if q.task == t]) for t in TASKS},
        per_task_cell=per_task_cell,
        n=len(questions),
        correct=sum(right.values()),
        missing=sum(q.id not in predictions for q in questions),
        malformed=malformed,
        extra=sum(i not in ids for i in predictions),
    )


# -- heat map -------------------------------------------------------------------------------
HEAT_CELL = 180  # px per grid cell in the heat map
HEAT_MARGIN = 24
HEAT_TOP = 76  # room for the title and the summary line
HEAT_BOTTOM = 64  # room for the colour bar
BORDER_RGB = (230, 0, 90)  # tile borders: dashed, in a colour the colour map never uses
VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))  # 0 -> 1


def _colour(value: float) -> tuple[int, int, int]:
    position = min(max(value, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(position), len(VIRIDIS) - 2)
    t = position - i
    return tuple(round(a + (b - a) * t) for a, b in zip(VIRIDIS[i], VIRIDIS[i + 1]))


def _cell_fill(value: float | None) -> tuple[int, int, int]:
    return (210, 210, 210) if value is None else _colour(value)


def _dashed(draw, start: tuple[int, int], end: tuple[int, int], width: int, dash: int = 14) -> None:
    (x0, y0), (x1, y1) = start, end
    length = max(abs(x1 - x0), abs(y1 - y0))
    for offset in range(0, length, 2 * dash):
        a, b = offset / length, min(offset + dash, length) / length
        draw.line(
            (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
            fill=BORDER_RGB,
            width=width,
        )


def render_heatmap(result: GridScore, path: Path, title: str = "EntityGrid-QA") -> None:
    """Write a PNG of a_i on the 3 x 3 grid, tile borders dashed, the summary above."""
    from PIL import Image, ImageDraw, ImageFont

    side = GRID * HEAT_CELL
    image = Image.new("RGB", (side + 2 * HEAT_MARGIN, HEAT_TOP + side + HEAT_BOTTOM), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    small, medium, large = (ImageFont.load_default(size=s) for s in (14, 18, 36))

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    draw.text((HEAT_MARGIN, 12), title, font=medium, fill=(0, 0, 0))
    summary = (
        f"accuracy {pct(result.accuracy)}   center {pct(result.accuracy_center)}   edge "
        f"{pct(result.accuracy_edge)}   discrepancy {pct(result.discrepancy)}   n={result.n}"
    )
    draw.text((HEAT_MARGIN, 42), summary, font=small, fill=(60, 60, 60))
    for cell in CELLS:
        row, col = divmod(cell - 1, GRID)
        x, y = HEAT_MARGIN + col * HEAT_CELL, HEAT_TOP + row * HEAT_CELL
        value = result.per_cell[str(cell)]
        draw.rectangle((x, y, x + HEAT_CELL, y + HEAT_CELL), fill=_cell_fill(value), outline=(255, 255, 255), width=2)
    middle = HEAT_MARGIN + side // 2, HEAT_TOP + side // 2
    _dashed(draw, (middle[0], HEAT_TOP), (middle[0], HEAT_TOP + side), width=4)
    _dashed(draw, (HEAT_MARGIN, middle[1]), (HEAT_MARGIN + side, middle[1]), width=4)
    for cell in CELLS:  # labels last, outlined in the cell's colour so the dashes never hide them
        row, col = divmod(cell - 1, GRID)
        x, y = HEAT_MARGIN + col * HEAT_CELL, HEAT_TOP + row * HEAT_CELL
        value = result.per_cell[str(cell)]
        fill = _cell_fill(value)
        ink = (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 140 else (255, 255, 255)
        kind = "center" if cell in CENTER_CELLS else "edge"
        draw.text((x + 8, y + 6), f"cell {cell} · {kind}", font=small, fill=ink)
        centre = (x + HEAT_CELL / 2, y + HEAT_CELL / 2)
        left, top, right, bottom = draw.textbbox(centre, pct(value), font=large, anchor="mm")
        draw.rectangle((left - 6, top - 6, right + 6, bottom + 6), fill=fill)
        draw.text(centre, pct(value), font=large, fill=ink, anchor="mm")
    bar_y = HEAT_TOP + side + 16
    for x in range(side):
        draw.line((HEAT_MARGIN + x, bar_y, HEAT_MARGIN + x, bar_y + 12), fill=_colour(x / (side - 1)))
    draw.text((HEAT_MARGIN, bar_y + 16), "0%", font=small, fill=(60, 60, 60))
    draw.text((HEAT_MARGIN + side, bar_y + 16), "100%", font=small, fill=(60, 60, 60), anchor="ra")
    draw.text((HEAT_MARGIN + side / 2, bar_y + 16), "dashed: tile borders", font=small, fill=BORDER_RGB, anchor="ma")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
    except OSError as e:
        raise DocreadError("unwritable", f"cannot write the heat map {path}: {e.strerror or e}") from None
