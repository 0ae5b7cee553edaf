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
import threading
from collections import OrderedDict
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


HASHED_KEPT = 32 << 20  # bytes of uploads whose sha256 is kept with them (a server hands the same object again)
HASHED_ONE_MAX = 8 << 20  # an upload larger than this is hashed every time


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
) -> Document:
    """Open a PDF or image held in memory (an upload) and select its pages; `name` only labels it
    (records and messages), it is never opened. `decoded`: the sha256s of bytes known to decode (a server's
    cached pages'): an image among them is not decoded to check it, only if a page of it is rendered."""
    limits = limits or Limits()
    validate_pages_spec(pages)
    if not data:
        raise DocreadError("empty", f"{name}: the file is empty (0 bytes); re-export or re-download it")
    if len(data) > limits.max_bytes:
        raise DocreadError("too_large", f"{name}: over {limits.max_bytes:,} bytes, the limit for one input")
    clock = Clock(limits.timeout_s, name)
    with clock.running():
        data = bytes(data)
        return _open_data(name, data, _hashes.sha256(data), pages, password, dpi, limits, clock, decoded)


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


class _Hashes:
    """The sha256 of recent uploads (`open_bytes`) by identity: a server's data: URL memo hands the same bytes object
    again for each request about a kept page, and hashing a letter page's PNG is most of opening it. The
    objects are held here (bytes never change, and a held object's id is not reused), HASHED_KEPT bytes
    of them at most, the least recently used out first."""

    def __init__(self):
        self._kept: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def sha256(self, data: bytes) -> str:
        if type(data) is not bytes or len(data) > HASHED_ONE_MAX:
            return hashlib.sha256(data).hexdigest()
        with self._lock:
            kept = self._kept.get(id(data))
            if kept is not None and kept[0] is data:
                self._kept.move_to_end(id(data))
                return kept[1]
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if id(data) not in self._kept:
                self._kept[id(data)] = (data, digest)
                self._size += len(data)
            while self._size > HASHED_KEPT:
                self._size -= len(self._kept.popitem(last=False)[1][0])
        return digest


_hashes = _Hashes()
