"""PDF pages through PyMuPDF: open (with a password), page sizes at the nominal dpi, rendering at
exactly the size a plan asks for; damaged pages of a repaired file are reported, not answered."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from docread.errors import DocreadError
from docread.intake.base import Document, Page, boundary
from docread.intake.limits import DEFAULT_MAX_PIXELS, Limits

if TYPE_CHECKING:
    from PIL import Image

POINTS_PER_INCH = 72.0
MAX_EMBEDDED_PIXELS = DEFAULT_MAX_PIXELS * 4  # one image inside a PDF page: MuPDF decodes it whole to render


def import_pymupdf():
    """PyMuPDF (ImportError when it is not installed), without its optional layout analyser: when the
    `pymupdf-layout` package is installed, PyMuPDF imports it with itself, and it loads an ONNX model (about a
    second of every start that reads a PDF) that only `Page.get_layout` uses, which docread never calls. A
    program that imports `pymupdf.layout` itself still gets it."""
    left_out = "pymupdf" not in sys.modules and "pymupdf.layout" not in sys.modules
    if left_out:
        sys.modules["pymupdf.layout"] = None  # PyMuPDF's `import pymupdf.layout` raises ImportError, which it allows
    try:
        import pymupdf  # imported already (or by another thread now): this waits until it is whole
    finally:
        if left_out and sys.modules.get("pymupdf.layout", False) is None:
            del sys.modules["pymupdf.layout"]
    return pymupdf


def _pymupdf():
    """PyMuPDF, imported only when a PDF is read: images, `import docread` and the CLI work without it."""
    try:
        return import_pymupdf()
    except ImportError:
        raise DocreadError(
            "pdf_unavailable",
            "reading PDFs needs PyMuPDF, which is not installed here: pip install pymupdf (images are read without it)",
        ) from None


def open_pdf(name: str, data: bytearray, password: str | None, dpi: float, limits: Limits) -> Document:
    pymupdf = _pymupdf()
    pymupdf.TOOLS.mupdf_display_errors(False)  # damaged files: our one line, not MuPDF's warnings
    with boundary(name, "open the PDF"):
        doc = pymupdf.open(stream=data, filetype="pdf")
    document = Document(name, "pdf", 0, [], limits, _renderer=render_pdf)
    document._handle = doc
    try:
        with boundary(name, "open the PDF"):
            _unlock(doc, name, password)
            document.page_count = doc.page_count
        if document.page_count == 0:
            raise DocreadError("no_pages", f"{name}: the PDF has no pages")
        document.pages = _pdf_pages(document, dpi)
    except DocreadError:
        document.close()
        raise
    return document


def _unlock(doc, name: str, password: str | None) -> None:
    if not doc.needs_pass:
        return
    if password is None:
        raise DocreadError("encrypted", f"{name} is password-protected: pass --password (or set DOCREAD_PASSWORD)")
    if not doc.authenticate(password):
        raise DocreadError("wrong_password", f"{name}: the password given does not open it; check --password")


def _pdf_pages(document: Document, dpi: float) -> list[Page]:
    """Each page's nominal size. A page that cannot be loaded keeps its error for `render` (the
    others still work) and borrows a readable page's size; when none loads, the file fails."""
    scale = dpi / POINTS_PER_INCH
    sizes: dict[int, tuple[int, int]] = {}
    for number in range(1, document.page_count + 1):
        try:
            with boundary(f"{document.name} page {number}", "load the page"):
                rect = document._handle[number - 1].rect
            sizes[number] = (max(0, round(rect.width * scale)), max(0, round(rect.height * scale)))
        except DocreadError as e:
            document._page_errors[number] = e
            document.warnings.append(e.message)
    if not sizes:
        raise next(iter(document._page_errors.values()))
    fallback = next(iter(sizes.values()))
    return [Page(n, *sizes.get(n, fallback), dpi) for n in range(1, document.page_count + 1)]


def render_pdf(document: Document, page: Page, width: int, height: int) -> Image.Image:
    from PIL import Image

    where = f"{document.name} page {page.number}"
    try:
        if page.number in document._page_errors:
            raise document._page_errors[page.number]
        with boundary(where, "render it"):
            pixmap = _pdf_pixmap(document._handle, page, width, height, where)
            image = Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
            # one colour: Pillow's extrema, in C (PyMuPDF's is_unicolor loops over the pixels in Python: ~1 s a page)
            blank = all(low == high for low, high in image.getextrema())
    except DocreadError as e:
        if e.code in ("corrupt", "truncated") and document._note_repair():
            raise _damaged_page(where, "unreadable", e) from None
        raise
    if blank and document._note_repair():
        raise _damaged_page(where, "blank")
    if image.size != (width, height):  # MuPDF rounds the pixmap to whole pixels: at most one off
        exact = Image.new("RGB", (width, height), (255, 255, 255))
        exact.paste(image, (0, 0))
        image = exact
    return image


def _pdf_pixmap(doc, page: Page, width: int, height: int, where: str):
    pymupdf = _pymupdf()
    pdf_page = doc[page.number - 1]
    for image in pdf_page.get_images(full=True):  # (xref, smask, width, height, ...)
        if image[2] * image[3] > MAX_EMBEDDED_PIXELS:
            raise DocreadError(
                "too_large", f"{where} embeds a {image[2]}x{image[3]} px image, too large to decode safely"
            )
    rect = pdf_page.rect
    matrix = pymupdf.Matrix(width / rect.width, height / rect.height)
    return pdf_page.get_pixmap(matrix=matrix, colorspace=pymupdf.csRGB, alpha=False)


def _damaged_page(where: str, how: str, cause: DocreadError | None = None) -> DocreadError:
    detail = f" ({cause.message})" if cause else ""
    return DocreadError(
        "damaged_page",
        f"{where}: the file was damaged and repaired by MuPDF, and this page came "
        f"out {how}{detail}; re-export or re-download the file",
    )
