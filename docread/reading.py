"""One reader, local or remote: `Reader.ask` and `Reader.ocr` give the same answer objects (DocumentAnswer,
PageAnswer) whether a loaded model reads (`LocalReader`) or a `docread serve` does (`RemoteReader`, an
HTTP client sending every Settings field). `open_reader` makes the choice once, and refuses what a server
cannot honour (another model, an adapter) with one line naming why."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from docread.document import PageAnswer, ask_document, ocr_document, unique_questions
from docread.errors import DocreadError, UsageError
from docread.events import Events
from docread.intake import Document, Limits
from docread.reader import DocReader
from docread.results import Answer, DocumentAnswer
from docread.settings import ONLY_OCR, Settings


@dataclass(frozen=True)
class Upload:
    """A file already read into memory (`name` only labels it): what `chat` holds, sent as is."""

    name: str
    data: bytes


class Reader:
    """What reads a document: `ask` (one DocumentAnswer per question) and `ocr` (one PageAnswer per page)."""

    name: str | None = None  # the model that answers
    adapter: str | None = None
    image_size: int | None = None  # the model's tile size (draws --highlight's grid)

    def ask(
        self,
        source: str | Document,
        questions: Sequence[str],
        *,
        settings: Settings,
        limits: Limits | None = None,
        events: Events | None = None,
        stream: bool = False,
        constrain=None,
    ) -> list[DocumentAnswer]:
        raise NotImplementedError

    def ocr(
        self,
        source: str | Document,
        *,
        settings: Settings,
        limits: Limits | None = None,
        events: Events | None = None,
        stream: bool = False,
    ) -> Iterator[PageAnswer]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Who answers: {"model", "adapter", "where"}."""
        return {"model": self.name, "adapter": self.adapter, "where": "local"}


class LocalReader(Reader):
    """A loaded model reading through `docread.document`."""

    def __init__(self, model: DocReader):
        self.model = model
        self.name, self.adapter = getattr(model, "name", None), getattr(model, "adapter", None)
        preset = getattr(model, "preset", None)
        self.image_size = preset.size if preset is not None else None

    def ask(self, source, questions, *, settings, limits=None, events=None, stream=False, constrain=None):
        """`constrain`: a Constraint for every answer, or one per question (see `ask_document`)."""
        return ask_document(
            self.model,
            source,
            questions,
            settings=settings,
            limits=limits,
            events=events,
            stream=stream,
            constrain=constrain,
        )

    def ocr(self, source, *, settings, limits=None, events=None, stream=False):
        return ocr_document(self.model, source, settings=settings, limits=limits, events=events, stream=stream)


class RemoteReader(Reader):
    """A `docread serve` at `server` (any of http://host:port, .../v1, host:port): the file is uploaded with
    every Settings field, the server's events are replayed into `events`, its records become answers."""

    def __init__(self, server: str, api_key: str | None = None):
        from docread.remote import server_url

        self.server, self.api_key = server_url(server), api_key
        self._health: dict | None = None

    @property
    def health(self) -> dict:
        from docread.remote import server_health

        if self._health is None:
            self._health = server_health(self.server, api_key=self.api_key)
        return self._health

    @property
    def name(self) -> str | None:  # type: ignore[override]
        return self.health.get("model")

    @property
    def adapter(self) -> str | None:  # type: ignore[override]
        return self.health.get("adapter")

    @property
    def image_size(self) -> int | None:  # type: ignore[override]
        return self.health.get("image_size")

    def describe(self) -> dict:
        return {**super().describe(), "where": self.server}

    def ask(self, source, questions, *, settings, limits=None, events=None, stream=False, constrain=None):
        from docread.remote import document_events

        if constrain is not None:
            raise UsageError("constrained decoding runs in the decode loop of a model loaded here, not via --server")

        questions = unique_questions(questions)
        form = {"question": list(questions), **settings_form(settings, exclude=ONLY_OCR)}
        name, data = _upload(source)
        lines = document_events(self.server, "ask", name, form, api_key=self.api_key, limits=limits, data=data)
        return [document_answer(r) for r in replay(lines, events or Events(), stream)]

    def ocr(self, source, *, settings, limits=None, events=None, stream=False):
        from docread.remote import document_events

        name, data = _upload(source)
        form = settings_form(settings)
        lines = document_events(self.server, "ocr", name, form, api_key=self.api_key, limits=limits, data=data)
        for record in replay(lines, events or Events(), stream):
            yield page_answer(record)


def _upload(source: str | Upload | Document) -> tuple[str, bytes | None]:
    """What a remote reader sends: a path (or -) read with intake's bounds, or an Upload's bytes."""
    if isinstance(source, Upload):
        return source.name, source.data
    if isinstance(source, Document):
        raise UsageError("a remote reader uploads a file: give its path (or -), not an opened Document")
    return source, None


def settings_form(settings: Settings, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every Settings field to send but `exclude` (None left out; the password too, which JSON views leave out)."""
    values = {**settings.to_json(), "password": settings.password}
    return {
        k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items() if v is not None and k not in exclude
    }


# -- a server's lines as answers ------------------------------------------------------------------------
def replay(lines, events: Events, stream: bool) -> Iterator[dict]:
    """A server's NDJSON lines: its events replayed into `events` (as a local read reports them; the
    streamed question and chunks only with `stream`), its records yielded."""
    for line in lines:
        event = line.get("event")
        if event is None:
            yield line
        elif event == "warning":
            events.warning(line["message"])
        elif event == "page":
            events.page(line["number"], line["index"], line["total"])
        elif event == "question" and stream:
            events.question(line["question"])
        elif event == "chunk" and stream:
            events.chunk(line["text"])
        elif event == "answered":
            events.answered(PageAnswer(line.get("question", ""), line.get("page"), None))
        elif event == "failed":
            events.failed(line["number"], _error(line["error"]))


def _error(error: dict) -> DocreadError:
    return DocreadError(error.get("code") or "server_error", error.get("message", "server error"))


_ANSWER_FIELDS = [f.name for f in fields(Answer)]


def document_answer(record: dict) -> DocumentAnswer:
    """An ask --json record (`DocumentAnswer.to_json()`) as the DocumentAnswer it came from. The other pages'
    answers carry what the record holds of them (page, answer, score); their other fields are the best's."""
    best = None
    if record.get("status") == "ok":
        best = Answer(**{name: record[name] for name in _ANSWER_FIELDS if name in record})
    pages = [replace(best, page=p["page"], answer=p["answer"], score=p["score"]) for p in record["pages"] if best]
    errors = [(e.get("page"), _error(e)) for e in record.get("errors", [])]
    return DocumentAnswer(
        record["file"],
        record["question"],
        best,
        pages,
        errors,
        record.get("repaired", False),
        record.get("page_selection", []),
    )


_OCR_KEEPS = ("score", "model", "rows", "cols", "stopped_by", "timing_ms", "view")


def page_answer(record: dict) -> PageAnswer:
    """An ocr --json record as the PageAnswer it came from (fields the record lacks are zero)."""
    from docread.views.prompt import OCR_QUESTION

    kept = {"source": record.get("source") or "model", "confidence": record.get("confidence")}
    if record["status"] != "ok":
        return PageAnswer(OCR_QUESTION, record["page"], None, _error(record["error"]), **kept)
    values = dict.fromkeys(_ANSWER_FIELDS, 0) | {"reduced_from": None, "text_prompt": None, "evidence": []}
    values |= {k: record[k] for k in _OCR_KEEPS if k in record}
    values |= {"file": record["file"], "page": record["page"], "question": OCR_QUESTION, "answer": record["text"]}
    return PageAnswer(OCR_QUESTION, record["page"], Answer(**values), **kept)


# -- the choice, made once --------------------------------------------------------------------------------
def open_reader(
    *,
    server: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    adapter: str | None = None,
    device: str = "auto",
    quant: str = "auto",
    offline: bool = False,
    status: Callable[[str], Any] | None = None,
) -> Reader:
    """A RemoteReader of `server`, else the model loaded here. Through a server, `adapter` is refused and
    `model` must be the server's own (its /health names it). `status(text)`: a context manager shown while
    the model loads (a spinner)."""
    if server:
        if adapter:
            raise UsageError("--adapter with --server: the server's model answers; --adapter applies to a local model")
        reader = RemoteReader(server, api_key)
        if model and model != reader.name:
            raise UsageError(
                f"--model {model} with --server: the server answers with {reader.name}; drop --model or serve "
                f"{model} (docread serve --model {model})"
            )
        return reader
    from contextlib import nullcontext

    from docread.loading import load

    with status(f"loading {model or 'the default model'}…") if status else nullcontext():
        loaded = load(model, adapter=adapter, device=device, quant=quant, offline=offline or None)
    return LocalReader(loaded)


__all__ = [
    "Reader",
    "LocalReader",
    "RemoteReader",
    "Upload",
    "open_reader",
    "document_answer",
    "page_answer",
    "settings_form",
]
