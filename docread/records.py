"""What each command writes as JSON, typed: an answer (`Answer`), ask's record (`AskRecord`), ocr's
(`OcrRecord`), a batch row (`BatchRecord`), an extracted field (`FieldRecord`) and an error (`ErrorRecord`).
Each kind has the same keys whatever happened: an error leaves the unknown values null. The JSON Lines
log they are written to is `docread.jsonlines`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from docread.errors import DocreadError
from docread.jsonlines import JsonLinesLog, read_json_or_lines

ATOMS = (str, int, float, bool, type(None))  # JSON's leaves: immutable, kept as they are


def as_dict(record) -> dict:
    """`dataclasses.asdict(record)` (the same dict for what records hold) without its `copy.deepcopy` call on
    every leaf: a str, number, bool or None is kept (copying it returns it anyway), a plain list or dict is
    rebuilt, anything else is deep-copied. A record's to_json (every answer a server sends) in under half
    the time."""
    return {f.name: _plain(getattr(record, f.name)) for f in fields(record)}


def _plain(value):
    kind = type(value)
    if kind in ATOMS:
        return value
    if kind is list:
        return [_plain(v) for v in value]
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return as_dict(value)
    if isinstance(value, tuple):  # as asdict: a namedtuple stays one
        items = [_plain(v) for v in value]
        return kind(*items) if hasattr(value, "_fields") else kind(items)
    return copy.deepcopy(value)


@dataclass
class ErrorRecord:
    """Why something failed: the `error` object of every record kind."""

    code: str
    message: str

    @classmethod
    def of(cls, error: DocreadError | dict) -> ErrorRecord:
        if isinstance(error, dict):
            return cls(error["code"], error["message"])
        return cls(error.code, error.message)

    def to_json(self) -> dict:
        return as_dict(self)


@dataclass
class Answer:
    """One answer and everything about how it was produced (the CLI's --json object)."""

    file: str
    page: int
    question: str
    answer: str
    score: float | None  # mean token log-probability of the answer
    model: str
    rows: int
    cols: int
    tiles: int
    visual_tokens: int  # global + tiles x tokens per tile
    image_tokens: int  # visual + separators: positions the page takes in the prompt
    prompt_tokens: int  # whole prompt, image positions included
    generated_tokens: int
    max_slices: int  # tile budget used (lower than asked when the context forced it)
    reduced_from: int | None  # the --max-slices asked for, when it had to be reduced
    stopped_by: str  # "eos" or "length"
    timing_ms: dict[str, float] = field(default_factory=dict)  # render, encode, prefill, decode
    view: str = "hires"  # "hires" (docread's tiles), "native" (the checkpoint's own), "none" (asked without an image)
    evidence: list[dict] = field(default_factory=list)  # where the answer occurs in the page's text
    grounded: bool | None = False  # every value of the answer found in the page's text; None: no text checked
    text_prompt: dict | None = None  # page text given to the model ({source, tokens, cut}); None: image alone

    def to_json(self) -> dict:
        return as_dict(self)


@dataclass
class AskRecord(Answer):
    """`ask --json`'s object: one question over the pages read, the best page's Answer fields first."""

    status: str = "ok"  # ok | error (no page could answer)
    error: dict | None = None  # ErrorRecord of the first page that failed, when none answered
    pages: list[dict] = field(default_factory=list)  # every page's {page, answer, score}
    errors: list[dict] = field(default_factory=list)  # every failed page's {page, code, message}
    repaired: bool = False  # MuPDF repaired the file
    pages_read: list[int] = field(default_factory=list)
    page_selection: list[dict] = field(default_factory=list)  # the pages this question read, and why

    @classmethod
    def answered(cls, best: Answer, question: str, **rest: Any) -> AskRecord:
        """`best`'s fields as they are (shared, not copied: `to_json` copies them once), and `rest`."""
        return cls(**{**{f.name: getattr(best, f.name) for f in fields(Answer)}, "question": question}, **rest)

    @classmethod
    def failed(cls, file: str, question: str, error: DocreadError, **rest: Any) -> AskRecord:
        unknown = {f.name: None for f in fields(Answer)}
        unknown.update(file=file, question=question, timing_ms={}, view=None, evidence=[], grounded=False)
        return cls(**unknown, status="error", error=ErrorRecord.of(error).to_json(), **rest)


@dataclass
class OcrRecord:
    """`ocr --json`'s object (and /v1/documents/ocr's): one page's transcription."""

    file: str
    page: int | None
    text: str | None
    status: str  # ok | error
    error: dict | None
    score: float | None
    model: str | None
    rows: int | None
    cols: int | None
    stopped_by: str | None
    timing_ms: dict[str, float]
    view: str | None
    source: str | None = None  # model | layer (the PDF's text layer) | ocr (rapidocr)
    confidence: float | None = None  # OCR's mean character confidence, 0-1 (null unless OCR read the page)

    def to_json(self) -> dict:
        return as_dict(self)


LOCATE_KEYS = ("page", "text", "bbox", "bbox_px", "match", "lines")  # an occurrence's, after file and query


def locate_record(file: str, query: str, occurrence: dict) -> dict:
    """One occurrence of `query` as `locate --json` writes it (and MCP's `locate` returns it)."""
    return {"file": file, "query": query, **{k: occurrence[k] for k in LOCATE_KEYS}}


def ocr_record(file: str, result) -> dict:
    """One page's transcription (a `docread.document.PageAnswer` from `ocr_document`) as ocr --json writes it."""
    answer = result.answer
    if answer is None:
        error = ErrorRecord.of(result.error).to_json()
        blank = OcrRecord(file, result.page, None, "error", error, None, None, None, None, None, {}, None)
        blank.source = getattr(result, "source", None)
        return blank.to_json()
    return OcrRecord(
        file,
        result.page,
        answer.answer,
        "ok",
        None,
        answer.score,
        answer.model,
        answer.rows,
        answer.cols,
        answer.stopped_by,
        answer.timing_ms,
        answer.view,
        getattr(result, "source", "model"),
        getattr(result, "confidence", None),
    ).to_json()


@dataclass
class BatchRecord:
    """One `batch` row: a (file, page, question) answered or failed. `key` names the (file, sha256, page,
    question); `settings` is the digest of what shaped the answer (`Settings.digest`)."""

    key: str
    file: str
    sha256: str | None
    page: int | None  # None: the file could not be opened
    question: str
    answer: str | None
    score: float | None
    status: str  # ok | error
    error: dict | None
    degraded: bool  # the page was re-encoded with fewer tiles to fit GPU memory
    model: str | None
    rows: int | None
    cols: int | None
    visual_tokens: int | None
    timing_ms: dict[str, float]
    evidence: list[dict]
    grounded: bool | None
    repaired: bool | None  # None: not known (the file could not be opened)
    view: str
    text_prompt: dict | None  # page text given to the model ({source, tokens, cut}); None: image alone
    settings: str

    @classmethod
    def answered(cls, key: str, sha256: str | None, answer: Answer, **rest: Any) -> BatchRecord:
        """From an Answer; `rest`: degraded, repaired, view, settings (and evidence, grounded to override)."""
        known = {"evidence": answer.evidence, "grounded": answer.grounded, **rest}
        return cls(
            key=key,
            file=answer.file,
            sha256=sha256,
            page=answer.page,
            question=answer.question,
            answer=answer.answer,
            score=answer.score,
            status="ok",
            error=None,
            model=answer.model,
            rows=answer.rows,
            cols=answer.cols,
            visual_tokens=answer.visual_tokens,
            timing_ms=answer.timing_ms,
            text_prompt=answer.text_prompt,
            **known,
        )

    @classmethod
    def failed(
        cls,
        key: str,
        file: str,
        sha256: str | None,
        page: int | None,
        question: str,
        error: DocreadError | dict,
        *,
        view: str,
        settings: str,
        repaired: bool | None = None,
        degraded: bool = False,
    ) -> BatchRecord:
        return cls(
            key=key,
            file=file,
            sha256=sha256,
            page=page,
            question=question,
            answer=None,
            score=None,
            status="error",
            error=ErrorRecord.of(error).to_json(),
            degraded=degraded,
            model=None,
            rows=None,
            cols=None,
            visual_tokens=None,
            timing_ms={},
            evidence=[],
            grounded=False,
            repaired=repaired,
            view=view,
            text_prompt=None,
            settings=settings,
        )

    def to_json(self) -> dict:
        return as_dict(self)


@dataclass
class FieldRecord:
    """One field of `extract`'s output (`{"file", "fields": {NAME: FieldRecord}}`)."""

    value: Any  # parsed to the field's type; None when it could not be
    raw: str | None  # the answer as the model gave it
    page: int | None
    score: float | None
    evidence: list[dict]
    error: str | None  # why there is no value (no page answered, or the answer did not parse)

    @classmethod
    def failed(cls, error: str) -> FieldRecord:
        return cls(None, None, None, None, [], error)

    def to_json(self) -> dict:
        return as_dict(self)


__all__ = [
    "Answer",
    "AskRecord",
    "BatchRecord",
    "ErrorRecord",
    "FieldRecord",
    "JsonLinesLog",
    "OcrRecord",
    "ocr_record",
    "locate_record",
    "read_json_or_lines",
]
