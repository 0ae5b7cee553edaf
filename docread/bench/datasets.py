"""Readers of the public benchmarks' official annotation files, and of gold / prediction files.

Users bring the data (nothing is downloaded). Supported annotation formats:
- DocVQA: {"data": [{"questionId", "question", "image": "documents/x.png", "answers": [...]}]}
- InfographicVQA: the same, the image named by "image_local_name" (or "image")
- ChartQA: [{"imgname", "query", "label"}]; a question's id is its position in the list
- TextVQA: {"data": [{"question_id", "question", "image_id", "answers": [...]}]}, images <image_id>.jpg
Gold files for `bench score` may also be JSON Lines of {"id", "answers": [...]} or {"id", "answer"}.
Prediction files: JSON Lines of {"id", "prediction"} (what docread writes) or {"id", "answer"}, or the
official result lists [{"questionId" | "question_id", "answer"}]. Ids are compared as strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from docread.errors import DocreadError, UsageError
from docread.records import read_json_or_lines

_FORMATS = {  # keys each record of a dataset must have, for one clear error when they are missing
    "docvqa": ("questionId", "question", "image"),
    "infovqa": ("questionId", "question"),
    "chartqa": ("imgname", "query", "label"),
    "textvqa": ("question_id", "question", "image_id"),
}
_ID_KEYS = ("id", "questionId", "question_id")


@dataclass(frozen=True)
class Sample:
    """One question of a benchmark."""

    id: str
    question: str
    image: str  # file name relative to the images folder ("" when the question has none)
    answers: tuple[str, ...]  # gold answers (a letter for multiple choice); empty for test splits without them
    options: tuple[str, ...] = ()  # multiple choice: the options as asked, lettered A, B, ...
    groups: Mapping[str, str] = field(default_factory=dict)  # what the metric groups by: split, category, figure...
    inline_image: str | None = None  # base64 image held in the annotations (MMBench's TSV)


_load_json = read_json_or_lines  # a JSON document, or the records of a JSON Lines file


def _records(data, path: Path) -> list[dict]:
    records = data["data"] if isinstance(data, dict) and "data" in data else data
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DocreadError("bad_annotations", f'{path}: expected a list of question objects or {{"data": [...]}}')
    return records


def _answers(record: dict) -> tuple[str, ...]:
    answers = record.get("answers", record.get("label", record.get("answer")))
    if answers is None:
        return ()
    return tuple(str(a) for a in answers) if isinstance(answers, list) else (str(answers),)


def _sample(dataset: str, record: dict, index: int) -> Sample:
    if dataset == "chartqa":
        return Sample(str(index), record["query"], record["imgname"], _answers(record))
    if dataset == "textvqa":
        return Sample(str(record["question_id"]), record["question"], f"{record['image_id']}.jpg", _answers(record))
    image = record.get("image_local_name") or record.get("image")
    return Sample(str(record["questionId"]), record["question"], str(image), _answers(record))


def read_annotations(path: Path, dataset: str) -> list[Sample]:
    """The questions of an official annotation file of `dataset` (docvqa, infovqa, chartqa, textvqa)."""
    if dataset not in _FORMATS:
        raise UsageError(f"dataset {dataset!r}: choose {', '.join(_FORMATS)}")
    records = _records(_load_json(path), path)
    needed = _FORMATS[dataset]
    for index, record in enumerate(records):
        missing = [key for key in needed if key not in record]
        if dataset == "infovqa" and not ("image_local_name" in record or "image" in record):
            missing.append("image_local_name")
        if missing:
            raise DocreadError(
                "bad_annotations",
                f"{path}: question {index} has no {', '.join(missing)}; "
                f"is this the official {dataset} annotation file?",
            )
    return [_sample(dataset, record, index) for index, record in enumerate(records)]


def _gold_id(record: dict, index: int) -> str | None:
    if "imgname" in record:  # ChartQA: no ids, the position in the list is the id
        return str(index)
    return next((str(record[k]) for k in _ID_KEYS if k in record), None)


def read_gold(path: Path) -> dict[str, tuple[str, ...]]:
    """Gold answers by question id, from an official annotation file or JSON Lines {id, answers}."""
    gold: dict[str, tuple[str, ...]] = {}
    for index, record in enumerate(_records(_load_json(path), path)):
        key, answers = _gold_id(record, index), _answers(record)
        if key is None:
            raise DocreadError(
                "bad_gold",
                f"{path}: record {index} has no id (id, questionId, question_id) and is no ChartQA question (imgname)",
            )
        if not answers:
            raise DocreadError("bad_gold", f"{path}: question {key} has no gold answers (a test split?)")
        gold[key] = answers
    return gold


def _whole_document(text: str) -> list | None:
    """The records when the whole file is one JSON document (a result list, {"data": [...]}, or
    one record: a JSON Lines file of one line); None when it is JSON Lines of several lines."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        return data["data"] if isinstance(data.get("data"), list) else [data]
    return data if isinstance(data, list) else [data]


@dataclass(frozen=True)
class Predictions:
    """Predictions by question id, and how many records could not be read."""

    answers: dict[str, str]
    malformed: int


def read_predictions(path: Path) -> Predictions:
    """Predictions from JSON Lines {id, prediction} / {id, answer}, or an official result list.

    Unreadable lines (a run killed mid-write, a record without id or text) are counted, not fatal.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is no malformed line
    except FileNotFoundError:
        raise DocreadError("not_found", f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DocreadError("unreadable", f"cannot read {path}: {e}") from None
    records = _whole_document(text)
    if records is None and text.lstrip().startswith("["):
        raise DocreadError("bad_json", f"{path}: starts like a JSON list of results but is not valid JSON")
    if records is None:
        records = []
        for line in text.splitlines():
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    records.append(None)
    answers: dict[str, str] = {}
    malformed = 0
    for record in records:
        key = next((record[k] for k in _ID_KEYS if k in record), None) if isinstance(record, dict) else None
        value = record.get("prediction", record.get("answer")) if key is not None else None
        if key is None or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            malformed += 1
            continue
        answers[str(key)] = str(value)
    return Predictions(answers, malformed)
