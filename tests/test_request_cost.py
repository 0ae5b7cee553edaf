"""What a server's request thread no longer repeats (issue #21): a reader's kept page plans, one pair read
without a batch plan, text-only embeddings without the placeholder scatter, a cached image's frames not parsed
again. Each shortcut gives what the long way gives."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
from PIL import Image

import docread.pagework
from docread.document import ask_document
from docread.errors import ContextOverflow
from docread.intake import open_bytes
from docread.settings import Settings

PAGE = (640, 480)


def png(size=PAGE, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.paste((10, 10, 240), (0, 0, size[0] // 2, size[1] // 3))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_a_plan_is_kept_and_a_changed_input_plans_afresh(tiny_reader, monkeypatch):
    reader = tiny_reader
    first, ids = reader.plan(*PAGE, "What is the total?", max_new_tokens=8)
    again, same_ids = reader.plan(*PAGE, "What is the total?", max_new_tokens=8)
    assert again is first and same_ids == ids  # kept, not planned again
    longer = "What is the total amount due, written in words, on the last line of this page?"
    changes = [
        ((*PAGE, longer), {"max_new_tokens": 8}),  # a longer prompt
        ((*PAGE, "What is the total?"), {"max_new_tokens": 9}),
        ((*PAGE, "What is the total?"), {"max_new_tokens": 8, "max_slices": 1}),
        ((480, 640, "What is the total?"), {"max_new_tokens": 8}),
    ]
    for args, options in changes:
        plan, ids = reader.plan(*args, **options)
        fresh = reader._plan(*args[:2], len(ids) - 1, options.get("max_slices", reader.preset.max_slices),
                             options["max_new_tokens"], "hires")  # fmt: skip
        assert plan is not first and plan == fresh
    # a smaller context (a test's, or another reader's) never gets a plan made for a larger one
    context = reader.context
    needed = first.tokens.image_tokens + len(same_ids) - 1 + 8  # the page, the prompt around it, the answer
    monkeypatch.setattr(reader, "context", needed - 1)
    smaller = None
    try:
        smaller, _ = reader.plan(*PAGE, "What is the total?", max_new_tokens=8)
    except ContextOverflow:
        pass
    assert smaller is None or smaller.tokens.image_tokens < first.tokens.image_tokens
    monkeypatch.setattr(reader, "context", context)
    assert reader.plan(*PAGE, "What is the total?", max_new_tokens=8)[0] is first


def test_text_alone_embeds_as_the_placeholder_path_does(tiny_reader):
    ids = tiny_reader._ids("What is the total?")
    suffix = ids[ids.index(tiny_reader.base.image_token_id) + 1 :]
    with torch.inference_mode():
        short = tiny_reader._embed(suffix, None)
        long = tiny_reader.hires.embed_prompt(torch.tensor([suffix]), [])
    assert short.shape == long.shape == (1, len(suffix), long.shape[-1]) and torch.equal(short, long)


def test_one_pair_reads_without_a_batch_plan_and_answers_the_same(tiny_reader, tmp_path, monkeypatch):
    from docread.intake import open_document
    from docread.pagework import answer_pages, page_work

    path = tmp_path / "page.png"
    path.write_bytes(png((96, 64)))
    settings = Settings(max_new_tokens=2, max_slices=0, text="off")  # one view, two tokens, no OCR: cheap
    planned = []
    real = docread.pagework.reader_plan
    monkeypatch.setattr(docread.pagework, "reader_plan", lambda *a, **k: planned.append(a) or real(*a, **k))
    with open_document(str(path)) as document:  # the long way: no pair count given, the batch planned
        work = page_work(document, document.pages[0], ["What color?"], settings)
        ((_, planned_way),) = answer_pages(tiny_reader, [work], settings)
    assert len(planned) == 1
    (one,) = ask_document(tiny_reader, str(path), ["What color?"], settings=settings)
    assert len(planned) == 1  # one page, one question: the batch size cannot matter, it is not planned
    unplanned, expected = one.best.to_json(), planned_way.answer.to_json()
    for key in ("timing_ms", "grounded"):  # how long it took; evidence ask_document adds
        unplanned.pop(key), expected.pop(key)
    assert unplanned == expected

    class Planned(Exception):
        pass

    def plan(*args, **options):
        raise Planned  # two pairs may decode together: planned (before any page is read)

    monkeypatch.setattr(docread.pagework, "reader_plan", plan)
    with pytest.raises(Planned):
        ask_document(tiny_reader, str(path), ["What color?", "What shape?"], settings=settings)


def test_a_cached_image_is_not_parsed_again_and_renders_the_same(monkeypatch):
    data = png(color=(1, 2, 3))
    sha256 = hashlib.sha256(data).hexdigest()
    with open_bytes(data, "a.png") as first:  # read once: its frames are kept
        pages, pixels = first.pages, first.render(first.pages[0], 64, 48).tobytes()
    opened = []
    real = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real(*a, **k))
    with open_bytes(data, "b.png", decoded={sha256}) as kept:
        assert kept.pages == pages and kept.name == "b.png" and kept.sha256 == sha256
        assert opened == []  # known to decode, frames kept: not even opened
        assert kept.render(kept.pages[0], 64, 48).tobytes() == pixels  # opened at its first render
        assert opened == [1]
    with open_bytes(data, "c.png") as unvouched:  # not among `decoded`: opened and checked as ever
        assert unvouched.pages == pages and opened == [1, 1]


def test_kept_frames_follow_the_pixel_cap():
    from docread.errors import DocreadError
    from docread.intake import Limits

    data = png(color=(4, 5, 6))
    sha256 = hashlib.sha256(data).hexdigest()
    with open_bytes(data, "a.png"):
        pass
    with pytest.raises(DocreadError) as failed:  # a smaller cap: read again, refused as ever
        open_bytes(data, "a.png", decoded={sha256}, limits=Limits(max_pixels=100))
    assert failed.value.code == "too_large"


TEXTS = ["", " ", "hello", "USER: <image>\nWhat?  ASSISTANT:", "émoji 😀 <s> </s> tabs\tand\nnewlines", "ab " * 200]


def test_text_ids_are_the_tokenizers_own(tiny_reader):
    from docread.views.processor import _plain_call, text_ids

    tokenizer = tiny_reader.base.tokenizer
    assert _plain_call(type(tokenizer))  # the tests' tokenizer takes the direct path
    for text in TEXTS:
        assert text_ids(tokenizer, text) == tokenizer(text).input_ids, text
    backend, full = tokenizer._tokenizer, tokenizer(TEXTS[-1]).input_ids
    backend.enable_truncation(max_length=3)  # left on the backend: the call's own path, which clears it
    try:
        assert text_ids(tokenizer, TEXTS[-1]) == full and len(full) > 3
    finally:
        backend.no_truncation()

    class Overridden(type(tokenizer)):
        def _encode_plus(self, *args, **kwargs):
            return super()._encode_plus(*args, **kwargs)

    assert not _plain_call(Overridden)  # a tokenizer with a path of its own is called as ever


def test_an_upload_whose_digest_is_given_is_not_hashed_again(monkeypatch):
    data = png(color=(7, 8, 9))
    expected = hashlib.sha256(data).hexdigest()
    hashed = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: hashed.append(1) or real(*a))
    for _ in range(3):  # a server's data: URL memo hands its kept digest with each request about the page
        with open_bytes(data, "a.png", sha256=expected) as document:
            assert document.sha256 == expected
    assert hashed == []
    with open_bytes(data, "a.png") as document:  # no digest given: computed, the same
        assert document.sha256 == expected and hashed == [1]
    changing = bytearray(data)  # any buffer: hashed as it is
    with open_bytes(changing, "a.png") as document:
        assert document.sha256 == expected and hashed == [1, 1]
