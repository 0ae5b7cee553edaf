"""Intake: files -> pages. The only module that opens input files.

PDFs go through PyMuPDF, everything else Pillow reads through Pillow. A `Document` lists
its selected pages with their nominal size (PDF pages at `dpi`, images at their pixel size),
and renders a page once, at exactly the size its slicing plan asks for. Every problem a
file can have becomes a `DocreadError` with a stable code and a line saying what to do.
"""

from __future__ import annotations

import io
import struct
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from docread.errors import DocreadError, UsageError

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_DPI = 200.0
DEFAULT_MAX_PIXELS = 178_956_970   # Pillow's own bomb threshold (2 x 89.5 MP), per page
DEFAULT_TIMEOUT_S = 60.0
MAX_ASPECT = 50.0                  # 16 tiles in one column still leave a 1:50 page ~107 px wide
POINTS_PER_INCH = 72.0
PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024                # the PDF header may follow some junk (PDF 1.7, 7.5.2)
SINGLE_FRAME_FORMATS = {"GIF", "WEBP", "PNG"}  # animations: the first frame is the page
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)  # Pillow on damaged data


@dataclass(frozen=True)
class Limits:
    """What one input file may cost."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # per page, at its nominal size (PDFs: at --dpi)
    timeout_s: float = DEFAULT_TIMEOUT_S  # to open and render all its selected pages


@dataclass(frozen=True)
class Page:
    number: int          # 1-based page (or frame) number in the file
    width: int           # nominal size in pixels: the image's, or the PDF page's at dpi
    height: int
    dpi: float | None    # the nominal dpi for PDF pages; None for images


# -- page selection ----------------------------------------------------------------------------
def parse_pages(spec: str | None, count: int) -> list[int]:
    """1-based page numbers for `--pages` like "1,3-5,-1" ("-1" = last, "4-" = 4 to the end)."""
    if spec is None or spec.strip() in ("", "all"):
        return list(range(1, count + 1))
    chosen: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        try:
            if part.startswith("-"):
                numbers = [count + 1 + int(part)] if int(part) < 0 else []
            elif "-" in part:
                first, last = part.split("-", 1)
                numbers = list(range(int(first), (int(last) if last else count) + 1))
            else:
                numbers = [int(part)]
        except ValueError:
            raise UsageError(f"--pages {spec!r}: use page numbers and ranges like 1,3-5,-1") from None
        if not numbers or any(not 1 <= n <= count for n in numbers):
            raise DocreadError("bad_pages", f"--pages {spec!r}: {part!r} is outside pages 1-{count}")
        chosen += [n for n in numbers if n not in chosen]
    return chosen


# -- finding files -----------------------------------------------------------------------------
def supported_suffixes() -> set[str]:
    from PIL import Image

    return {".pdf"} | {s.lower() for s in Image.registered_extensions()}


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given, folders walked recursively (supported files only, sorted), `-` kept."""
    files: list[str] = []
    suffixes = None
    for raw in paths:
        path = Path(raw)
        if raw == "-" or not path.is_dir():
            files.append(raw)
            continue
        suffixes = suffixes or supported_suffixes()
        found = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                        and not any(part.startswith(".") for part in p.relative_to(path).parts)),
                       key=lambda p: p.relative_to(path).as_posix())
        if not found:
            raise DocreadError("no_documents", f"{raw}: no PDF or image files in this folder (searched recursively)")
        files += [str(p) for p in found]
    return files


# -- documents ---------------------------------------------------------------------------------
@dataclass
class Document:
    """An open input file; use as a context manager. `pages` are the selected pages."""

    name: str
    kind: str                          # "pdf" or "image"
    page_count: int
    pages: list[Page]
    limits: Limits
    _handle: object = field(repr=False, default=None)  # pymupdf.Document or PIL.Image.Image
    _deadline: float = field(repr=False, default=0.0)

    def __enter__(self) -> "Document":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None and hasattr(self._handle, "close"):
            self._handle.close()
        self._handle = None

    def check_time(self) -> None:
        if time.monotonic() > self._deadline:
            raise DocreadError("timeout", f"{self.name}: took longer than {self.limits.timeout_s:g} s to read; "
                               "raise --timeout, or split the file")

    def render(self, page: Page, width: int, height: int) -> "Image.Image":
        """The page as an RGB image of exactly width x height (its aspect is the caller's plan)."""
        self.check_time()
        image = _render_pdf(self._handle, page, width, height) if self.kind == "pdf" else \
            _render_frame(self._handle, page, width, height, self.name)
        self.check_time()
        return image


def open_document(path: str, *, pages: str | None = None, password: str | None = None,
                  dpi: float = DEFAULT_DPI, limits: Limits | None = None) -> Document:
    """Open a PDF or image file (`-` = stdin) and select its pages."""
    limits = limits or Limits()
    deadline = time.monotonic() + limits.timeout_s
    name, data = _read(path)
    head = data[:MAGIC_WINDOW]
    if PDF_MAGIC in head:
        document = _open_pdf(name, data, password, dpi, limits)
    else:
        document = _open_image(name, data, limits)
    document._deadline = deadline
    try:
        selected = parse_pages(pages, document.page_count)
        document.pages = [_check_page(name, document.pages[n - 1], limits) for n in selected]
        document.check_time()
    except DocreadError:
        document.close()
        raise
    return document


def _read(path: str) -> tuple[str, bytes]:
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "-"
    else:
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise DocreadError("not_found", f"{path}: no such file; check the path") from None
        except IsADirectoryError:
            raise DocreadError("unreadable", f"{path} is a folder: name a file, or use `docread batch` for "
                               "folders") from None
        except PermissionError:
            raise DocreadError("unreadable", f"{path}: permission denied; check the file's permissions") from None
        except OSError as e:
            raise DocreadError("unreadable", f"{path}: cannot be read ({e.strerror or e})") from None
        name = path
    if not data:
        raise DocreadError("empty", f"{name}: the file is empty (0 bytes); re-export or re-download it")
    return name, data


def _check_page(name: str, page: Page, limits: Limits) -> Page:
    where = f"{name} page {page.number}"
    if page.width < 1 or page.height < 1:
        raise DocreadError("corrupt", f"{where} has no area ({page.width}x{page.height} px); the file is damaged")
    if page.width * page.height > limits.max_pixels:
        raise DocreadError("too_large", f"{where} is {page.width}x{page.height} px, over the {limits.max_pixels:,} "
                           "pixel cap: lower --dpi, or raise --max-pixels if you trust the file")
    aspect = max(page.width / page.height, page.height / page.width)
    if aspect > MAX_ASPECT:
        raise DocreadError("extreme_aspect", f"{where} is {page.width}x{page.height} px (aspect 1:{aspect:.0f}); "
                           f"docread reads pages up to 1:{MAX_ASPECT:g}: crop or split it into parts")
    return page


# -- PDFs --------------------------------------------------------------------------------------
def _open_pdf(name: str, data: bytes, password: str | None, dpi: float, limits: Limits) -> Document:
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)  # damaged files: our one line, not MuPDF's warnings
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except (pymupdf.FileDataError, RuntimeError, ValueError) as e:
        raise DocreadError("corrupt", f"{name}: damaged PDF ({_short(e)}); re-export or re-download it") from None
    if doc.needs_pass:
        if password is None:
            doc.close()
            raise DocreadError("encrypted", f"{name} is password-protected: pass --password (or set DOCREAD_PASSWORD)")
        if not doc.authenticate(password):
            doc.close()
            raise DocreadError("wrong_password", f"{name}: the password given does not open it; check --password")
    if doc.page_count == 0:
        doc.close()
        raise DocreadError("no_pages", f"{name}: the PDF has no pages")
    pages = []
    for index in range(doc.page_count):
        try:
            rect = doc[index].rect
        except (RuntimeError, ValueError) as e:
            doc.close()
            raise DocreadError("corrupt", f"{name} page {index + 1} is damaged ({_short(e)})") from None
        scale = dpi / POINTS_PER_INCH
        pages.append(Page(index + 1, max(0, round(rect.width * scale)), max(0, round(rect.height * scale)), dpi))
    document = Document(name, "pdf", doc.page_count, pages, limits)
    document._handle = doc
    return document


def _render_pdf(doc, page: Page, width: int, height: int) -> "Image.Image":
    import pymupdf
    from PIL import Image

    try:
        pdf_page = doc[page.number - 1]
        for image in pdf_page.get_images(full=True):  # (xref, smask, width, height, ...)
            if image[2] * image[3] > DEFAULT_MAX_PIXELS * 4:
                raise DocreadError("too_large", f"page {page.number} embeds a {image[2]}x{image[3]} px image, "
                                   "too large to decode safely")
        rect = pdf_page.rect
        matrix = pymupdf.Matrix(width / rect.width, height / rect.height)
        pixmap = pdf_page.get_pixmap(matrix=matrix, colorspace=pymupdf.csRGB, alpha=False)
    except (RuntimeError, ValueError) as e:
        raise DocreadError("corrupt", f"page {page.number} cannot be rendered ({_short(e)})") from None
    image = Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
    if image.size != (width, height):  # MuPDF rounds the pixmap to whole pixels: at most one off
        exact = Image.new("RGB", (width, height), (255, 255, 255))
        exact.paste(image, (0, 0))
        image = exact
    return image


# -- images ------------------------------------------------------------------------------------
def _open_image(name: str, data: bytes, limits: Limits) -> Document:
    image = _pil_open(name, data)
    if image is None:
        raise DocreadError("unsupported", f"{name}: not a PDF or an image format Pillow reads ({_sniff(data)}); "
                           "convert it to PDF or PNG")
    frames = 1 if image.format in SINGLE_FRAME_FORMATS else getattr(image, "n_frames", 1)
    pages = []
    try:
        for index in range(frames):
            try:
                image.seek(index)
            except EOFError:  # n_frames overstated by a damaged file
                break
            width, height = _oriented_size(image)
            pages.append(Page(index + 1, width, height, None))
        image.seek(0)
        if pages[0].width * pages[0].height <= limits.max_pixels:
            image.load()  # decode now: a damaged file fails here, before any model work
    except DECODE_ERRORS as e:
        raise _damaged(name, e) from None
    document = Document(name, "image", len(pages), pages, limits)
    document._handle = image
    return document


def _pil_open(name: str, data: bytes):
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own cap, checked per page
        try:
            return Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            return None
        except (OSError, ValueError, SyntaxError) as e:
            raise DocreadError("corrupt", f"{name}: damaged image ({_short(e)}); re-export it") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _oriented_size(image) -> tuple[int, int]:
    """The size after the EXIF orientation is applied (5-8 swap width and height)."""
    orientation = image.getexif().get(0x0112, 1)
    return (image.height, image.width) if orientation in (5, 6, 7, 8) else (image.width, image.height)


def _render_frame(image, page: Page, width: int, height: int, name: str) -> "Image.Image":
    from PIL import Image, ImageOps

    try:
        image.seek(page.number - 1)
        image.load()
        frame = to_rgb(ImageOps.exif_transpose(image))
    except DECODE_ERRORS as e:
        raise _damaged(name, e) from None
    if frame.size != (width, height):
        frame = frame.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return frame


def _damaged(name: str, error: BaseException) -> DocreadError:
    code = "truncated" if "truncated" in str(error) else "corrupt"
    return DocreadError(code, f"{name}: the image data is damaged ({_short(error)}); re-export it")


def to_rgb(image: "Image.Image") -> "Image.Image":
    """Any Pillow mode to 8-bit RGB: alpha composited on white, 16-bit and float scaled, CMYK converted."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode != "F" else max(1.0, float(array.max()))  # Pillow opens 16-bit grey as I/I;16
        grey = np.clip(np.round(array * 255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("P", "PA") and ("transparency" in image.info or mode == "PA"):
        image = image.convert("RGBA")
    elif mode == "P":
        return image.convert("RGB")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _sniff(data: bytes) -> str:
    head = data[:MAGIC_WINDOW].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "it looks like HTML"
    if head.startswith((b"{", b"[")):
        return "it looks like JSON"
    try:
        head.decode("utf-8")
        return "it looks like text"
    except UnicodeDecodeError:
        return "unknown binary data"


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text else type(error).__name__
