"""Intake: files -> pages. The only package that opens input files (their bytes come through
`docread.intake.sources`, bounded by `docread.intake.limits`): `base` (Document, Page, the library boundary),
`pdf` (PyMuPDF), `image` (Pillow).

PDFs go through PyMuPDF, everything else Pillow reads through Pillow. A `Document` lists
its selected pages with their nominal size (PDF pages at `dpi`, images at their pixel size),
and renders a page once, at exactly the size its slicing plan asks for. Every problem a file
can have becomes a `DocreadError` with a stable code and a line saying what to do: each call
into PyMuPDF or Pillow on user data goes through `_boundary`, and reading is bounded in bytes
and in time (the time intake itself spends on the file, never the model's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container

from docread.errors import DocreadError
from docread.intake.base import MAGIC_WINDOW, PDF_MAGIC, Document, Page, check_page
from docread.intake.image import open_image, to_rgb
from docread.intake.limits import DEFAULT_DPI, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, Clock, Limits
from docread.intake.pdf import open_pdf
from docread.intake.sources import expand_paths, parse_pages, read_input, supported_suffixes, validate_pages_spec

__all__ = [
    "DEFAULT_DPI",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_TIMEOUT_S",
    "Document",
    "Limits",
    "Page",
    "expand_paths",
    "open_bytes",
    "open_document",
    "parse_pages",
    "supported_suffixes",
    "to_rgb",
    "validate_pages_spec",
]  # the names callers use, wherever they live


def open_document(
    path: str,
    *,
    pages: str | None = None,
    password: str | None = None,
    dpi: float = DEFAULT_DPI,
    limits: Limits | None = None,
) -> Document:
    """Open a PDF or image file (`-` = stdin) and select its pages."""
    limits = limits or Limits()
    validate_pages_spec(pages)
    clock = Clock(limits.timeout_s, path)
    with clock.running():
        data = read_input(path, limits, clock)
        return _open_data(path, data, hashlib.sha256(data).hexdigest(), pages, password, dpi, limits, clock)


def open_bytes(
    data: bytes,
    name: str,
    *,
    pages: str | None = None,
    password: str | None = None,
    dpi: float = DEFAULT_DPI,
    limits: Limits | None = None,
    decoded: Container[str] = (),
    sha256: str | None = None,
) -> Document:
    """Open a PDF or image held in memory (an upload) and select its pages; `name` only labels it
    (records and messages), it is never opened. `decoded`: the sha256s of bytes known to decode (a server's
    cached pages'): an image among them is not decoded to check it, only if a page of it is rendered.
    `sha256`: the bytes' digest when the caller has it (a server's memo of decoded uploads), else computed."""
    limits = limits or Limits()
    validate_pages_spec(pages)
    if not data:
        raise DocreadError("empty", f"{name}: the file is empty (0 bytes); re-export or re-download it")
    if len(data) > limits.max_bytes:
        raise DocreadError("too_large", f"{name}: over {limits.max_bytes:,} bytes, the limit for one input")
    clock = Clock(limits.timeout_s, name)
    with clock.running():
        data = bytes(data)
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        return _open_data(name, data, sha256, pages, password, dpi, limits, clock, decoded)


def _open_data(
    path: str,
    data: bytes,
    sha256: str,
    pages: str | None,
    password: str | None,
    dpi: float,
    limits: Limits,
    clock: Clock,
    decoded: Container[str] = (),
) -> Document:
    document = (
        open_pdf(path, data, password, dpi, limits)
        if PDF_MAGIC in data[:MAGIC_WINDOW]
        else open_image(path, data, limits, decode=sha256 not in decoded, sha256=sha256)
    )
    document.sha256, document._clock = sha256, clock
    try:
        selected = parse_pages(pages, document.page_count, name=path)
        document.pages = [check_page(path, document.pages[n - 1], limits) for n in selected]
        document._note_repair()
        clock.check()
    except DocreadError:
        document.close()
        raise
    return document
