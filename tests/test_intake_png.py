"""A PNG's pixels are decoded once at most when it is opened: its EXIF orientation is read without decoding
when nothing but pixels follows them (Pillow decodes the whole image to look for a late eXIf chunk), and
bytes known to decode (`open_bytes(decoded=...)`, a server's cached pages) are not decoded until a page is
rendered. A late eXIf chunk still turns the page. In a server, asking about a cached page decodes nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib

import pytest
from PIL import Image

from docread.intake import open_bytes

ROTATE_90 = 6  # EXIF orientation: turn a quarter clockwise to display


def page_png(**save) -> bytes:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def with_late_exif(png: bytes) -> bytes:
    """`png` with an eXIf chunk (orientation 6) between its last IDAT and IEND, where Pillow finds it only
    once it has decoded the pixels."""
    exif = Image.Exif()
    exif[0x0112] = ROTATE_90
    data = exif.tobytes()
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data))
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


@pytest.fixture
def decodes(monkeypatch):
    """How many times Pillow starts decoding pixels."""
    counted, real = [], Image._getdecoder
    monkeypatch.setattr(Image, "_getdecoder", lambda *args, **kw: counted.append(args[1]) or real(*args, **kw))
    return counted


def test_a_plain_png_is_decoded_once_to_check_it_and_not_at_all_when_known(decodes):
    png = page_png()
    with open_bytes(png, "a.png") as document:
        assert len(decodes) == 1  # the check that it decodes, EXIF read without a second one
        page = document.pages[0]
        checked = document.render(page, page.width, page.height)
    with open_bytes(png, "a.png", decoded={hashlib.sha256(png).hexdigest()}) as document:
        assert len(decodes) == 1  # known bytes: nothing decoded to open them
        page = document.pages[0]
        assert (page.width, page.height) == (40, 20)
        rendered = document.render(page, page.width, page.height)
    assert len(decodes) == 2 and rendered.tobytes() == checked.tobytes()


@pytest.mark.parametrize("where", ["before the pixels", "after the pixels"])
def test_exif_orientation_turns_a_png_wherever_its_chunk_is(where, decodes):
    exif = Image.Exif()
    exif[0x0112] = ROTATE_90
    png = page_png(exif=exif) if where == "before the pixels" else with_late_exif(page_png())
    with open_bytes(png, "turned.png", decoded={hashlib.sha256(png).hexdigest()}) as document:
        page = document.pages[0]
        assert (page.width, page.height) == (20, 40)
        assert len(decodes) == (0 if where == "before the pixels" else 1)  # a late chunk: Pillow must decode
        rendered = document.render(page, page.width, page.height)
    assert rendered.size == (20, 40) and rendered.getpixel((10, 5))[2] > 200  # the blue half is on top


def test_a_server_asked_again_about_a_cached_page_decodes_nothing(tiny_reader, decodes):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from kit.serving import http, image_bytes, serving

    url = "data:image/png;base64," + base64.b64encode(image_bytes(7, size=64)).decode()
    content = [{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": url}}]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
    body["docread"] = {"max_slices": 0, "text": "off"}
    texts, counts = [], []
    with serving(tiny_reader, max_batch=1) as base:
        for _ in range(2):
            before = len(decodes)
            response = http().post(base + "/v1/chat/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            texts.append(response.json()["choices"][0]["message"]["content"])
            counts.append(len(decodes) - before)
        cache = http().get(base + "/health", timeout=120).json()["cache"]
    assert texts[0] == texts[1] and cache["hits"] == 1 and cache["misses"] == 1
    assert counts[0] >= 1 and counts[1] == 0  # the second request's page is cached: its pixels are not decoded
