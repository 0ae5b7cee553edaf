"""Seeded mutation fuzzing for intake, shared by tests/test_fuzz.py and scripts/fuzz.py (as `kit.fuzz`).

Valid seed files (PDFs from several PyMuPDF producers, images in each format Pillow writes) are
truncated, bit-flipped and spliced with a seeded `random.Random`; `check_file` pushes one file
through intake and renders its pages, and says how it ended.
"""

from __future__ import annotations

import io
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

KNOWN_CODES = {
    "corrupt",
    "truncated",
    "unreadable",
    "too_large",
    "damaged_page",
    "unsupported",
    "empty",
    "no_pages",
    "bad_pages",
    "extreme_aspect",
    "encrypted",
    "timeout",
}
TTF_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/Library/Fonts/Arial.ttf")
RENDER_SIDE = 48  # pages are rendered this wide: enough to run every decoder, cheap enough for thousands


# -- seeds -------------------------------------------------------------------------------------
def _pdf(build: Callable, **save) -> bytes:
    import pymupdf

    doc = pymupdf.open()
    build(doc)
    return doc.tobytes(**save)


def _text_page(doc, fontname: str = "helv", fontfile: str | None = None) -> None:
    page = doc.new_page(width=120, height=160)
    page.insert_text((10, 30), "Total 42", fontsize=11, fontname=fontname, fontfile=fontfile)


def _image_page(doc) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (200, 30, 30)).save(buffer, "PNG")
    page = doc.new_page(width=120, height=120)
    page.insert_image(page.rect, stream=buffer.getvalue())


def _truetype_page(doc) -> None:
    font = next((f for f in TTF_CANDIDATES if Path(f).is_file()), None)
    _text_page(doc, fontname="F0" if font else "tiro", fontfile=font)


def _incremental_pdf() -> bytes:
    import pymupdf

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "inc.pdf"
        doc = pymupdf.open()
        _text_page(doc)
        doc.save(path)
        doc.close()
        doc = pymupdf.open(path)
        doc[0].insert_text((10, 60), "added later", fontsize=9)
        _text_page(doc)
        doc.save(path, incremental=True, encryption=pymupdf.PDF_ENCRYPT_KEEP)
        doc.close()
        return path.read_bytes()


def _image(mode: str, size: tuple[int, int], fmt: str, frames: int = 1, **save) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(len(fmt) + frames)
    if mode == "I;16":
        images = [Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))]
    else:
        images = [
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode) for _ in range(frames)
        ]
    buffer = io.BytesIO()
    extra = {"save_all": True, "append_images": images[1:]} if frames > 1 else {}
    images[0].save(buffer, fmt, **extra, **save)
    return buffer.getvalue()


def build_seeds() -> dict[str, bytes]:
    """name.suffix -> bytes of a small valid file."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "text.pdf": _pdf(_text_page),
        "image.pdf": _pdf(_image_page),
        "font.pdf": _pdf(lambda d: (_truetype_page(d), _text_page(d, fontname="cour"))),
        "incremental.pdf": _incremental_pdf(),
        "objstm.pdf": _pdf(lambda d: [_text_page(d) for _ in range(3)], garbage=3, deflate=True, use_objstms=True),
        "rgb.png": _image("RGB", (16, 12), "PNG"),
        "palette.png": _image("P", (10, 10), "PNG"),
        "photo.jpg": _image("RGB", (16, 16), "JPEG", exif=exif, quality=80),
        "pages.tif": _image("RGB", (12, 10), "TIFF", frames=3),
        "deep.tif": _image("I;16", (10, 8), "TIFF"),
        "anim.gif": _image("P", (10, 10), "GIF", frames=2, duration=50),
        "pic.webp": _image("RGB", (12, 12), "WEBP", quality=60),
        "pic.bmp": _image("RGB", (8, 6), "BMP"),
    }


# -- mutations ---------------------------------------------------------------------------------
def _cut(rng: random.Random, data: bytes) -> int:
    """A point inside data, keeping at least one byte (a mutated file may already be tiny)."""
    return rng.randrange(1, max(2, len(data)))


def truncate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    return data[: _cut(rng, data)]


def flip_bits(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_bytes(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return bytes(out)


def splice(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    other = rng.choice(others)
    return data[: _cut(rng, data)] + other[rng.randrange(len(other)) :]


MUTATORS = (truncate, flip_bits, set_bytes, splice)


def mutations(seeds: dict[str, bytes], n: int, seed: int):
    """n (name, bytes) pairs: each a seed file mutated once or twice, reproducible from `seed`."""
    rng = random.Random(seed)
    names = sorted(seeds)
    for index in range(n):
        name = names[index % len(names)]
        others = [seeds[o] for o in names if Path(o).suffix != Path(name).suffix]
        data = seeds[name]
        for _ in range(rng.choice((1, 1, 2))):
            data = rng.choice(MUTATORS)(rng, data, others)
        yield f"{index:05d}-{name}", data


# -- running one file --------------------------------------------------------------------------
def check_file(path: str, limits) -> list[str]:
    """Open `path`, render each page small; the outcome per page ("ok" or an error code), or one
    code for the file. Anything but a DocreadError escapes: that is a bug the caller reports."""
    from docread.errors import DocreadError
    from docread.intake import open_document

    try:
        document = open_document(path, limits=limits, dpi=20)
    except DocreadError as e:
        return [e.code]
    outcomes = []
    with document:
        for page in document.pages:
            height = max(1, round(RENDER_SIDE * page.height / page.width))
            try:
                document.render(page, RENDER_SIDE, height)
                outcomes.append("ok")
            except DocreadError as e:
                outcomes.append(e.code)
    return outcomes


def timed(function: Callable, *args) -> tuple[object, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def inspect_one(path: str, preset, limits):
    """`docread inspect`'s records for one file, as the library gives them."""
    from docread.inspection import inspect_paths

    return inspect_paths([path], preset=preset, dpi=20, limits=limits)
