"""Image pages through Pillow: every format it reads, frames as pages (TIFF) or the first frame
(animations), the pixel cap checked from the header before decoding, EXIF orientation, any mode to RGB."""

from __future__ import annotations

import io
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

from docread.errors import DocreadError
from docread.intake.base import MAGIC_WINDOW, Document, Page, boundary
from docread.intake.limits import Limits

if TYPE_CHECKING:
    from PIL import Image

SINGLE_FRAME_FORMATS = {"GIF", "WEBP", "PNG"}  # animations: the first frame is the page
IMAGE_MAGIC = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"GIF8": "GIF",
    b"BM": "BMP",
}  # file signatures: a damaged image is "corrupt", not "unsupported"
MAX_FRAMES = 10_000  # pages read from one multi-frame image (a TIFF's IFD chain may be endless)
EXIF_ORIENTATION = 0x0112  # values 5-8 turn the image a quarter: width and height swap
PNG_TEXT_CHUNK_MAX = 256 << 10  # one decompressed PNG text chunk (Pillow allows 1 MiB)
PNG_TEXT_TOTAL_MAX = 4 << 20  # all of a PNG's text chunks together (Pillow allows 64 MiB)
FRAMES_KEPT = 256  # images whose frames are kept by content (a server's cached documents, sent again and again)

_kept_frames: dict[tuple[str, int], tuple[Page, ...]] = {}  # (sha256, pixel cap) -> pages: `_keep_frames`
_kept_lock = threading.Lock()


@contextmanager
def _pillow_settings() -> Iterator[None]:
    """Pillow's global limits while intake reads: our own pixel cap instead of Pillow's (checked per
    page from the header, before decoding), damaged data never silently padded, PNG text bounded."""
    from PIL import Image, ImageFile, PngImagePlugin

    saved = (
        Image.MAX_IMAGE_PIXELS,
        ImageFile.LOAD_TRUNCATED_IMAGES,
        PngImagePlugin.MAX_TEXT_CHUNK,
        PngImagePlugin.MAX_TEXT_MEMORY,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damaged files: our one line, not Pillow's warnings on stderr
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        PngImagePlugin.MAX_TEXT_CHUNK = min(saved[2], PNG_TEXT_CHUNK_MAX)
        PngImagePlugin.MAX_TEXT_MEMORY = min(saved[3], PNG_TEXT_TOTAL_MAX)
        try:
            yield
        finally:
            (
                Image.MAX_IMAGE_PIXELS,
                ImageFile.LOAD_TRUNCATED_IMAGES,
                PngImagePlugin.MAX_TEXT_CHUNK,
                PngImagePlugin.MAX_TEXT_MEMORY,
            ) = saved


def open_image(name: str, data: bytearray, limits: Limits, *, decode: bool = True, sha256: str = "") -> Document:
    """The image's frames as pages; its first is decoded now (a damaged file fails here, before any model
    work) unless `decode` is False: bytes known to decode (a server's cached pages') are decoded only if a
    page of theirs is rendered, and when their frames are kept (by `sha256`), not even opened until then."""
    from PIL import Image, UnidentifiedImageError

    kept = _kept_frames.get((sha256, limits.max_pixels)) if sha256 and not decode else None
    if kept is not None:
        return Document(name, "image", len(kept), list(kept), limits, _renderer=partial(_render_later, data))
    with _pillow_settings():
        with boundary(name, "open the image"):
            try:
                image = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                raise _unidentified(name, data) from None
        document = Document(name, "image", 0, [], limits, _renderer=_render)
        document._handle = image
        try:
            document.pages = _frame_pages(document, image, data)
            document.page_count = len(document.pages)
            if sha256 and not document.warnings:  # warnings name the file: those are read again
                _keep_frames((sha256, limits.max_pixels), tuple(document.pages))
            if decode and document.pages[0].width * document.pages[0].height <= limits.max_pixels:
                with boundary(f"{name} page 1", "decode it"):
                    image.seek(0)
                    image.load()  # decode now: a damaged file fails here, before any model work
        except DocreadError:
            document.close()
            raise
    return document


def _frame_pages(document: Document, image, data: bytes) -> list[Page]:
    """One page per frame (TIFF pages; the first frame of an animation), found by seeking frame
    after frame rather than by `n_frames`, which fails outright on one damaged frame. A frame after
    the first that cannot be read ends the list, with a warning; a damaged first frame fails the file."""
    last = 1 if image.format in SINGLE_FRAME_FORMATS else MAX_FRAMES
    pages: list[Page] = []
    for number in range(1, last + 1):
        try:
            with boundary(f"{document.name} page {number}", "read its header"):
                try:
                    image.seek(number - 1)
                except EOFError:
                    if number == 1:
                        raise
                    return pages  # past the last frame
                pages.append(_frame_page(image, number, document.limits, data))
        except DocreadError as e:
            if number == 1:
                raise
            document.warnings.append(f"{e.message}; the pages from {number} on are left out")
            return pages
    if last > 1:
        document.warnings.append(f"{document.name}: only the first {MAX_FRAMES:,} pages are read")
    return pages


def _frame_page(image, number: int, limits: Limits, data: bytes) -> Page:
    """The frame's size after EXIF orientation. The pixel cap comes first, from the header alone:
    reading EXIF may decode the whole frame (PNG), and orientation only swaps width and height."""
    width, height = image.size
    if width * height > limits.max_pixels:
        return Page(number, width, height, None)  # refused by _check_page if selected; never decoded
    orientation = _exif(image, data).get(EXIF_ORIENTATION, 1)
    return Page(number, *((height, width) if orientation in (5, 6, 7, 8) else (width, height)), None)


def _exif(image, data: bytes):
    """The frame's EXIF. Pillow decodes a whole PNG to read it, as its eXIf chunk (or text holding EXIF or
    XMP) may follow the pixels; when nothing but pixels follows them, what was read before them is all of it."""
    from PIL import Image

    if image.format == "PNG" and "exif" not in image.info and _png_pixels_last(data):
        return Image.Image.getexif(image)  # the info read up to the pixels: no decode
    return image.getexif()


def _png_pixels_last(data: bytes) -> bool:
    """Whether a PNG has no chunk after its first IDAT but IDATs and IEND, read from the chunks' headers
    alone; False when they do not add up (Pillow then reads it, and says what is wrong)."""
    position, seen = 8, False
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IEND":
            return True
        if seen and kind != b"IDAT":
            return False
        seen = seen or kind == b"IDAT"
        position += 12 + length
    return False


def _render(document: Document, page: Page, width: int, height: int) -> Image.Image:
    return _render_frame(document._handle, page, width, height, document.name)


def _render_later(data: bytes, document: Document, page: Page, width: int, height: int) -> Image.Image:
    """`_render` of a document opened from its kept frames: the image itself opened at its first render."""
    from PIL import Image

    if document._handle is None:
        with _pillow_settings(), boundary(document.name, "open the image"):
            document._handle = Image.open(io.BytesIO(data))
    return _render(document, page, width, height)


def _keep_frames(key: tuple[str, int], pages: tuple[Page, ...]) -> None:
    """An image's pages by (sha256, pixel cap), as `_frame_pages` read them: the FRAMES_KEPT latest kept."""
    with _kept_lock:
        _kept_frames.pop(key, None)
        _kept_frames[key] = pages
        while len(_kept_frames) > FRAMES_KEPT:
            del _kept_frames[next(iter(_kept_frames))]


def _render_frame(image, page: Page, width: int, height: int, name: str) -> Image.Image:
    from PIL import Image, ImageOps

    with _pillow_settings(), boundary(f"{name} page {page.number}", "decode it"):
        image.seek(page.number - 1)
        image.load()
        frame = to_rgb(ImageOps.exif_transpose(image))
        if frame.size != (width, height):
            frame = frame.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return frame


def to_rgb(image: Image.Image) -> Image.Image:
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
        return DocreadError(
            "corrupt",
            f"{name}: starts like a {kind} file but Pillow cannot read it; the file is "
            "damaged, re-export or re-download it",
        )
    return DocreadError(
        "unsupported", f"{name}: not a PDF or an image format Pillow reads ({_sniff(data)}); convert it to PDF or PNG"
    )


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
