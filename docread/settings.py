"""Every option that changes what is read or answered, once: its type, default, bounds and help.

`Settings` is validated on construction. The command line (`docread.cli.options.read_options`), the
HTTP API's request models (`docread.serve.protocol`), the remote reader's form (`docread.reading`) and
the batch resume digest are all derived from these fields: adding an option is one edit here.
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from docread.errors import UsageError
from docread.intake.limits import DEFAULT_DPI
from docread.intake.sources import validate_pages_spec

DEFAULT_MAX_NEW_TOKENS = 256  # the longest answer, in tokens, unless a caller says otherwise
OCR_MAX_NEW_TOKENS = 1024  # a page of text is long: `ocr`'s default answer length
DEFAULT_TEXT_TOKENS = 1024  # most tokens of page text added to a prompt (--text-tokens)
DEFAULT_TOP_PAGES = 3  # pages read per question with --pages auto
AUTO_PAGES = "auto"  # the --pages value that asks for ranking (BM25 of each question against the pages)
MAX_SEED = 2**64 - 1  # torch.manual_seed's range


class Task(StrEnum):
    """Prompt presets (docread.views.prompt.TASKS holds their text)."""

    qa = "qa"  # document QA: the question as written
    chart = "chart"  # chart reading: LLaVA's single-word-or-number instruction
    ocr = "ocr"  # transcription


class View(StrEnum):
    """How a page becomes image tokens: docread's HiRes tiles, or the base checkpoint's own way."""

    hires = "hires"  # up to 16 tiles + a global view, SRA, sampler, separators (docs/method.md)
    native = "native"  # exactly LLaVA-NeXT's AnyRes (LLaVA-1.6) or LLaVA-1.5's single view (docread.views.native)


class TextMode(StrEnum):
    """Where a page's own text comes from (evidence, locate, --pages auto, the text prompt)."""

    auto = "auto"  # the text layer when the page has one, else OCR when installed, else none
    layer = "layer"  # the PDF's text layer only
    ocr = "ocr"  # OCR always (an error when the extra is missing)
    off = "off"  # no page text


class OcrSource(StrEnum):
    """Where `ocr` takes a page's text from."""

    auto = "auto"  # the PDF's text layer when the page has one, else the model
    text = "text"  # the text layer, else OCR (rapidocr): never a model
    model = "model"  # the model's transcription


class TextPrompt(StrEnum):
    """Whether the page's text goes into the prompt after the image."""

    auto = "auto"  # a PDF's own text layer, in the hires view only
    on = "on"  # any page text (layer or OCR), any view
    off = "off"  # the image alone


def option(
    default: Any,
    help: str,
    *,
    flags: tuple[str, ...] = (),
    min: float | None = None,
    max: float | None = None,
    max_length: int | None = None,
    answer: bool = True,
    envvar: str | None = None,
    secret: bool = False,
) -> Any:
    """A Settings field with what every surface needs to offer it. `answer`: the value can change an
    answer to a given (file, page, question), so it is part of the resume digest; `secret`: never echoed
    (records, digests, logs)."""
    meta = dict(
        help=help, flags=flags, min=min, max=max, max_length=max_length, answer=answer, envvar=envvar, secret=secret
    )
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """What shapes a read besides the file and the questions. Bad values raise UsageError naming the field."""

    pages: str | None = option(
        None,
        "Pages to read: 1,3-5,-1 (1-based; -1 = last), or auto: the --top-pages pages whose text best "
        "matches each question (BM25; pages without text are read as without --pages).",
        flags=("--pages", "-p"),
        max_length=200,
        answer=False,
    )
    top_pages: int = option(
        DEFAULT_TOP_PAGES, "Pages read per question with --pages auto.", min=1, max=100, answer=False
    )
    task: Task = option(Task.qa, "Prompt preset: qa (document QA), chart, ocr.", flags=("--task", "-t"))
    max_slices: int | None = option(
        None,
        "Most tiles per page besides the global view (default: the model's, 16; 0 = global view only).",
        flags=("--max-slices", "-n"),
        min=0,
        max=64,
    )
    view: View = option(
        View.hires,
        "hires = docread's tiles (up to 16 + a global view); native = exactly the base checkpoint's own "
        "image handling (LLaVA-NeXT's AnyRes, LLaVA-1.5's single view), proven equal to transformers.",
    )
    dpi: float = option(DEFAULT_DPI, "Nominal PDF resolution the grid is planned at.", min=10, max=1200)
    password: str | None = option(
        None, "Password of encrypted PDFs.", max_length=1000, answer=False, envvar="DOCREAD_PASSWORD", secret=True
    )
    text: TextMode = option(
        TextMode.auto,
        "Page text for evidence, locate and the text prompt: auto = the PDF's text layer, else OCR when the "
        "ocr extra is installed; layer; ocr; off.",
    )
    text_prompt: TextPrompt = option(
        TextPrompt.auto,
        "Give the model the page's text after the image: auto = a PDF's own text layer in the hires view; "
        "on = any page text (layer or OCR), any view; off = the image alone.",
    )
    text_tokens: int = option(
        DEFAULT_TEXT_TOKENS,
        "Most tokens of page text in a prompt (a longer text is cut, and records say so).",
        min=1,
        max=8192,
    )
    extractive: bool = option(
        False,
        "Answer only with spans of the page's own text: decoding keeps each answer a substring of it, so every "
        "answer is on the page (needs page text: a text layer, or OCR).",
    )
    source: OcrSource = option(
        OcrSource.auto,
        "ocr's text: auto = the PDF's text layer when the page has one, else the model; text = the text layer, "
        "else OCR (the ocr extra), never loading a model; model = the model's transcription.",
        answer=False,  # ocr's alone: no ask/batch answer depends on it
    )
    max_new_tokens: int = option(DEFAULT_MAX_NEW_TOKENS, "Longest answer, in tokens.", min=1, max=4096)
    temperature: float = option(0.0, "0 = greedy (default).", min=0.0, max=5.0)
    seed: int | None = option(None, "Sampling seed (with --temperature > 0).", min=0, max=MAX_SEED)
    fast: bool = option(
        False, "Compiled decoder with a static KV cache (CUDA; same answers).", answer=False
    )  # same tokens by construction (tested), so not in the digest

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))

    # -- what surfaces need ---------------------------------------------------------------------
    def to_json(self) -> dict:
        """The values as JSON (enums as their strings; secrets left out)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if not f.metadata["secret"]}

    def changed(self) -> dict:
        """The values that differ from the defaults (secrets left out): what a client must send."""
        default = Settings()
        return {k: v for k, v in self.to_json().items() if v != _plain(getattr(default, k))}

    def digest(self, model: str | None = None, adapter: str | None = None) -> str:
        """A short hash of what can change an answer to a given (file, page, question): the answer-shaping
        fields, the model and its adapter. Records carry it; `batch --resume` counts only its own."""
        shaping = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata["answer"]}
        text = json.dumps({"model": model, "adapter": adapter, **shaping}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, base: Settings | None = None) -> Settings:
        """Settings from loosely typed values (a form's strings, JSON): unknown names and bad values raise
        UsageError naming the field (`param`)."""
        known = {f.name: f for f in fields(cls)}
        for name in values:
            if name not in known:
                raise SettingError(name, f"unknown option {name!r}; known: {', '.join(known)}")
        coerced = {name: _coerce(known[name], value) for name, value in values.items()}
        return replace(base, **coerced) if base is not None else cls(**coerced)


# The fields each task offers, for the CLI's commands and MCP's tools alike (ask, chat, batch: all of them
# but ONLY_OCR, which only ocr reads)
ONLY_OCR = ("source",)
TASK_FIELDS = {
    "ocr": ("pages", "source", "max_slices", "view", "dpi", "password", "max_new_tokens", "fast"),
    "extract": (
        *("pages", "max_slices", "view", "text", "text_prompt", "text_tokens"),
        *("dpi", "password", "max_new_tokens", "fast", "extractive"),
    ),
    "locate": ("pages", "text", "password", "dpi"),
    "inspect": ("pages", "max_slices", "view", "dpi", "password"),
}


def setting_flags(f) -> tuple[str, ...]:
    """A Settings field's command-line flags: its declared ones, else --field-name."""
    return f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)


# extract's own defaults (the CLI's, MCP's and extract_document's): values are spans of the page (see
# docread.extract), unless --no-extractive
EXTRACT_DEFAULTS = {"extractive": True}


def setting_fields():
    """Settings' fields in their declared order (with their metadata: help, flags, bounds, ...)."""
    return fields(Settings)


def field_type(f) -> type:
    """The field's value type, `None` aside: int, float, bool, str or an enum."""
    return _TYPES[f.name]


class SettingError(UsageError):
    """A bad value for one field: `param` names it (a request field, a --flag)."""

    def __init__(self, param: str, message: str):
        super().__init__(message, code="invalid_value")
        self.param = param


def _value_types() -> dict[str, type]:
    """Each field's value type from its annotation, `None` aside (`int | None` -> int)."""
    hints = typing.get_type_hints(Settings)
    return {
        name: next(a for a in typing.get_args(hint) or (hint,) if a is not type(None)) for name, hint in hints.items()
    }


_TYPES: dict[str, type] = {}  # filled below, once the class exists (the annotations are its one home)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, StrEnum) else value


def _nullable(f) -> bool:
    return f.default is None


def _checked(f, value: Any) -> Any:
    """`value` for field `f` in its own type, or SettingError naming the field and what it takes."""
    kind, meta, name = _TYPES[f.name], f.metadata, f.name
    if value is None:
        if _nullable(f):
            return None
        raise SettingError(name, f"{name}: a value is required")
    if issubclass(kind, StrEnum):
        try:
            return kind(str(value))
        except ValueError:
            raise SettingError(name, f"{name} {value!r}: choose {', '.join(kind)}") from None
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingError(name, f"{name} {value!r}: true or false")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise SettingError(name, f"{name} {value!r}: {'an integer' if kind is int else 'a number'}")
        value = kind(value)
        if (
            value != value
            or (meta["min"] is not None and value < meta["min"])
            or (meta["max"] is not None and value > meta["max"])
        ):
            raise SettingError(name, f"{name} {value}: between {_bound(meta['min'])} and {_bound(meta['max'])}")
        return value
    if not isinstance(value, str):
        raise SettingError(name, f"{name} {value!r}: text")
    if meta["max_length"] is not None and len(value) > meta["max_length"]:
        raise SettingError(name, f"{name}: at most {meta['max_length']} characters")
    if name == "pages" and value != AUTO_PAGES:
        try:
            validate_pages_spec(value)
        except UsageError as e:
            raise SettingError(name, e.message) from None
    return value


def _bound(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if value == int(value) else f"{value:g}"


def _coerce(f, value: Any) -> Any:
    """A form's or query's text as the field's type (JSON values pass through to the checks)."""
    if not isinstance(value, str):
        return value
    kind, text = _TYPES[f.name], value.strip()
    if text == "" or text.lower() in ("null", "none"):
        return None if _nullable(f) else value
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        return value
    if kind in (int, float):
        try:
            return int(text) if kind is int else float(text)
        except ValueError:
            return value
    return value


_TYPES.update(_value_types())

__all__ = [
    "Settings",
    "SettingError",
    "Task",
    "View",
    "TextMode",
    "TextPrompt",
    "OcrSource",
    "setting_fields",
    "field_type",
]
