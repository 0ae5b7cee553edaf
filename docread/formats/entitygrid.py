"""The EntityGrid-QA question format (docs/method.md#entitygrid): questions.jsonl, its cells and prompt.

Benchmarks write and score these questions (`docread.bench.entitygrid`), training reads them
(`docread.train.data`); neither imports the other, both import this.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from docread.errors import DocreadError
from docread.views.prompt import multiple_choice

TASKS = ("recognition", "position", "counting")
LETTERS = ("A", "B", "C", "D")
GRID = 3  # 3 x 3 cells
CELLS = tuple(range(1, GRID * GRID + 1))
CENTER_CELLS = (1, 3, 7, 9)  # inside one tile each
EDGE_CELLS = (2, 4, 5, 6, 8)  # cut by one tile border (5: by both)
QUESTIONS_FILE = "questions.jsonl"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class Question:
    """One line of questions.jsonl."""

    id: str
    image: str  # path relative to the benchmark folder
    task: str  # one of TASKS
    question: str
    options: tuple[str, ...]  # 4 option texts, for letters A-D
    answer: str  # the right letter
    cells: tuple[int, ...]  # cells of the entities asked about, in the order the question names them
    entities: tuple[dict, ...] = ()  # everything drawn: name, kind, cell, box [x0, y0, x1, y1] in pixels

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> Question:
        question = cls(
            id=str(record["id"]),
            image=record["image"],
            task=record["task"],
            question=record["question"],
            options=tuple(record["options"]),
            answer=record["answer"],
            cells=tuple(int(c) for c in record["cells"]),
            entities=tuple(record.get("entities", ())),
        )
        if question.task not in TASKS or question.answer not in LETTERS[: len(question.options)]:
            raise ValueError(f"task {question.task!r} / answer {question.answer!r} out of range")
        if not question.cells or not set(question.cells) <= set(CELLS):
            raise ValueError(f"cells {list(question.cells)} must be among 1-9")
        return question


def prompt(question: Question) -> str:
    """The LLaVA multiple-choice prompt: question, lettered options, instruction."""
    return multiple_choice(question.question, list(question.options), "".join(LETTERS))


def read_questions(directory: Path) -> list[Question]:
    """The questions of a generated benchmark folder."""
    path = Path(directory) / QUESTIONS_FILE
    if not path.is_file():
        raise DocreadError(
            "not_found",
            f"{path} not found; create the benchmark with `docread bench entitygrid generate --out {directory}`",
        )
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            questions.append(Question.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise DocreadError("bad_questions", f"{path} line {number}: {e}; regenerate the benchmark") from None
    return questions
