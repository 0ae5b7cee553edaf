"""Benchmark runs: ask a loaded model every question, append predictions, resume after a kill.

The prediction file is JSON Lines, one complete line written and flushed per question,
so a killed run loses at most the line being written; `PredictionLog(resume=True)`
drops such a half line and skips the ids already answered. The run loops are
generators of records: the CLI renders progress, nothing here prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from docread.bench.datasets import Sample
from docread.bench.entitygrid import LETTERS, Question, prompt
from docread.errors import DocreadError, UsageError

if TYPE_CHECKING:
    from docread.api import DocReader

SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's prompt for short-answer VQA
DEFAULT_MAX_NEW_TOKENS = 32  # benchmark answers are a few words


def _complete_ids(path: Path) -> set[str]:
    """Ids answered in `path`, after cutting off a half-written last line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)
        data = data[: data.rfind(b"\n") + 1]
    done = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a damaged line: its question is asked again, the later line wins when scoring
        if isinstance(record, dict) and "id" in record and "prediction" in record:
            done.add(str(record["id"]))
    return done


class PredictionLog:
    """An append-only JSON Lines file of {id, prediction, ...} records."""

    def __init__(self, path: Path, *, resume: bool = False):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.is_file() and self.path.stat().st_size:
            if not resume:
                raise UsageError(f"{self.path} already holds predictions: pass --resume to continue that run, "
                                 f"or remove the file to start over")
            self.done = _complete_ids(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", newline="\n")
        except OSError as e:
            raise DocreadError("unwritable", f"cannot write predictions to {self.path}: {e.strerror or e}") from None

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")  # one write per line: no interleaving
        self._file.flush()
        self.done.add(str(record["id"]))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "PredictionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_entitygrid(reader: "DocReader", directory: Path, questions: Sequence[Question], log: PredictionLog, *,
                   max_slices: int | None = None) -> Iterator[dict]:
    """Ask each question as a multiple-choice prompt; yield {id, prediction, scores} or {id, error}."""
    for question in questions:
        letters = list(LETTERS[: len(question.options)])
        try:
            index, scores = reader.choose(str(Path(directory) / question.image), prompt(question), letters,
                                          max_slices=max_slices)
        except DocreadError as e:
            yield {"id": question.id, "error": e.to_json()}
            continue
        record = {"id": question.id, "prediction": letters[index], "scores": [round(float(s), 4) for s in scores]}
        log.write(record)
        yield record


def image_path(images: Path, sample: Sample) -> Path:
    """The sample's image under `images`, as named or by its bare file name."""
    for candidate in (Path(images) / sample.image, Path(images) / Path(sample.image).name):
        if candidate.is_file():
            return candidate
    raise DocreadError("not_found", f"question {sample.id}: image {sample.image} not found under {images}")


def run_open(reader: "DocReader", images: Path, samples: Sequence[Sample], log: PredictionLog, *,
             max_slices: int | None = None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Iterator[dict]:
    """Ask each question for a short answer; yield {id, prediction, score} or {id, error}."""
    for sample in samples:
        try:
            answer = reader.ask(str(image_path(images, sample)), f"{sample.question}\n{SHORT_ANSWER}",
                                max_slices=max_slices, max_new_tokens=max_new_tokens)
        except DocreadError as e:
            yield {"id": sample.id, "error": e.to_json()}
            continue
        record = {"id": sample.id, "prediction": answer.answer, "score": answer.score}
        log.write(record)
        yield record
