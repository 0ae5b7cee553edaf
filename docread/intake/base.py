"""What intake hands on: a `Document` of `Page`s, and the one boundary where anything PyMuPDF or
Pillow raise on user data becomes that input's `DocreadError`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docread.errors import DocreadError
from docread.intake.limits import DEFAULT_TIMEOUT_S, Clock, Limits

if TYPE_CHECKING:
    from PIL import Image

MAX_ASPECT = 50.0  # 16 tiles in one column still leave a 1:50 page ~107 px wide
PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024  # the PDF header may follow some junk (PDF 1.7, 7.5.2)


@dataclass(frozen=True)
class Page:
    number: int  # 1-based page (or frame) number in the file
    width: int  # nominal size in pixels: the image's, or the PDF page's at dpi
    height: int
    dpi: float | None  # the nominal dpi for PDF pages; None for images


@contextmanager
def boundary(where: str, what: str) -> Iterator[None]:
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
    return DocreadError(
        code, f"{where}: cannot {what}, the data is damaged ({_short(error)}); re-export or re-download it"
    )


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:160] if text and text[0] else type(error).__name__


@dataclass
class Document:
    """An open input file; use as a context manager. `pages` are the selected pages.

    Callers show `warnings` (a damaged file MuPDF repaired, pages that cannot be loaded) and record
    `repaired`; `sha256` identifies the content, stdin included, without reading the path again.
    A page that failed to load still opens the file: `render` raises that page's error.
    """

    name: str
    kind: str  # "pdf" or "image"
    page_count: int
    pages: list[Page]
    limits: Limits
    sha256: str = ""  # hex sha256 of the bytes read (stdin included): the file's identity
    repaired: bool = False  # MuPDF had to repair a damaged PDF: pages may be blank or missing
    warnings: list[str] = field(default_factory=list)  # one line each, for callers to show; empty when clean
    warnings_shown: int = 0  # how many of `warnings` the caller has shown (more may come on rendering)
    _handle: object = field(repr=False, default=None)  # pymupdf.Document or PIL.Image.Image
    _clock: Clock = field(repr=False, default_factory=lambda: Clock(DEFAULT_TIMEOUT_S, ""))
    _page_errors: dict[int, DocreadError] = field(repr=False, default_factory=dict)  # pages that failed to load
    _renderer: Callable[[Document, Page, int, int], Image.Image] | None = field(repr=False, default=None)

    def __enter__(self) -> Document:
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

    def render(self, page: Page, width: int, height: int) -> Image.Image:
        """The page as an RGB image of exactly width x height (its aspect is the caller's plan)."""
        with self._clock.running():
            image = self._renderer(self, page, width, height)  # the PDF's or the image's (intake/pdf, image)
        self.check_time()
        return image

    def _note_repair(self) -> bool:
        """Whether MuPDF repaired the file (it may do so late, on loading a page); warns once."""
        if not self.repaired and self.kind == "pdf":
            with boundary(self.name, "check the PDF"):
                self.repaired = bool(self._handle.is_repaired)
            if self.repaired:
                self.warnings.append(
                    f"{self.name}: the file was damaged and repaired by MuPDF; some pages may be missing or blank"
                )
        return self.repaired


def check_page(name: str, page: Page, limits: Limits) -> Page:
    where = f"{name} page {page.number}"
    if page.width < 1 or page.height < 1:
        raise DocreadError("corrupt", f"{where} has no area ({page.width}x{page.height} px); the file is damaged")
    if page.width * page.height > limits.max_pixels:
        advice = "lower --dpi" if page.dpi else "downscale it"
        raise DocreadError(
            "too_large",
            f"{where} is {page.width}x{page.height} px, over the {limits.max_pixels:,} "
            f"pixel cap: {advice}, or raise --max-pixels if you trust the file",
        )
    aspect = max(page.width / page.height, page.height / page.width)
    if aspect > MAX_ASPECT:
        raise DocreadError(
            "extreme_aspect",
            f"{where} is {page.width}x{page.height} px (aspect 1:{aspect:.0f}); "
            f"docread reads pages up to 1:{MAX_ASPECT:g}: crop or split it into parts",
        )
    return page
