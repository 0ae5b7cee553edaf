"""What the MCP tools take: a document (a path under `--root`, or base64 content) and read options derived
from `docread.settings.Settings` (name, type, bounds, choices, help), as the parameters of a tool's
signature the SDK turns into its input schema. Every bad value raises `ToolError` naming the rule."""

from __future__ import annotations

import base64
import binascii
import inspect
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from docread.errors import DocreadError
from docread.settings import SettingError, Settings, field_type, setting_fields

MAX_QUESTIONS = 32  # questions (or texts, or fields) one tool call may ask
DEFAULT_NAME = "document"  # the label of base64 content sent without a filename


def settings_parameters(
    only: Iterable[str] | None = None, defaults: dict | None = None, exclude: Iterable[str] = ()
) -> list[inspect.Parameter]:
    """Each Settings field (or those in `only`, less `exclude`) as a keyword parameter: its type, default,
    bounds and help."""
    wanted, defaults = (set(only) if only is not None else None), defaults or {}
    out = []
    for f in setting_fields():
        if (wanted is not None and f.name not in wanted) or f.name in exclude:
            continue
        meta, kind = f.metadata, field_type(f)
        pairs = (("ge", "min"), ("le", "max"), ("max_length", "max_length"))
        bounds = {k: meta[m] for k, m in pairs if meta[m] is not None}
        default = defaults.get(f.name, f.default)
        annotation = Optional[kind] if f.default is None else kind  # noqa: UP045  a runtime type
        field = Field(description=meta["help"], **bounds)
        out.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, field]
            )
        )
    return out


def settings_from(values: dict[str, Any], fixed: dict | None = None) -> Settings:
    """The validated Settings of a call (the names that are Settings fields, plus a tool's `fixed` ones)."""
    names = {f.name for f in setting_fields()}
    chosen = {k: v for k, v in values.items() if k in names} | (fixed or {})
    try:
        return Settings.from_mapping(chosen)
    except SettingError as e:
        raise ToolError(e.message) from None


def _optional_text(name: str, description: str, **limits) -> inspect.Parameter:
    """A keyword-only tool parameter holding an optional string."""
    annotation = Annotated[Optional[str], Field(description=description, **limits)]  # noqa: UP045
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


DOCUMENT_PARAMETERS = [
    _optional_text(
        "path",
        "A PDF or image under the server's --root folder (relative to it, or absolute); give this or `content`.",
        max_length=4096,
    ),
    _optional_text("content", "The file's bytes, base64 (a data: URL is accepted too); give this or `path`."),
    _optional_text(
        "filename",
        "A name for `content` in records and messages (the type is read from the bytes).",
        max_length=255,
    ),
]


class Documents:
    """Where tools may read: files under `root` (resolved, symlinks followed), or content sent inline."""

    def __init__(self, root: str | Path | None, max_bytes: int):
        self.root = Path(root).resolve() if root is not None else None
        self.max_bytes = max_bytes

    def resolve(self, path: str) -> Path:
        """`path` as a file under root, or ToolError saying which rule it breaks."""
        if self.root is None:
            raise ToolError(
                "paths are refused: this server was started without --root DIR (start it with --root to allow "
                "files under DIR), or send the file as base64 `content`"
            )
        if not path.strip() or "\x00" in path:
            raise ToolError("path: give a file name under --root")
        target = Path(path).expanduser()
        target = (target if target.is_absolute() else self.root / target).resolve()
        if not target.is_relative_to(self.root):
            raise ToolError(f"{path}: outside --root {self.root}; only files under it may be read")
        if not target.is_file():
            raise ToolError(f"{path}: no such file under --root {self.root}")
        return target

    def data(self, content: str) -> bytes:
        """Base64 `content` (or a data: URL) as bytes."""
        text = content.strip()
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ToolError("content: not valid base64; send the file's bytes base64-encoded") from None
        if not data:
            raise ToolError("content: empty; send the file's bytes base64-encoded")
        if len(data) > self.max_bytes:
            raise ToolError(f"content: over {self.max_bytes:,} bytes, the limit for one input")
        return data

    @contextmanager
    def opened(self, path: str | None, content: str | None, filename: str | None, settings: Settings, limits):
        """The Document a tool reads (its pages, password and dpi from `settings`), closed afterwards."""
        from docread.document import open_for_reading
        from docread.intake import open_bytes
        from docread.settings import AUTO_PAGES

        label, data = self.source(path, content, filename)
        pages = None if settings.pages == AUTO_PAGES else settings.pages
        try:
            if data is None:
                document = open_for_reading(label, settings=settings, limits=limits)
            else:
                document = open_bytes(
                    data, label, pages=pages, password=settings.password, dpi=settings.dpi, limits=limits
                )
        except DocreadError as e:
            raise ToolError(e.message) from None
        with document:
            yield document

    def source(self, path: str | None, content: str | None, filename: str | None) -> tuple[str, bytes | None]:
        """(the file's path, None) or (its label, its bytes): exactly one of path and content."""
        if (path is None) == (content is None):
            raise ToolError("give the document as `path` (a file under --root) or as base64 `content`, one of the two")
        if path is not None:
            return str(self.resolve(path)), None
        return (filename or DEFAULT_NAME), self.data(content)


def texts_parameter(name: str, description: str) -> inspect.Parameter:
    """A required list of 1..MAX_QUESTIONS non-empty strings (questions, texts)."""
    item = Annotated[str, Field(min_length=1, max_length=2000)]
    kind = Annotated[list[item], Field(description=description, min_length=1, max_length=MAX_QUESTIONS)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind)
