"""Batched decoding (`generate.loop.decode_rows`, `DocReader.answer_many`) on the tiny model, fp32 on CPU:
greedy rows are batch 1's tokens for mixed pages, prompt lengths and stops, in the dynamic and the static
cache; a seeded row samples as it does alone; finished rows leave the batch without changing the others."""

import numpy as np
import pytest
import torch
from PIL import Image

from docread.generate.dynamic import DynamicStep, crop_cache
from docread.generate.loop import DecodeStats, Row, decode_rows, decode_tokens
from docread.generate.static import StaticStep
from docread.views.encoded import PageQuestion

STEPS = {"plain": DynamicStep, "fast": StaticStep}
SIZES = [(700, 500), (300, 300), (1200, 420)]  # different tile counts: different prefix lengths
QUESTIONS = ["What?", "What is written in the top left corner of this page, exactly?", "Total amount due"]


@pytest.fixture(scope="module")
def reader(tiny_reader):
    return tiny_reader


@pytest.fixture(scope="module")
def pages(reader):
    images = [
        Image.fromarray(np.random.default_rng(s).integers(0, 256, (h, w, 3), dtype=np.uint8))
        for s, (w, h) in enumerate(SIZES)
    ]
    encoded = [
        reader.encode(lambda w, h, im=im: im.resize((w, h)), *im.size, QUESTIONS, max_new_tokens=24) for im in images
    ]
    assert len({e.prefix_len for e in encoded}) == 3 and len({e.page_plan.plan.tiles for e in encoded}) > 1
    return encoded


def alone(reader, step, encoded, question, **row):
    """Tokens and stats of one question decoded by itself (batch 1, the old path)."""
    stats = DecodeStats()
    embeds = reader._suffix(encoded, question)
    kwargs = {"eos_token_ids": [], "max_new_tokens": 12, **row}
    try:
        tokens = [t for t, _ in decode_tokens(step, embeds, stats=stats, cache=encoded.cache, **kwargs)]
    finally:
        crop_cache(encoded.cache, encoded.prefix_len)
    return tokens, stats


def together(reader, step, requests, eos_token_ids=()):
    """Each request (encoded, question, row kwargs) decoded in one batch: (tokens, stats) a row."""
    rows = [Row(reader._suffix(e, q), prefix=e.cache, **{"max_new_tokens": 12, **kw}) for e, q, kw in requests]
    tokens = [[] for _ in rows]
    for i, token, _ in decode_rows(step, rows, eos_token_ids=eos_token_ids):
        if token is not None:
            tokens[i].append(token)
    for e, _, _ in requests:
        if len(requests) > 1:  # a batch copies the pages' prefixes, never grows them
            assert e.cache.get_seq_length() == e.prefix_len
        crop_cache(e.cache, e.prefix_len)  # one row grows its page's own, as `answer` does
    return [(t, row.stats) for t, row in zip(tokens, rows)]


def final(stream):
    list(stream)
    return stream.answer


def mixed(pages):
    """Four rows: three pages, three prompt lengths, four max_new_tokens (one page asked twice)."""
    return [
        (pages[0], QUESTIONS[0], {"max_new_tokens": 12}),
        (pages[1], QUESTIONS[1], {"max_new_tokens": 3}),
        (pages[2], QUESTIONS[2], {"max_new_tokens": 8}),
        (pages[0], QUESTIONS[1], {"max_new_tokens": 1}),
    ]


@pytest.mark.parametrize("kind", STEPS)
def test_batched_greedy_is_batch_one_token_for_token(reader, pages, kind):
    model = reader.hires.language_model, reader.hires.lm_head
    batch = together(reader, STEPS[kind](*model), mixed(pages))
    for (encoded, question, kw), (tokens, stats) in zip(mixed(pages), batch):
        expected, expected_stats = alone(reader, DynamicStep(*model), encoded, question, **kw)
        assert tokens == expected and len(tokens) == kw["max_new_tokens"]
        assert stats.logprobs == pytest.approx(expected_stats.logprobs, abs=1e-4)
        assert stats.stopped_by == "length" and stats.prefill_ms > 0 and stats.decode_ms > 0


@pytest.mark.parametrize("kind", STEPS)
def test_eos_ends_one_row_and_the_others_go_on(reader, pages, kind):
    model = reader.hires.language_model, reader.hires.lm_head
    requests = mixed(pages)[:3]
    plain = [alone(reader, DynamicStep(*model), e, q)[0] for e, q, _ in requests]
    eos = plain[0][4]  # the first row stops at its fifth token
    batch = together(reader, STEPS[kind](*model), [(e, q, {}) for e, q, _ in requests], eos_token_ids=[eos])
    for (tokens, stats), expected in zip(batch, plain):
        stop = expected.index(eos) if eos in expected else len(expected)
        assert tokens == expected[:stop]
        assert stats.stopped_by == ("eos" if eos in expected else "length")
    assert batch[0][1].stopped_by == "eos" and len(batch[0][0]) < 12


def test_finished_rows_leave_the_batch(reader, pages):
    seen = []

    class Counting(DynamicStep):
        def __call__(self, ids):
            seen.append(ids.shape[0])
            return super().__call__(ids)

    model = reader.hires.language_model, reader.hires.lm_head
    together(reader, Counting(*model), mixed(pages))
    # 4 rows; after token 1 the max_new_tokens=1 row leaves, after 3 the next, after 8 the next
    assert seen == [3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1]


@pytest.mark.parametrize("kind", STEPS)
def test_a_seeded_row_samples_as_it_does_alone(reader, pages, kind):
    model = reader.hires.language_model, reader.hires.lm_head
    seeded = (pages[1], QUESTIONS[0], {"temperature": 1.5, "seed": 11})
    by_itself = alone(reader, DynamicStep(*model), pages[1], QUESTIONS[0], temperature=1.5, seed=11)[0]
    company = [
        [seeded],
        [
            (pages[0], QUESTIONS[1], {"temperature": 1.5, "seed": 11}),
            seeded,
            (pages[2], QUESTIONS[2], {"max_new_tokens": 2}),
        ],
        [(pages[2], QUESTIONS[0], {"temperature": 0.7, "seed": 1}), (pages[0], QUESTIONS[2], {}), seeded],
    ]
    for requests in company:
        batch = together(reader, STEPS[kind](*model), requests)
        assert batch[requests.index(seeded)][0] == by_itself
    other_seed = alone(reader, DynamicStep(*model), pages[1], QUESTIONS[0], temperature=1.5, seed=12)[0]
    assert other_seed != by_itself  # the seed matters, so the equality above says something


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
def test_answer_many_equals_answer_one_at_a_time(reader, pages, fast):
    requests = [PageQuestion(e, q, kw["max_new_tokens"]) for e, q, kw in mixed(pages)]
    requests.append(PageQuestion(pages[2], QUESTIONS[0], 6, temperature=1.2, seed=4))
    batched = reader.answer_many(requests, fast=fast)
    for request, got in zip(requests, batched):
        stream = reader.answer(
            request.encoded,
            request.question,
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature,
            seed=request.seed,
        )
        list(stream)
        expected = stream.answer
        assert (got.file, got.page, got.question) == (expected.file, expected.page, expected.question)
        assert got.answer == expected.answer and got.generated_tokens == expected.generated_tokens
        assert got.prompt_tokens == expected.prompt_tokens and got.tiles == expected.tiles
        assert got.stopped_by == expected.stopped_by and got.score == pytest.approx(expected.score, abs=1e-4)


def test_stream_many_streams_each_row_and_ends_it_with_its_answer(reader, pages):
    requests = [(pages[0], QUESTIONS[0], 5), (pages[1], QUESTIONS[2], 2)]
    texts, answers = ["", ""], {}
    for i, event in reader.stream_many(requests):
        assert i not in answers  # nothing of a row after its answer
        if isinstance(event, str):
            texts[i] += event
        else:
            answers[i] = event
    assert sorted(answers) == [0, 1]
    assert [texts[i].strip() for i in (0, 1)] == [answers[i].answer for i in (0, 1)]
    assert [answers[i].generated_tokens for i in (0, 1)] == [5, 2]


def test_one_row_is_the_old_path(reader, pages):
    """A batch of one continues the page's own cache in place, as `answer` does, and gives its answer."""
    model = reader.hires.language_model, reader.hires.lm_head
    encoded = pages[2]
    step = DynamicStep(*model)
    rows = [Row(reader._suffix(encoded, QUESTIONS[1]), 7, encoded.cache)]
    tokens = [t for _, t, _ in decode_rows(step, rows, eos_token_ids=[]) if t is not None]
    assert step.cache is encoded.cache and step.mask is None
    assert encoded.cache.get_seq_length() == encoded.prefix_len + rows[0].inputs_embeds.shape[1] + 6
    crop_cache(encoded.cache, encoded.prefix_len)
    assert tokens == alone(reader, DynamicStep(*model), encoded, QUESTIONS[1], max_new_tokens=7)[0]
    (one,) = reader.answer_many([(encoded, QUESTIONS[1], 7)])
    assert one.answer == final(reader.answer(encoded, QUESTIONS[1], max_new_tokens=7)).answer


def test_rows_without_a_prefix_and_an_empty_batch(reader):
    model = reader.hires.language_model, reader.hires.lm_head
    width = model[0].config.hidden_size
    embeds = [torch.randn(1, n, width, generator=torch.Generator().manual_seed(n)) for n in (5, 17)]
    for kind in STEPS.values():
        rows = [Row(e, 6) for e in embeds]
        got = [[] for _ in rows]
        for i, t, _ in decode_rows(kind(*model), rows, eos_token_ids=[]):
            if t is not None:
                got[i].append(t)
        assert got == [
            [t for t, _ in decode_tokens(DynamicStep(*model), e, max_new_tokens=6, eos_token_ids=[])] for e in embeds
        ]
    assert list(decode_rows(DynamicStep(*model), [], eos_token_ids=[])) == []


@pytest.mark.cuda
def test_compiled_batched_fast_decode_matches_batch_one_on_cuda(tiny_llava_next):
    """On CUDA (fp32, tiny model) the compiled static step's rows are batch 1's tokens; run by .ci/gpu."""
    import docread

    cuda = docread.load(str(tiny_llava_next), device="cuda", quant="none")
    images = [
        Image.fromarray(np.random.default_rng(s).integers(0, 256, (h, w, 3), dtype=np.uint8))
        for s, (w, h) in enumerate(SIZES)
    ]
    pages = [
        cuda.encode(lambda w, h, im=im: im.resize((w, h)), *im.size, QUESTIONS, max_new_tokens=24) for im in images
    ]
    model = cuda.hires.language_model, cuda.hires.lm_head
    step = StaticStep(*model, compile=True)
    for _ in range(3):  # compile, record the CUDA graph, replay it
        batch = together(cuda, step, mixed(pages))
        for (encoded, question, kw), (tokens, _) in zip(mixed(pages), batch):
            assert tokens == alone(cuda, DynamicStep(*model), encoded, question, **kw)[0]
