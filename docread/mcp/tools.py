"""The MCP tools' work, through the CLI's library calls: `ask` (ask --json's records), `ocr` (ocr --json's),
`extract` (extract's record), `locate` (locate --json's occurrences), `inspect` (inspect --json's pages).
Each runs in a worker thread; `Progress` turns a read's page events into the SDK's progress notifications."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Optional

import anyio.from_thread
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict, create_model

from docread.errors import DocreadError
from docread.events import Events
from docread.records import locate_record, ocr_record
from docread.results import Answer
from docread.settings import Settings


# -- outputs: each tool's structured content (records keep any key added later: extra="allow") ------------
class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


AskRecord = create_model(
    "AskRecord",
    __base__=_Record,
    __doc__="One question's answer over the document, as ask --json writes it (fields of docread.results.Answer).",
    **{f.name: (Optional[Any], None) for f in dataclass_fields(Answer)},  # noqa: UP045
    status=(str, ...),
    pages=(list[dict], []),
    errors=(list[dict], []),
    pages_read=(list[int], []),
)


class AskOutput(BaseModel):
    answers: list[AskRecord]  # type: ignore[valid-type]  one per question, in order
    warnings: list[str] = []


class OcrRecord(_Record):
    """One page's transcription, as ocr --json writes it."""

    file: str
    page: Optional[int] = None  # noqa: UP045
    text: Optional[str] = None  # noqa: UP045
    status: str


class OcrOutput(BaseModel):
    pages: list[OcrRecord]
    warnings: list[str] = []


class Occurrence(_Record):
    """One occurrence of a text, as locate --json writes it."""

    file: str
    query: str
    page: int
    text: str
    bbox: list[float]
    bbox_px: list[float]
    match: str


class LocateOutput(BaseModel):
    occurrences: list[Occurrence]
    not_found: list[str] = []  # texts found nowhere
    page_errors: list[dict] = []  # pages whose text could not be read: {page, code, message}


class ExtractedField(_Record):
    value: Any = None
    raw: Optional[str] = None  # noqa: UP045
    page: Optional[int] = None  # noqa: UP045
    score: Optional[float] = None  # noqa: UP045
    evidence: list[dict] = []
    error: Optional[str] = None  # noqa: UP045


class ExtractOutput(BaseModel):
    """extract's record for the document."""

    file: str
    fields: dict[str, ExtractedField]
    warnings: list[str] = []


class InspectRecord(_Record):
    """One page's slicing (or an error record), as inspect --json writes it."""

    file: Optional[str] = None  # noqa: UP045
    page: Optional[int] = None  # noqa: UP045


class InspectOutput(BaseModel):
    pages: list[InspectRecord]


# -- progress ---------------------------------------------------------------------------------------
class Progress(Events):
    """A read's events, from its worker thread: each page as a progress notification, warnings kept."""

    def __init__(self, ctx):
        self.ctx, self.warnings = ctx, []

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def page(self, number: int, index: int, total: int) -> None:
        if self.ctx is not None:
            anyio.from_thread.run(self.ctx.report_progress, index - 1, total, f"reading page {number}")


# -- the work, in a worker thread ----------------------------------------------------------------------
class Work:
    """The server's state: where documents may come from, the limits, and the one model (loaded on first use,
    then shared; model reads run one at a time)."""

    def __init__(self, documents, limits, load_reader):
        self.documents, self.limits, self._load = documents, limits, load_reader
        self._reader = None
        self._lock = threading.Lock()

    def reader(self):
        if self._reader is None:
            try:
                self._reader = self._load()
            except DocreadError as e:
                raise ToolError(f"the model could not be loaded: {e.message}") from None
        return self._reader

    def ask(self, doc: tuple, questions: list[str], settings: Settings, events: Progress) -> dict:
        with self._lock, self.documents.opened(*doc, settings, self.limits) as document:
            reader = self.reader()
            results = _library(
                lambda: reader.ask(document, questions, settings=settings, limits=self.limits, events=events)
            )
        return {"answers": [r.to_json() for r in results], "warnings": events.warnings}

    def ocr(self, doc: tuple, settings: Settings, events: Progress) -> dict:
        from docread.document import ocr_document
        from docread.settings import OcrSource

        with self._lock, self.documents.opened(*doc, settings, self.limits) as document:
            if settings.source == OcrSource.text:  # the text layer or OCR: no model loaded
                read = ocr_document(None, document, settings=settings, limits=self.limits, events=events)
            else:
                read = self.reader().ocr(document, settings=settings, limits=self.limits, events=events)
            pages = _library(lambda: [ocr_record(document.name, r) for r in read])
        return {"pages": pages, "warnings": events.warnings}

    def extract(self, doc: tuple, fields: list[str] | None, schema: dict | None, settings, events) -> dict:
        from docread.extract import extract_document, field_specs, schema_fields

        if bool(fields) == bool(schema):
            raise ToolError("give `fields` (NAME or NAME:TYPE each) or a JSON Schema `schema`, one of the two")
        if schema:
            _check_schema(schema)
        specs = _library(lambda: schema_fields(schema) if schema else field_specs(fields))
        with self._lock, self.documents.opened(*doc, settings, self.limits) as document:
            reader = self.reader()
            record = _library(
                lambda: extract_document(
                    reader, document, specs, schema=schema, settings=settings, limits=self.limits, events=events
                )
            )
        return {**record, "warnings": events.warnings}

    def locate(self, doc: tuple, texts: list[str], settings: Settings) -> dict:
        from docread.text.evidence import locate_document

        occurrences, seen, page_errors = [], {}, []
        with self.documents.opened(*doc, settings, self.limits) as document:
            for located in _library(
                lambda: list(locate_document(document, texts, text=settings.text, dpi=settings.dpi))
            ):
                if located.error is not None:
                    page_errors.append({"page": located.page, **located.error.to_json()})
                for query, found in located.found.items():
                    seen[query] = seen.get(query, 0) + len(found)
                    occurrences += [locate_record(document.name, query, o) for o in found]
        missing = [q for q, n in seen.items() if n == 0]
        return {"occurrences": occurrences, "not_found": missing, "page_errors": page_errors}

    def inspect(self, doc: tuple, model: str | None, settings: Settings) -> dict:
        from docread.inspection import inspect_paths
        from docread.model.presets import resolve_preset

        label, data = self.documents.source(*doc)
        preset = _library(lambda: resolve_preset(model))
        with tempfile.TemporaryDirectory(prefix="docread-mcp-") as folder:
            path = label
            if data is not None:  # inspect reads files: the content as one, named as sent
                path = str(Path(folder) / (Path(label).name or "document"))
                Path(path).write_bytes(data)
            records = _library(
                lambda: list(
                    inspect_paths(
                        [path],
                        preset=preset,
                        pages=settings.pages,
                        max_slices=settings.max_slices,
                        dpi=settings.dpi,
                        password=settings.password,
                        limits=self.limits,
                        view=settings.view,
                    )
                )
            )
        return {"pages": [{**r, "file": label} if data is not None else r for r in records]}


def _library(call):
    """A library call whose known failures (a bad file, a bad field spec) are tool errors."""
    try:
        return call()
    except DocreadError as e:
        raise ToolError(e.message) from None


def _check_schema(schema: dict) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise ToolError(f"schema: not a valid JSON Schema ({e.message})") from None
