"""Benchmark runs: ask a loaded model every question, append predictions, resume after a kill.

The prediction file is JSON Lines, one complete line written and flushed per question,
so a killed run loses at most the line being written; `prediction_log(resume=True)`
drops such a half line and skips the ids already answered. The run loops are
generators of records: the CLI renders progress, nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from docread.bench.datasets import Sample
from docread.bench.entitygrid import LETTERS, Question, prompt
from docread.errors import DocreadError
from docread.records import JsonLinesLog
from docread.settings import View
from docread.textcalls import NO_IMAGE_VIEW
from docread.views.prompt import SHORT_ANSWER

if TYPE_CHECKING:
    from PIL import Image

    from docread.reader import DocReader

DEFAULT_MAX_NEW_TOKENS = 32  # benchmark answers are a few words


def prediction_log(path: Path, *, resume: bool = False) -> JsonLinesLog:
    """The predictions file: {id, prediction, ...} records keyed by `id`."""
    return JsonLinesLog(path, key_field="id", resume=resume)


def run_entitygrid(
    reader: DocReader,
    directory: Path,
    questions: Sequence[Question],
    log: JsonLinesLog,
    *,
    max_slices: int | None = None,
    view: str = View.hires,
) -> Iterator[dict]:
    """Ask each question as a multiple-choice prompt; yield {id, prediction, scores} or {id, error}."""
    for question in questions:
        letters = list(LETTERS[: len(question.options)])
        try:
            index, scores = reader.choose(
                str(Path(directory) / question.image), prompt(question), letters, max_slices=max_slices, view=view
            )
        except DocreadError as e:
            yield {"id": question.id, "error": e.to_json()}
            continue
        record = {
            "id": question.id,
            "prediction": letters[index],
            "scores": [round(float(s), 4) for s in scores],
            "view": str(view),
        }
        log.write(record)
        yield record


def image_path(images: Path, sample: Sample) -> Path:
    """The sample's image under `images`, as named or by its bare file name."""
    for candidate in (Path(images) / sample.image, Path(images) / Path(sample.image).name):
        if candidate.is_file():
            return candidate
    raise DocreadError("not_found", f"question {sample.id}: image {sample.image} not found under {images}")


def sample_image(images: Path | None, sample: Sample) -> str | Image.Image:
    """The image to ask about: a file under `images`, or the one the annotations hold (MMBench)."""
    if sample.inline_image is not None:
        import base64
        import io

        from PIL import Image

        try:  # the one place where user data meets the image decoder
            return Image.open(io.BytesIO(base64.b64decode(sample.inline_image))).convert("RGB")
        except Exception as e:  # noqa: BLE001 - any decoder failure is this question's error
            raise DocreadError("unreadable", f"question {sample.id}: its base64 image cannot be read ({e})") from None
    if not sample.image:  # HallusionBench's visual_input 0: run_open asks it text-only
        raise DocreadError("no_image", f"question {sample.id} has no image: it can only be asked by generating")
    if images is None:
        raise DocreadError("not_found", f"question {sample.id}: image {sample.image} needs --images")
    return str(image_path(images, sample))


def short_answer(sample: Sample) -> str:
    return f"{sample.question}\n{SHORT_ANSWER}"


def run_open(
    reader: DocReader,
    images: Path | None,
    samples: Sequence[Sample],
    log: JsonLinesLog,
    *,
    max_slices: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    prompt: Callable[[Sample], str] = short_answer,
    view: str = View.hires,
) -> Iterator[dict]:
    """Ask each question (LLaVA's short-answer prompt unless `prompt` says otherwise) and generate;
    yield {id, prediction, score, view} or {id, error}. A question that comes without an image
    (HallusionBench's visual_input 0) is asked text-only (`DocReader.ask_text`; view "none")."""
    for sample in samples:
        try:
            text_only = not sample.image and sample.inline_image is None
            if text_only:
                answer = reader.ask_text(prompt(sample), max_new_tokens=max_new_tokens)
            else:
                answer = reader.ask(
                    sample_image(images, sample),
                    prompt(sample),
                    max_slices=max_slices,
                    max_new_tokens=max_new_tokens,
                    view=view,
                )
        except DocreadError as e:
            yield {"id": sample.id, "error": e.to_json()}
            continue
        shown = NO_IMAGE_VIEW if text_only else str(view)
        record = {"id": sample.id, "prediction": answer.answer, "score": answer.score, "view": shown}
        log.write(record)
        yield record


def run_likelihood(
    reader: DocReader,
    images: Path | None,
    samples: Sequence[Sample],
    log: JsonLinesLog,
    *,
    prompt: Callable[[Sample], str],
    max_slices: int | None = None,
    view: str = View.hires,
) -> Iterator[dict]:
    """Multiple choice by option likelihood: the letter whose continuation of the prompt the model
    finds likeliest (`DocReader.choose`), as the EntityGrid runner does; yield {id, prediction, scores}."""
    from docread.bench.choice import LETTERS as OPTION_LETTERS

    for sample in samples:
        letters = list(OPTION_LETTERS[: len(sample.options)])
        try:
            index, scores = reader.choose(
                sample_image(images, sample), prompt(sample), letters, max_slices=max_slices, view=view
            )
        except DocreadError as e:
            yield {"id": sample.id, "error": e.to_json()}
            continue
        record = {
            "id": sample.id,
            "prediction": letters[index],
            "scores": [round(float(s), 4) for s in scores],
            "view": str(view),
        }
        log.write(record)
        yield record
