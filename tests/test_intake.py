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
from docread.intake import Limits, expand_paths, open_document, parse_pages, to_rgb


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
@pytest.mark.parametrize("spec, expected", [
    (None, [1, 2, 3, 4, 5]), ("1", [1]), ("1,3-5,-1", [1, 3, 4, 5]), ("-2", [4]),
    ("4-", [4, 5]), ("2,2,1", [2, 1]), ("all", [1, 2, 3, 4, 5]),
])
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
    zero.write_bytes(b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                     b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
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
    gif = save(frames[0].resize((30, 30)), tmp_path / "a.gif", save_all=True,
               append_images=[f.resize((30, 30)) for f in frames[1:]], duration=100, loop=0)
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


def test_stdin_reads_a_file():
    image = io.BytesIO()
    Image.new("RGB", (30, 10), (0, 128, 0)).save(image, "PNG")
    code = ("from docread.intake import open_document\n"
            "d = open_document('-')\n"
            "print(d.kind, d.pages[0].width, d.pages[0].height, d.render(d.pages[0], 30, 10).getpixel((1, 1)))")
    run = subprocess.run([sys.executable, "-c", code], input=image.getvalue(), capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().split() == ["image", "30", "10", "(0,", "128,", "0)"]
