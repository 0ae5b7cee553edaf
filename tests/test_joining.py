"""Continuous batching's cache (`generate.joining`): rows that join a running batch alone or together (their
prompts prefilled as one padded batch), leave it, and decode past the room kept after the cache's columns give
batch 1's greedy tokens; a step writes its column in place (`RoomyLayer`) and the pages' prefixes are untouched."""

import numpy as np
import pytest
import torch
from PIL import Image

from docread.generate.dynamic import DynamicStep, crop_cache
from docread.generate.joining import ROOM, JoiningStep, RoomyLayer
from docread.generate.loop import DecodeStats, Row, decode_joining, decode_tokens

SIZES = [(700, 500), (300, 300), (1200, 420)]  # different tile counts: different prefix lengths
QUESTIONS = ["What?", "What is written in the top left corner of this page, exactly?", "Total amount due"]
LONG = ROOM + 6  # tokens: the batch's buffers fill up and move once


@pytest.fixture(scope="module")
def pages(tiny_reader):
    images = [
        Image.fromarray(np.random.default_rng(10 + s).integers(0, 256, (h, w, 3), dtype=np.uint8))
        for s, (w, h) in enumerate(SIZES)
    ]
    return [
        tiny_reader.encode(lambda w, h, im=im: im.resize((w, h)), *im.size, QUESTIONS, max_new_tokens=LONG)
        for im in images
    ]


def alone(reader, encoded, question: str, max_new_tokens: int) -> tuple[list[int], DecodeStats]:
    stats, model = DecodeStats(), (reader.hires.language_model, reader.hires.lm_head)
    embeds = reader._suffix(encoded, question)
    try:
        step = DynamicStep(*model)
        kwargs = dict(max_new_tokens=max_new_tokens, eos_token_ids=[], stats=stats, cache=encoded.cache)
        return [t for t, _ in decode_tokens(step, embeds, **kwargs)], stats
    finally:
        crop_cache(encoded.cache, encoded.prefix_len)


def test_rows_joining_alone_and_together_and_leaving_decode_batch_ones_tokens(tiny_reader, pages):
    # (page, question, tokens, the call of `arrivals` it comes at): one alone first, two together (different
    # prefixes and prompts: one padded prefill) while it decodes, one that ends early, one alone later
    plan = [(0, 0, LONG, 0), (1, 1, LONG, 3), (2, 2, 4, 3), (0, 1, 12, 9)]
    rows = [Row(tiny_reader._suffix(pages[p], QUESTIONS[q]), n, prefix=pages[p].cache) for p, q, n, _ in plan]
    calls, joins = [], []
    step = JoiningStep(tiny_reader.hires.language_model, tiny_reader.hires.lm_head)
    join = step.join
    step.join = lambda embeds, prefixes: (joins.append(len(embeds)), join(embeds, prefixes))[1]

    def arrivals(free: int, empty: bool) -> list[Row]:
        calls.append(free)
        return [row for row, (_, _, _, at) in zip(rows, plan) if at == len(calls) - 1]

    tokens: dict[int, list[int]] = {id(row): [] for row in rows}
    for row, token, _ in decode_joining(step, arrivals, eos_token_ids=[], max_rows=8):
        if token is not None:
            tokens[id(row)].append(token)
    assert joins == [1, 2, 1]  # the two that came together were prefilled together
    for row, (p, q, n, _) in zip(rows, plan):
        expected, stats = alone(tiny_reader, pages[p], QUESTIONS[q], n)
        assert tokens[id(row)] == expected and len(expected) == n, (p, q)
        assert row.stats.logprobs == pytest.approx(stats.logprobs, abs=1e-4)
    assert all(page.cache.get_seq_length() == page.prefix_len for page in pages)  # prefixes copied, not grown
    assert step.cache is None  # every row left: the next one starts a new batch


def test_a_step_writes_its_column_in_place_until_the_room_is_used():
    torch.manual_seed(0)
    layer, reference = RoomyLayer(), None
    for columns in (5, *[1] * (ROOM + 1)):
        keys, values = torch.randn(2, 3, columns, 4), torch.randn(2, 3, columns, 4)
        before = layer.keys.data_ptr() if reference is not None else None
        got_keys, got_values = layer.update(keys, values)
        reference = (
            (keys, values) if reference is None else tuple(torch.cat(p, -2) for p in zip(reference, (keys, values)))
        )
        assert torch.equal(got_keys, reference[0]) and torch.equal(got_values, reference[1])
        moved = before is not None and layer.keys.data_ptr() != before
        assert moved == (reference[0].shape[-2] == 5 + ROOM + 1)  # in place until the room runs out, then moved once
    layer.batch_select_indices(torch.tensor([1]))  # a row left: its keys are a new tensor, moved at the next update
    keys, values = torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4)
    got_keys, got_values = layer.update(keys, values)
    assert torch.equal(got_keys, torch.cat([reference[0][1:], keys], -2))
    assert torch.equal(got_values, torch.cat([reference[1][1:], values], -2))
    assert layer.get_seq_length() == 5 + ROOM + 2


def test_greedy_rows_pick_from_the_batchs_logits_what_they_pick_alone():
    from docread.generate.loop import choose, greedy_picks

    torch.manual_seed(1)
    logits = torch.randn(5, 300) * 4
    logits[2, 7] = logits[2, 11] = logits[2].max() + 1  # a tie: the first index, as alone
    embeds = torch.zeros(1, 1, 4)
    rows = [Row(embeds, 4), Row(embeds, 4, temperature=0.7, seed=3), Row(embeds, 4), Row(embeds, 4), Row(embeds, 4)]
    rows[3].constrain = lambda scores, tokens: scores  # constrained: picks alone
    picks = greedy_picks(rows, logits)
    assert picks[1] is None and picks[3] is None and picks[2][0] == 7
    for j in (0, 2, 4):
        row = Row(embeds, 4)
        assert choose(row, logits[j : j + 1], None, set()) == picks[j][0]
        assert row.stats.logprobs == [picks[j][1]]  # the same float, not merely close
    assert greedy_picks(rows[:1], logits[:1]) == [None]  # one row: nothing to share
