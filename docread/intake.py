"""Intake: files -> pages. The only module that opens input files (their bytes come through
`docread.sources`, bounded by `docread.limits`).

PDFs go through PyMuPDF, everything else Pillow reads through Pillow. A `Document` lists
its selected pages with their nominal size (PDF pages at `dpi`, images at their pixel size),
and renders a page once, at exactly the size its slicing plan asks for. Every problem a file
can have becomes a `DocreadError` with a stable code and a line saying what to do: each call
into PyMuPDF or Pillow on user data goes through `_boundary`, and reading is bounded in bytes
and in time (the time intake itself spends on the file, never the model's).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from docread.errors import DocreadError
from docread.limits import DEFAULT_DPI, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S, Clock, Limits
from docread.sources import expand_paths, parse_pages, read_input, supported_suffixes, validate_pages_spec

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_DPI", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_TIMEOUT_S", "Document", "Limits",
           "Page", "expand_paths", "open_document", "parse_pages", "supported_suffixes", "to_rgb",
           "validate_pages_spec"]  # the names callers use, wherever they live
MAX_ASPECT = 50.0                  # 16 tiles in one column still leave a 1:50 page ~107 px wide
MAX_EMBEDDED_PIXELS = DEFAULT_MAX_PIXELS * 4  # one image inside a PDF page: MuPDF decodes it whole to render
POINTS_PER_INCH = 72.0
PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024                # the PDF header may follow some junk (PDF 1.7, 7.5.2)
SINGLE_FRAME_FORMATS = {"GIF", "WEBP", "PNG"}  # animations: the first frame is the page
IMAGE_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"GIF8": "GIF",
               b"BM": "BMP"}       # file signatures: a damaged image is "corrupt", not "unsupported"
MAX_FRAMES = 10_000                # pages read from one multi-frame image (a TIFF's IFD chain may be endless)
EXIF_ORIENTATION = 0x0112          # values 5-8 turn the image a quarter: width and height swap
PNG_TEXT_CHUNK_MAX = 256 << 10     # one decompressed PNG text chunk (Pillow allows 1 MiB)
PNG_TEXT_TOTAL_MAX = 4 << 20       # all of a PNG's text chunks together (Pillow allows 64 MiB)


@dataclass(frozen=True)
class Page:
    number: int          # 1-based page (or frame) number in the file
    width: int           # nominal size in pixels: the image's, or the PDF page's at dpi
    height: int
    dpi: float | None    # the nominal dpi for PDF pages; None for images


# -- the library boundary ----------------------------------------------------------------------
@contextmanager
def _boundary(where: str, what: str) -> Iterator[None]:
    """The one place a PyMuPDF or Pillow failure on user data becomes that input's DocreadError.

    Damaged files raise anything (MuPDF's own error classes, Pillow's KeyError or TypeError on a
    TIFF with missing tags, MemoryError on a buffer too large to allocate), so any Exception counts;
    KeyboardInterrupt and SystemExit are BaseExceptions and pass, as does a DocreadError raised inside.
    """
    try:
        yield
    except DocreadError:
        raise
    except Exception as e:  # noqa: BLE001  the library boundary (style habit 10)
        raise _library_error(where, what, e) from None


def _library_error(where: str, what: str, error: Exception) -> DocreadError:
    if isinstance(error, MemoryError) or type(error).__name__ == "DecompressionBombError":
        return DocreadError("too_large", f"{where}: too large to {what} ({_short(error)}); downscale or split it")
    code = "truncated" if isinstance(error, EOFError) or "truncated" in str(error).lower() else "corrupt"
    return DocreadError(code, f"{where}: cannot {what}, the data is damaged ({_short(error)}); "
                        "re-export or re-download it")


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text and text[0] else type(error).__name__


# -- documents ---------------------------------------------------------------------------------
@dataclass
class Document:
    """An open input file; use as a context manager. `pages` are the selected pages.

    Callers show `warnings` (a damaged file MuPDF repaired, pages that cannot be loaded) and record
    `repaired`; `sha256` identifies the content, stdin included, without reading the path again.
    A page that failed to load still opens the file: `render` raises that page's error.
    """

    name: str
    kind: str                          # "pdf" or "image"
    page_count: int
    pages: list[Page]
    limits: Limits
    sha256: str = ""                   # hex sha256 of the bytes read (stdin included): the file's identity
    repaired: bool = False             # MuPDF had to repair a damaged PDF: pages may be blank or missing
    warnings: list[str] = field(default_factory=list)  # one line each, for callers to show; empty when clean
    warnings_shown: int = 0            # how many of `warnings` the caller has shown (more may come on rendering)
    _handle: object = field(repr=False, default=None)  # pymupdf.Document or PIL.Image.Image
    _clock: Clock = field(repr=False, default_factory=lambda: Clock(DEFAULT_TIMEOUT_S, ""))
    _page_errors: dict[int, DocreadError] = field(repr=False, default_factory=dict)  # pages that failed to load

    def __enter__(self) -> "Document":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None and hasattr(self._handle, "close"):
            self._handle.close()
        self._handle = None

    def check_time(self) -> None:
        self._clock.check()

    def page_error(self, page: Page) -> DocreadError | None:
        """Why a page could not be loaded when the file was opened (None: it loaded); `render`
        raises the same error. Lets a caller report a bad page without rendering it."""
        return self._page_errors.get(page.number)

    def render(self, page: Page, width: int, height: int) -> "Image.Image":
        """The page as an RGB image of exactly width x height (its aspect is the caller's plan)."""
        with self._clock.running():
            image = _render_pdf(self, page, width, height) if self.kind == "pdf" else \
                _render_frame(self._handle, page, width, height, self.name)
        self.check_time()
        return image

    def _note_repair(self) -> bool:
        """Whether MuPDF repaired the file (it may do so late, on loading a page); warns once."""
        if not self.repaired and self.kind == "pdf":
            with _boundary(self.name, "check the PDF"):
                self.repaired = bool(self._handle.is_repaired)
            if self.repaired:
                self.warnings.append(f"{self.name}: the file was damaged and repaired by MuPDF; "
                                     "some pages may be missing or blank")
        return self.repaired


def open_document(path: str, *, pages: str | None = None, password: str | None = None,
                  dpi: float = DEFAULT_DPI, limits: Limits | None = None) -> Document:
    """Open a PDF or image file (`-` = stdin) and select its pages."""
    limits = limits or Limits()
    validate_pages_spec(pages)
    clock = Clock(limits.timeout_s, path)
    with clock.running():
        data = read_input(path, limits, clock)
        document = _open_pdf(path, data, password, dpi, limits) if PDF_MAGIC in data[:MAGIC_WINDOW] \
            else _open_image(path, data, limits)
        document.sha256, document._clock = hashlib.sha256(data).hexdigest(), clock
        try:
            selected = parse_pages(pages, document.page_count, name=path)
            document.pages = [_check_page(path, document.pages[n - 1], limits) for n in selected]
            document._note_repair()
            clock.check()
        except DocreadError:
            document.close()
            raise
    return document


def _check_page(name: str, page: Page, limits: Limits) -> Page:
    where = f"{name} page {page.number}"
    if page.width < 1 or page.height < 1:
        raise DocreadError("corrupt", f"{where} has no area ({page.width}x{page.height} px); the file is damaged")
    if page.width * page.height > limits.max_pixels:
        advice = "lower --dpi" if page.dpi else "downscale it"
        raise DocreadError("too_large", f"{where} is {page.width}x{page.height} px, over the {limits.max_pixels:,} "
                           f"pixel cap: {advice}, or raise --max-pixels if you trust the file")
    aspect = max(page.width / page.height, page.height / page.width)
    if aspect > MAX_ASPECT:
        raise DocreadError("extreme_aspect", f"{where} is {page.width}x{page.height} px (aspect 1:{aspect:.0f}); "
                           f"docread reads pages up to 1:{MAX_ASPECT:g}: crop or split it into parts")
    return page


# -- PDFs --------------------------------------------------------------------------------------
def _open_pdf(name: str, data: bytearray, password: str | None, dpi: float, limits: Limits) -> Document:
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)  # damaged files: our one line, not MuPDF's warnings
    with _boundary(name, "open the PDF"):
        doc = pymupdf.open(stream=data, filetype="pdf")
    document = Document(name, "pdf", 0, [], limits)
    document._handle = doc
    try:
        with _boundary(name, "open the PDF"):
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
            with _boundary(f"{document.name} page {number}", "load the page"):
                rect = document._handle[number - 1].rect
            sizes[number] = (max(0, round(rect.width * scale)), max(0, round(rect.height * scale)))
        except DocreadError as e:
            document._page_errors[number] = e
            document.warnings.append(e.message)
    if not sizes:
        raise next(iter(document._page_errors.values()))
    fallback = next(iter(sizes.values()))
    return [Page(n, *sizes.get(n, fallback), dpi) for n in range(1, document.page_count + 1)]


def _render_pdf(document: Document, page: Page, width: int, height: int) -> "Image.Image":
    from PIL import Image

    where = f"{document.name} page {page.number}"
    try:
        if page.number in document._page_errors:
            raise document._page_errors[page.number]
        with _boundary(where, "render it"):
            pixmap = _pdf_pixmap(document._handle, page, width, height, where)
            blank = pixmap.is_unicolor
            image = Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
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
    import pymupdf

    pdf_page = doc[page.number - 1]
    for image in pdf_page.get_images(full=True):  # (xref, smask, width, height, ...)
        if image[2] * image[3] > MAX_EMBEDDED_PIXELS:
            raise DocreadError("too_large", f"{where} embeds a {image[2]}x{image[3]} px image, "
                               "too large to decode safely")
    rect = pdf_page.rect
    matrix = pymupdf.Matrix(width / rect.width, height / rect.height)
    return pdf_page.get_pixmap(matrix=matrix, colorspace=pymupdf.csRGB, alpha=False)


def _damaged_page(where: str, how: str, cause: DocreadError | None = None) -> DocreadError:
    detail = f" ({cause.message})" if cause else ""
    return DocreadError("damaged_page", f"{where}: the file was damaged and repaired by MuPDF, and this page came "
                        f"out {how}{detail}; re-export or re-download the file")


# -- images ------------------------------------------------------------------------------------
@contextmanager
def _pillow_settings() -> Iterator[None]:
    """Pillow's global limits while intake reads: our own pixel cap instead of Pillow's (checked per
    page from the header, before decoding), damaged data never silently padded, PNG text bounded."""
    from PIL import Image, ImageFile, PngImagePlugin

    saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, PngImagePlugin.MAX_TEXT_CHUNK,
             PngImagePlugin.MAX_TEXT_MEMORY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damaged files: our one line, not Pillow's warnings on stderr
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        PngImagePlugin.MAX_TEXT_CHUNK = min(saved[2], PNG_TEXT_CHUNK_MAX)
        PngImagePlugin.MAX_TEXT_MEMORY = min(saved[3], PNG_TEXT_TOTAL_MAX)
        try:
            yield
        finally:
            (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, PngImagePlugin.MAX_TEXT_CHUNK,
             PngImagePlugin.MAX_TEXT_MEMORY) = saved


def _open_image(name: str, data: bytearray, limits: Limits) -> Document:
    from PIL import Image, UnidentifiedImageError

    with _pillow_settings():
        with _boundary(name, "open the image"):
            try:
                image = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                raise _unidentified(name, data) from None
        document = Document(name, "image", 0, [], limits)
        document._handle = image
        try:
            document.pages = _frame_pages(document, image)
            document.page_count = len(document.pages)
            if document.pages[0].width * document.pages[0].height <= limits.max_pixels:
                with _boundary(f"{name} page 1", "decode it"):
                    image.seek(0)
                    image.load()  # decode now: a damaged file fails here, before any model work
        except DocreadError:
            document.close()
            raise
    return document


def _frame_pages(document: Document, image) -> list[Page]:
    """One page per frame (TIFF pages; the first frame of an animation), found by seeking frame
    after frame rather than by `n_frames`, which fails outright on one damaged frame. A frame after
    the first that cannot be read ends the list, with a warning; a damaged first frame fails the file."""
    last = 1 if image.format in SINGLE_FRAME_FORMATS else MAX_FRAMES
    pages: list[Page] = []
    for number in range(1, last + 1):
        try:
            with _boundary(f"{document.name} page {number}", "read its header"):
                try:
                    image.seek(number - 1)
                except EOFError:
                    if number == 1:
                        raise
                    return pages  # past the last frame
                pages.append(_frame_page(image, number, document.limits))
        except DocreadError as e:
            if number == 1:
                raise
            document.warnings.append(f"{e.message}; the pages from {number} on are left out")
            return pages
    if last > 1:
        document.warnings.append(f"{document.name}: only the first {MAX_FRAMES:,} pages are read")
    return pages


def _frame_page(image, number: int, limits: Limits) -> Page:
    """The frame's size after EXIF orientation. The pixel cap comes first, from the header alone:
    reading EXIF may decode the whole frame (PNG), and orientation only swaps width and height."""
    width, height = image.size
    if width * height > limits.max_pixels:
        return Page(number, width, height, None)  # refused by _check_page if selected; never decoded
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return Page(number, *((height, width) if orientation in (5, 6, 7, 8) else (width, height)), None)


def _render_frame(image, page: Page, width: int, height: int, name: str) -> "Image.Image":
    from PIL import Image, ImageOps

    with _pillow_settings(), _boundary(f"{name} page {page.number}", "decode it"):
        image.seek(page.number - 1)
        image.load()
        frame = to_rgb(ImageOps.exif_transpose(image))
        if frame.size != (width, height):
            frame = frame.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return frame


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


def _unidentified(name: str, data: bytes) -> DocreadError:
    """Pillow found no format: a damaged image when its signature says it is one, else not ours."""
    head = bytes(data[:16])
    kind = next((fmt for magic, fmt in IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    if kind is not None:
        return DocreadError("corrupt", f"{name}: starts like a {kind} file but Pillow cannot read it; the file is "
                            "damaged, re-export or re-download it")
    return DocreadError("unsupported", f"{name}: not a PDF or an image format Pillow reads ({_sniff(data)}); "
                        "convert it to PDF or PNG")


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
