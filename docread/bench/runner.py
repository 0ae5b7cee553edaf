"""Benchmark runs: ask a loaded model every question, append predictions, resume after a kill.

The prediction file is JSON Lines, one complete line written and flushed per question,
so a killed run loses at most the line being written; `prediction_log(resume=True)`
drops such a half line and skips the ids already answered. The run loops are
generators of records: the CLI renders progress, nothing here prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from docread.bench.datasets import Sample
from docread.bench.entitygrid import LETTERS, Question, prompt
from docread.errors import DocreadError
from docread.records import JsonLinesLog

if TYPE_CHECKING:
    from docread.reader import DocReader

SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's prompt for short-answer VQA
DEFAULT_MAX_NEW_TOKENS = 32  # benchmark answers are a few words


def prediction_log(path: Path, *, resume: bool = False) -> JsonLinesLog:
    """The predictions file: {id, prediction, ...} records keyed by `id`."""
    return JsonLinesLog(path, key_field="id", resume=resume)


def run_entitygrid(reader: "DocReader", directory: Path, questions: Sequence[Question], log: JsonLinesLog, *,
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


def run_open(reader: "DocReader", images: Path, samples: Sequence[Sample], log: JsonLinesLog, *,
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
