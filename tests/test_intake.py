"""Intake: every supported way in (PDF, image modes, frames, stdin, folders) and every bad input,
each built here, each giving one code and one line."""

import io
import subprocess
import sys

import numpy as np
import pymupdf
import pytest
from PIL import Image

from docread.errors import DocreadError, UsageError
from docread.intake import Limits, expand_paths, open_document, parse_pages, to_rgb, validate_pages_spec


def make_pdf(path, pages=((612, 792),), password=None, text="hello"):
    doc = pymupdf.open()
    for width, height in pages:
        doc.new_page(width=width, height=height).insert_text((20, 40), text, fontsize=12)
    if password:
        doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=password, owner_pw=password + "!")
    else:
        doc.save(path)
    return path


def error_of(path, **kwargs) -> DocreadError:
    with pytest.raises(DocreadError) as e:
        open_document(str(path), **kwargs)
    assert "\n" not in e.value.message and str(path) in e.value.message
    return e.value


# -- page selection ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, [1, 2, 3, 4, 5]),
        ("1", [1]),
        ("1,3-5,-1", [1, 3, 4, 5]),
        ("-2", [4]),
        ("4-", [4, 5]),
        ("2,2,1", [2, 1]),
        ("all", [1, 2, 3, 4, 5]),
    ],
)
def test_parse_pages(spec, expected):
    assert parse_pages(spec, 5) == expected


def test_parse_pages_errors():
    with pytest.raises(UsageError):
        parse_pages("one", 5)
    with pytest.raises(DocreadError) as e:
        parse_pages("2,7", 5)
    assert e.value.code == "bad_pages" and "1-5" in e.value.message


# -- PDFs --------------------------------------------------------------------------------------
def test_pdf_pages_have_nominal_size_and_render_exactly(tmp_path):
    pdf = make_pdf(tmp_path / "a.pdf", pages=((612, 792), (792, 612)))
    with open_document(str(pdf), dpi=144) as doc:
        assert doc.kind == "pdf" and doc.page_count == 2
        first, second = doc.pages
        assert (first.width, first.height, first.dpi) == (1224, 1584, 144)
        assert (second.width, second.height) == (1584, 1224)
        image = doc.render(first, 1008, 1304)
        assert image.size == (1008, 1304) and image.mode == "RGB"
        ink = np.asarray(image.convert("L")) < 128
        assert ink.any() and ink[:120, :300].any()  # the text sits top-left, rendered


def test_pdf_page_selection_and_password(tmp_path):
    pdf = make_pdf(tmp_path / "p.pdf", pages=((300, 300),) * 3, password="s3cret")
    assert error_of(pdf).code == "encrypted"
    assert error_of(pdf, password="nope").code == "wrong_password"
    with open_document(str(pdf), password="s3cret", pages="-1,1") as doc:
        assert [p.number for p in doc.pages] == [3, 1]


def test_bad_pdfs(tmp_path):
    html = tmp_path / "page.pdf"
    html.write_text("<!DOCTYPE html><html><body>404</body></html>")
    e = error_of(html)
    assert e.code == "unsupported" and "HTML" in e.message

    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    assert error_of(empty).code == "empty"

    good = make_pdf(tmp_path / "good.pdf").read_bytes()
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    assert error_of(garbage).code in ("corrupt", "no_pages")

    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(good[: len(good) // 3])
    try:  # MuPDF may repair what is left; then the page renders, or says it came out damaged
        with open_document(str(truncated)) as doc:
            doc.render(doc.pages[0], 100, 100)
    except DocreadError as e:
        assert e.code in ("corrupt", "no_pages", "damaged_page")

    zero = tmp_path / "zero.pdf"
    zero.write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )
    assert error_of(zero).code in ("no_pages", "corrupt")


def test_absurd_pdf_page_size_hits_the_pixel_cap(tmp_path):
    pdf = make_pdf(tmp_path / "poster.pdf", pages=((14400, 14400),))  # 200 x 200 inches: 1.6 GP at 200 dpi
    e = error_of(pdf)
    assert e.code == "too_large" and "--max-pixels" in e.message
    with open_document(str(pdf), dpi=20) as doc:  # fine at a lower nominal dpi
        assert doc.pages[0].width == 4000


# -- images ------------------------------------------------------------------------------------
def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def render_only(path, **kwargs):
    with open_document(str(path), **kwargs) as doc:
        page = doc.pages[0]
        return page, doc.render(page, page.width, page.height)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = save(image, tmp_path / "rot.jpg", exif=exif, quality=95)
    page, rendered = render_only(path)
    assert (page.width, page.height) == (20, 40) == rendered.size
    top = rendered.getpixel((10, 5))
    assert top[2] > 200 and top[0] < 80  # the blue half is on top after rotation


def test_alpha_palette_cmyk_one_bit_and_sixteen_bit_become_true_rgb(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    _, out = render_only(save(rgba, tmp_path / "a.png"))
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (255, 0, 0)

    palette = rgba.convert("P")
    palette.info["transparency"] = palette.getpixel((1, 1))
    _, out = render_only(save(palette, tmp_path / "p.png", transparency=palette.getpixel((1, 1))))
    assert out.getpixel((1, 1)) == (255, 255, 255)

    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    _, out = render_only(save(cmyk, tmp_path / "c.tif"))
    assert out.getpixel((0, 0)) == (255, 0, 0)

    one_bit = Image.new("1", (8, 8), 1)
    one_bit.putpixel((0, 0), 0)
    _, out = render_only(save(one_bit, tmp_path / "b.png"))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 1)) == (255, 255, 255)

    grey16 = Image.fromarray(np.array([[0, 32768], [65535, 1000]], dtype=np.uint16))
    path = save(grey16, tmp_path / "g16.png")
    assert Image.open(path).convert("RGB").getpixel((0, 1)) == (255, 255, 255)  # Pillow's plain convert: white
    _, out = render_only(path)
    assert [out.getpixel(xy)[0] for xy in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 128, 255, 4]


def test_to_rgb_float_and_la():
    la = Image.new("LA", (2, 2), (0, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.fromarray(np.array([[0.0, 2.0]], dtype=np.float32), mode="F")
    assert to_rgb(grey).getpixel((1, 0)) == (255, 255, 255)


def test_multi_frame_tiff_is_pages_animated_gif_is_one(tmp_path):
    frames = [Image.new("RGB", (30, 20 + 10 * i), (i * 80, 0, 0)) for i in range(3)]
    tiff = save(frames[0], tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    with open_document(str(tiff)) as doc:
        assert doc.page_count == 3 and [p.height for p in doc.pages] == [20, 30, 40]
        assert doc.render(doc.pages[2], 30, 40).getpixel((0, 0)) == (160, 0, 0)
    gif = save(
        frames[0].resize((30, 30)),
        tmp_path / "a.gif",
        save_all=True,
        append_images=[f.resize((30, 30)) for f in frames[1:]],
        duration=100,
        loop=0,
    )
    with open_document(str(gif)) as doc:
        assert doc.page_count == 1


def test_images_resize_to_the_plan(tmp_path):
    path = save(Image.new("RGB", (800, 600), (10, 20, 30)), tmp_path / "big.jpg")
    with open_document(str(path)) as doc:
        image = doc.render(doc.pages[0], 400, 300)
    assert image.size == (400, 300) and image.mode == "RGB"


def test_bad_images(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (200, 200), (1, 2, 3)).save(good, "PNG")
    truncated = tmp_path / "t.png"
    truncated.write_bytes(good.getvalue()[:60])
    with pytest.raises(DocreadError) as e:
        render_only(truncated)
    assert e.value.code in ("truncated", "corrupt")

    text = tmp_path / "notes.png"
    text.write_text("just some words\n")
    assert error_of(text).code == "unsupported"

    strip = save(Image.new("L", (1, 20000), 255), tmp_path / "strip.png")
    e = error_of(strip)
    assert e.code == "extreme_aspect" and "1:20000" in e.message

    bomb = save(Image.new("1", (20000, 20000)), tmp_path / "bomb.png")  # 400 MP, a few KB on disk
    assert bomb.stat().st_size < 200_000
    e = error_of(bomb)
    assert e.code == "too_large" and "400,000,000" not in e.message and "20000x20000" in e.message
    assert error_of(bomb, limits=Limits(max_pixels=10**6)).code == "too_large"

    assert error_of(tmp_path / "missing.png").code == "not_found"


def test_unreadable_and_time_limit(tmp_path):
    import os

    locked = save(Image.new("RGB", (4, 4)), tmp_path / "locked.png")
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        assert error_of(locked).code == "unreadable"
    pdf = make_pdf(tmp_path / "slow.pdf", pages=((612, 792),) * 3)
    with open_document(str(pdf), limits=Limits(timeout_s=0.5)) as doc:
        doc._clock.spent = 1.0  # as if the time were already spent
        with pytest.raises(DocreadError) as e:
            doc.render(doc.pages[0], 100, 100)
    assert e.value.code == "timeout" and "--timeout" in e.value.message


# -- paths and stdin ---------------------------------------------------------------------------
def test_folders_are_walked_in_stable_order_supported_only(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    make_pdf(tmp_path / "b" / "z.pdf")
    save(Image.new("RGB", (4, 4)), tmp_path / "a.PNG")
    save(Image.new("RGB", (4, 4)), tmp_path / ".hidden" / "x.png")
    (tmp_path / "notes.txt").write_text("x")
    assert expand_paths([str(tmp_path)]) == [str(tmp_path / "a.PNG"), str(tmp_path / "b" / "z.pdf")]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DocreadError) as e:
        expand_paths([str(tmp_path / "nothing")])
    assert e.value.code == "no_documents"


@pytest.mark.system
def test_stdin_reads_a_file():
    image = io.BytesIO()
    Image.new("RGB", (30, 10), (0, 128, 0)).save(image, "PNG")
    code = (
        "from docread.intake import open_document\n"
        "d = open_document('-')\n"
        "print(d.kind, d.pages[0].width, d.pages[0].height, d.render(d.pages[0], 30, 10).getpixel((1, 1)))"
    )
    run = subprocess.run([sys.executable, "-c", code], input=image.getvalue(), capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().split() == ["image", "30", "10", "(0,", "128,", "0)"]


# -- damaged files: every failure is the input's record (issue #10) ----------------------------
def raw_pdf(*objects: bytes) -> bytes:
    """A PDF written by hand: object 1 is the catalog; a correct xref table and trailer."""
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


CATALOG = b"<</Type/Catalog/Pages 2 0 R>>"
LEAF = b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>"


def test_page_tree_cycle_is_a_record_not_a_traceback(tmp_path):
    only_cycle = tmp_path / "cycle.pdf"
    only_cycle.write_bytes(raw_pdf(CATALOG, b"<</Type/Pages/Kids[2 0 R]/Count 1>>"))
    assert error_of(only_cycle).code in ("corrupt", "no_pages")

    # page 1 is fine; page 2 is a /Pages node whose /Kids points back to itself
    half = tmp_path / "half.pdf"
    half.write_bytes(
        raw_pdf(
            CATALOG,
            b"<</Type/Pages/Kids[3 0 R 4 0 R]/Count 2>>",
            LEAF,
            b"<</Type/Pages/Parent 2 0 R/Kids[4 0 R]/Count 1>>",
        )
    )
    with open_document(str(half), dpi=72) as doc:
        assert doc.page_count == 2 and any("page 2" in w for w in doc.warnings)
        assert doc.render(doc.pages[0], 50, 50).size == (50, 50)
        with pytest.raises(DocreadError) as e:
            doc.render(doc.pages[1], 50, 50)
    assert e.value.code == "corrupt" and f"{half} page 2" in e.value.message and "cycle" in e.value.message
    assert "\n" not in e.value.message


def tiff_without_width(frame: int) -> bytes:
    """A two-page TIFF whose `frame`-th IFD lost its ImageWidth tag (renamed to an unknown tag)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 6), 128).save(buffer, "TIFF", save_all=True, append_images=[Image.new("L", (8, 6), 50)])
    data = bytearray(buffer.getvalue())
    ifd = int.from_bytes(data[4:8], "little")
    for _ in range(frame):
        count = int.from_bytes(data[ifd : ifd + 2], "little")
        ifd = int.from_bytes(data[ifd + 2 + 12 * count : ifd + 6 + 12 * count], "little")
    for entry in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        at = ifd + 2 + 12 * entry
        if int.from_bytes(data[at : at + 2], "little") == 256:
            data[at : at + 2] = (0xFFF0).to_bytes(2, "little")
    return bytes(data)


def test_tiff_with_missing_tags(tmp_path):
    first = tmp_path / "first.tif"
    first.write_bytes(tiff_without_width(0))
    e = error_of(first)
    assert e.code == "corrupt" and "TIFF" in e.message

    second = tmp_path / "second.tif"  # Pillow: TypeError "Missing dimensions" from n_frames / seek
    second.write_bytes(tiff_without_width(1))
    with open_document(str(second)) as doc:
        assert doc.page_count == 1 and "Missing dimensions" in doc.warnings[0]
        assert doc.render(doc.pages[0], 8, 6).getpixel((0, 0)) == (128, 128, 128)


def test_memory_error_is_too_large_and_interrupts_pass(tmp_path, monkeypatch):
    from PIL import ImageFile

    png = save(Image.new("RGB", (20, 20)), tmp_path / "a.png")
    pdf = make_pdf(tmp_path / "a.pdf")

    def raise_(error):
        def fail(*args, **kwargs):
            raise error

        return fail

    monkeypatch.setattr(ImageFile.ImageFile, "load", raise_(MemoryError()))
    e = error_of(png)
    assert e.code == "too_large" and "MemoryError" in e.message
    monkeypatch.setattr(pymupdf.Page, "get_pixmap", raise_(MemoryError("cannot allocate")))
    with open_document(str(pdf)) as doc, pytest.raises(DocreadError) as e:
        doc.render(doc.pages[0], 100, 100)
    assert e.value.code == "too_large" and "cannot allocate" in e.value.message
    monkeypatch.setattr(ImageFile.ImageFile, "load", raise_(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        open_document(str(png))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with one tiny IDAT: the bomb's header, no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_png_bomb_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    import time

    from PIL import ImageFile

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded a frame over the pixel cap")

    monkeypatch.setattr(Image.Image, "getexif", must_not_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_decode)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))
    start = time.monotonic()
    e = error_of(bomb)
    assert time.monotonic() - start < 10  # far from a 900-megapixel decode, even on a loaded machine
    assert e.code == "too_large" and "30000x30000" in e.message
    assert "--dpi" not in e.message and "downscale" in e.message and "--max-pixels" in e.message


def test_truncated_pdf_is_repaired_and_its_blank_pages_say_so(tmp_path):
    doc = pymupdf.open()
    for i in range(4):
        doc.new_page(width=200, height=200).insert_text((20, 40), f"page {i + 1}", fontsize=20)
    data = doc.tobytes()
    outcomes = set()
    for fraction in (0.3, 0.5, 0.7, 0.9):
        path = tmp_path / f"cut{fraction}.pdf"
        path.write_bytes(data[: int(len(data) * fraction)])
        try:
            with open_document(str(path), dpi=72) as cut:
                assert cut.repaired and "repaired" in cut.warnings[0]
                for page in cut.pages:
                    try:
                        cut.render(page, 100, 100)
                        outcomes.add("ok")
                    except DocreadError as e:
                        assert e.code == "damaged_page" and "repaired" in e.message
                        assert f"page {page.number}" in e.message
                        outcomes.add(e.code)
        except DocreadError as e:
            assert e.code == "corrupt"
    assert outcomes == {"ok", "damaged_page"}
    with open_document(str(make_pdf(tmp_path / "whole.pdf"))) as whole:
        assert not whole.repaired and whole.warnings == []


def test_timeout_counts_intake_time_only(tmp_path, monkeypatch):
    """On a clock that moves only when the test says (intake's own work takes no time on it), so the
    outcome never depends on how busy the machine is."""
    import types

    from docread.intake import limits

    now = [0.0]
    monkeypatch.setattr(limits, "time", types.SimpleNamespace(monotonic=lambda: now[0]))

    def sleep(seconds):
        now[0] += seconds

    pdf = make_pdf(tmp_path / "three.pdf", pages=((200, 200),) * 3)
    with open_document(str(pdf), limits=Limits(timeout_s=0.25)) as doc:
        for page in doc.pages:  # the model's time between renders does not count
            doc.render(page, 50, 50)
            sleep(0.15)
    with open_document(str(pdf), limits=Limits(timeout_s=0.25)) as doc, pytest.raises(DocreadError) as e:
        render = doc._renderer

        def slow_render(*args):
            sleep(0.15)
            return render(*args)

        doc._renderer = slow_render  # intake's own work made slow: it adds up across renders
        for page in doc.pages:
            doc.render(page, 50, 50)
    assert e.value.code == "timeout" and "--timeout" in e.value.message


def test_pages_specs(tmp_path):
    import time

    start = time.monotonic()
    with pytest.raises(DocreadError) as e:
        parse_pages("1-99999999999", 6, name="report.pdf")
    assert time.monotonic() - start < 1 and e.value.code == "bad_pages" and e.value.exit_code == 1  # not 10^11 steps
    for spec, words in [("5-3", ("reversed", "3-5")), ("abc", ("'abc'",)), ("1,,2", ("''",)), ("-", ())]:
        with pytest.raises(UsageError) as e:
            parse_pages(spec, 6)
        assert e.value.exit_code == 2 and all(w in e.value.message for w in words), e.value.message
        with pytest.raises(UsageError):
            validate_pages_spec(spec)
    for spec in (None, "", "all", "1,3-5,-1", "4-", "99"):
        validate_pages_spec(spec)  # syntax only: the page count is the file's business
    assert parse_pages("5-", 6) == [5, 6] and parse_pages("1-3,2-4", 6) == [1, 2, 3, 4]
    pdf = make_pdf(tmp_path / "report.pdf", pages=((300, 300),) * 6)
    e = error_of(pdf, pages="9")
    assert e.code == "bad_pages" and f"--pages 9: {pdf} has 6 pages" in e.message
    with pytest.raises(UsageError):
        open_document(str(tmp_path / "missing.pdf"), pages="5-3")  # syntax first: no file needed


def test_endless_and_silent_inputs_are_bounded(tmp_path):
    import os
    import threading
    import time

    e = error_of("/dev/zero", limits=Limits(max_bytes=1 << 20))
    assert e.code == "too_large" and "1,048,576 bytes" in e.message

    fifo = tmp_path / "never.pdf"
    os.mkfifo(fifo)
    start = time.monotonic()
    assert error_of(fifo, limits=Limits(timeout_s=0.3)).code == "timeout"  # no writer at all
    writer = os.open(fifo, os.O_RDWR)  # a writer that never writes
    try:
        assert error_of(fifo, limits=Limits(timeout_s=0.3)).code == "timeout"
    finally:
        os.close(writer)
    assert time.monotonic() - start < 30  # bounded (a loaded machine may be slow; an unbounded read never ends)

    png = io.BytesIO()
    Image.new("RGB", (5, 5), (9, 9, 9)).save(png, "PNG")

    def write_later():
        with open(fifo, "wb") as f:
            time.sleep(0.05)
            f.write(png.getvalue())

    thread = threading.Thread(target=write_later)
    thread.start()
    with open_document(str(fifo), limits=Limits(timeout_s=5)) as doc:
        assert doc.render(doc.pages[0], 5, 5).getpixel((2, 2)) == (9, 9, 9)
    thread.join()


@pytest.mark.system
def test_closed_stdin_and_stdin_hash(monkeypatch):
    import hashlib
    import shlex

    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(DocreadError) as e:
        open_document("-")
    assert e.value.code == "unreadable" and "stdin is closed" in e.value.message

    code = (
        "from docread.intake import open_document\ntry:\n    open_document('-')\nexcept Exception as e:\n"
        "    print(type(e).__name__, e.code)"
    )
    run = subprocess.run(
        f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} <&-",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )  # `<&-`: the process starts with stdin closed
    assert run.stdout.split() == ["DocreadError", "unreadable"], run.stderr

    image = io.BytesIO()
    Image.new("RGB", (3, 3)).save(image, "PNG")
    code = "from docread.intake import open_document\nprint(open_document('-').sha256)"
    run = subprocess.run([sys.executable, "-c", code], input=image.getvalue(), capture_output=True, timeout=60)
    assert run.stdout.decode().strip() == hashlib.sha256(image.getvalue()).hexdigest(), run.stderr


def test_pillow_limits_hold_while_intake_reads(tmp_path, monkeypatch):
    import zlib

    from PIL import ImageFile, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("note", "x" * (1 << 20), zip=True)  # a 1 MiB zTXt chunk: ~1 KB on disk
    text = save(Image.new("RGB", (4, 4)), tmp_path / "text.png", pnginfo=info)
    assert text.stat().st_size < 10_000 and len(zlib.compress(b"x" * (1 << 20))) < 10_000
    e = error_of(text)
    assert e.code == "corrupt" and "MAX_TEXT_CHUNK" in e.message
    assert PngImagePlugin.MAX_TEXT_CHUNK == 1 << 20  # Pillow's own setting is back afterwards

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone else's choice: not intake's
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, "PNG", compress_level=0)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    assert error_of(cut).code in ("truncated", "corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
