"""Page texts kept across requests (`text.evidence.TextCache`, held by the server's `PageCache`): a second read
of the same page pays no OCR; another page, dpi, text mode or file does; the cache is bounded and keeps no
failure. Served: a second request about a page OCRs nothing, concurrent requests about one page OCR it once,
and OCR runs beside the batch being decoded (the batch steps while it runs) with answers as each alone.
OCR here is a counting stand-in (rapidocr takes a second a page): what is counted is whether it is called."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from docread.errors import DocreadError
from docread.intake import open_bytes
from docread.text.evidence import PageTexts, TextCache
from docread.text.pagetext import Word

SAFETY_S = 120  # a bound on waits that follow events, never a timing


@pytest.fixture
def ocr_calls(monkeypatch) -> list[tuple]:
    """Each OCR call's (image size, where); every image reads as one word."""
    calls: list[tuple] = []

    def counted(image, where: str) -> tuple[list[Word], float]:
        calls.append((image.size, where))
        return [Word("Total", (1.0, 1.0, 20.0, 8.0), 0)], 0.9  # words, mean confidence

    monkeypatch.setattr("docread.text.evidence.ocr_words", counted)
    return calls


def pdf_bytes(pages: int = 2) -> bytes:
    import pymupdf

    with pymupdf.open() as pdf:
        for _ in range(pages):
            page = pdf.new_page(width=200, height=150)  # no text layer: a scan, as far as text goes
            page.draw_rect((0, 0, 30, 30), fill=(0, 0, 0))  # not blank (a blank page is checked pixel by pixel)
        return pdf.tobytes()


def read(cache: TextCache, data: bytes, page: int = 1, mode: str = "ocr", dpi: float = 72):
    """The page's text through `cache`, from a document opened afresh (as each request opens its upload)."""
    with open_bytes(data, "scan.pdf", dpi=dpi) as document:
        return PageTexts(document, mode, cache).get(document.pages[page - 1])


def test_a_second_read_of_a_page_pays_no_ocr(ocr_calls):
    cache, data = TextCache(4), pdf_bytes()
    first, second = read(cache, data), read(cache, data)
    assert second is first and first.source == "ocr" and first.text == "Total"
    assert len(ocr_calls) == 1 and (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_another_page_dpi_mode_or_file_is_read_again(ocr_calls):
    cache, data = TextCache(8), pdf_bytes()
    read(cache, data)
    read(cache, data, page=2)
    read(cache, data, dpi=144)
    read(cache, data, mode="auto")  # no text layer: auto OCRs too, but is its own entry
    read(cache, pdf_bytes(pages=3))  # other bytes: another file
    sizes = [size for size, _ in ocr_calls]
    assert len(ocr_calls) == 5 and sizes[2] == (400, 300) and sizes[0] == (200, 150)
    assert ocr_calls[1][1] == "scan.pdf page 2"
    assert cache.hits == 0 and len(cache) == 5
    read(cache, data, dpi=144)
    assert len(ocr_calls) == 5 and cache.hits == 1


def test_the_cache_is_bounded_least_recently_used_out(ocr_calls):
    cache, data = TextCache(2), pdf_bytes(pages=3)
    read(cache, data, page=1)
    read(cache, data, page=2)
    read(cache, data, page=1)  # page 1 used last: page 2 goes first
    read(cache, data, page=3)
    assert len(cache) == 2 and len(ocr_calls) == 3
    read(cache, data, page=1)
    assert len(ocr_calls) == 3
    read(cache, data, page=2)  # evicted: read again
    assert len(ocr_calls) == 4 and len(cache) == 2


def test_no_cache_and_a_failed_read_are_not_kept(monkeypatch, ocr_calls):
    data = pdf_bytes()
    off = TextCache(0)
    read(off, data), read(off, data)
    assert len(ocr_calls) == 2 and len(off) == 0

    failing = [DocreadError("corrupt", "scan.pdf page 1: cannot OCR it")]

    def flaky(image, where):
        if failing:
            raise failing.pop()
        return [Word("Later", (1.0, 1.0, 9.0, 9.0), 0)], 0.9

    monkeypatch.setattr("docread.text.evidence.ocr_words", flaky)
    cache = TextCache(4)
    with pytest.raises(DocreadError, match="cannot OCR"):
        read(cache, data)
    assert len(cache) == 0 and read(cache, data).text == "Later"


# -- served ------------------------------------------------------------------------------------------
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from kit.serving import http, image_bytes, second_joins_mid_batch, serving  # noqa: E402


def body(page: int, question: str, tokens: int = 6, **docread) -> dict:
    url = "data:image/png;base64," + base64.b64encode(image_bytes(page)).decode()
    content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
    options = {"max_slices": 0, "text": "ocr", **docread}
    messages = [{"role": "user", "content": content}]
    return {"model": "docread", "messages": messages, "max_tokens": tokens, "docread": options}


def ask(base: str, request: dict) -> dict:
    response = http().post(base + "/v1/chat/completions", json=request, timeout=SAFETY_S)
    assert response.status_code == 200, response.text
    return response.json()


def answer(base: str, request: dict) -> tuple:
    """The answer, its evidence and the page text its prompt had."""
    reply = ask(base, request)
    record = reply["docread"]
    return reply["choices"][0]["message"]["content"], record["evidence"], record["text_prompt"]


def text_cache(base: str) -> dict:
    return http().get(base + "/health", timeout=SAFETY_S).json()["cache"]["texts"]


def test_a_second_request_about_a_page_pays_no_ocr(tiny_reader, ocr_calls):
    with serving(tiny_reader, max_batch=1) as base:
        first, second = ask(base, body(1, "What?")), ask(base, body(1, "Who?"))
        assert len(ocr_calls) == 1 and text_cache(base) == {"pages": 1, "hits": 1, "misses": 1}
        ask(base, body(2, "What?"))
        assert len(ocr_calls) == 2 and text_cache(base)["pages"] == 2
    assert first["docread"]["grounded"] is not None  # the page's text was checked, both times
    assert second["docread"]["grounded"] == first["docread"]["grounded"]


REQUESTS = [body(3, "What?", tokens=8, text="off"), body(4, "Who signed it?", tokens=4, text_prompt="on")]


def test_ocr_runs_beside_the_batch_and_answers_are_as_alone(tiny_reader, monkeypatch):
    """The first request decodes; the second starts mid-batch and OCRs its page for its prompt: its OCR waits
    until the batch takes a step, which it can only while the OCR runs beside it. Both answers are as alone."""
    from docread.generate.joining import JoiningStep

    ocring, stepped = threading.Event(), threading.Event()

    def ocr(image, where):
        ocring.set()
        assert stepped.wait(SAFETY_S), "the batch did not step while OCR ran"
        return [Word("Total", (1.0, 1.0, 20.0, 8.0), 0)], 0.9

    def step(self, ids, __call__=JoiningStep.__call__):
        if ocring.is_set():
            stepped.set()
        return __call__(self, ids)

    with serving(tiny_reader, max_batch=1) as base:  # alone, one at a time: the OCR returns at once
        stepped.set()
        monkeypatch.setattr("docread.text.evidence.ocr_words", ocr)
        alone = [answer(base, r) for r in REQUESTS]
    ocring.clear(), stepped.clear()

    decoding = second_joins_mid_batch(monkeypatch, safety_s=SAFETY_S)
    monkeypatch.setattr(JoiningStep, "__call__", step)
    with serving(tiny_reader, max_batch=8) as base, ThreadPoolExecutor(2) as pool:
        running = pool.submit(answer, base, REQUESTS[0])
        assert decoding.wait(SAFETY_S)
        joining = pool.submit(answer, base, REQUESTS[1])
        together = [running.result(SAFETY_S), joining.result(SAFETY_S)]
    assert stepped.is_set() and together == alone
    assert alone[1][2]["source"] == "ocr" and alone[0][2] is None  # the second's prompt had the OCR'd text


def test_concurrent_requests_about_one_page_ocr_it_once(tiny_reader, ocr_calls):
    requests = [body(5, f"What is item {n}?", tokens=2) for n in range(4)]
    with serving(tiny_reader, max_batch=1) as base:
        alone = [answer(base, r) for r in requests]
    assert len(ocr_calls) == 1
    with serving(tiny_reader, max_batch=8) as base:
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda r: answer(base, r), requests, timeout=SAFETY_S * 2))
        assert text_cache(base) == {"pages": 1, "hits": 3, "misses": 1}
    assert together == alone and len(ocr_calls) == 2
