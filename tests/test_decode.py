"""The one decode loop (`docread.generate.loop.decode_tokens`) over both steps on the tiny model: the
dynamic and the static cache give the same tokens; EOS, max_new_tokens and a constraint stop or steer
it; seeded sampling repeats."""

import pytest
import torch

from docread.generate.dynamic import DynamicStep
from docread.generate.loop import DecodeStats, decode_tokens, step_for
from docread.generate.static import StaticStep


@pytest.fixture(scope="module")
def model(tiny_reader):
    return tiny_reader.hires.language_model, tiny_reader.hires.lm_head


@pytest.fixture(scope="module")
def embeds(model):
    width = model[0].config.hidden_size
    return torch.randn(1, 24, width, generator=torch.Generator().manual_seed(0))  # (1, T, D)


STEPS = {"dynamic": DynamicStep, "static": StaticStep}


def decode(step, embeds, **kwargs):
    stats = DecodeStats()
    kwargs = {"max_new_tokens": 12, "eos_token_ids": [], **kwargs}
    pairs = list(decode_tokens(step, embeds, stats=stats, **kwargs))
    return [t for t, _ in pairs], [p for _, p in pairs], stats


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "seed": 3}], ids=["greedy", "seeded"])
def test_both_steps_give_the_same_tokens(model, embeds, sampling):
    dynamic, dynamic_logprobs, _ = decode(DynamicStep(*model), embeds, **sampling)
    static = StaticStep(*model)
    for _ in range(2):  # the second answer reuses the static cache
        tokens, logprobs, _ = decode(static, embeds, **sampling)
        assert tokens == dynamic and len(tokens) == 12
        assert logprobs == pytest.approx(dynamic_logprobs, abs=1e-4)


def test_step_for_picks_the_cache(model):
    assert isinstance(step_for(*model), DynamicStep)
    assert step_for(*model, static=True) is step_for(*model, static=True)  # one static cache per model


@pytest.mark.parametrize("kind", STEPS)
def test_eos_stops_before_the_eos_token(model, embeds, kind):
    plain, _, _ = decode(STEPS[kind](*model), embeds)
    eos = plain[5]
    tokens, _, stats = decode(STEPS[kind](*model), embeds, eos_token_ids=[eos])
    assert tokens == plain[: plain.index(eos)] and eos not in tokens
    assert stats.stopped_by == "eos" and stats.tokens == tokens


@pytest.mark.parametrize("kind", STEPS)
def test_max_new_tokens_stops(model, embeds, kind):
    tokens, logprobs, stats = decode(STEPS[kind](*model), embeds, max_new_tokens=5)
    assert len(tokens) == len(logprobs) == 5 and stats.stopped_by == "length"
    assert stats.score == pytest.approx(sum(logprobs) / 5) and all(p <= 0 for p in logprobs)
    assert stats.prefill_ms > 0 and stats.decode_ms > 0
    _, _, empty = decode(STEPS[kind](*model), embeds, max_new_tokens=0)
    assert empty.tokens == [] and empty.score is None and empty.stopped_by == "length"


@pytest.mark.parametrize("kind", STEPS)
@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.5, "seed": 0}], ids=["greedy", "seeded"])
def test_a_constraint_is_honoured(model, embeds, kind, sampling):
    plain, _, _ = decode(STEPS[kind](*model), embeds, **sampling)
    banned = sorted(set(plain))[:3]  # tokens the model does pick when unconstrained
    seen = []

    def forbid(logits, generated):  # logits (1, V)
        seen.append(list(generated))
        logits = logits.clone()
        logits[:, banned] = float("-inf")
        return logits

    tokens, logprobs, _ = decode(STEPS[kind](*model), embeds, constrain=forbid, **sampling)
    assert len(tokens) == 12 and not set(tokens) & set(banned)
    assert seen == [tokens[:n] for n in range(12)]  # called once a step with the answer so far
    assert all(p <= 0 for p in logprobs)


def test_a_constraint_that_leaves_one_token_forces_it(model, embeds):
    def only_seven(logits, generated):
        mask = torch.full_like(logits, float("-inf"))  # (1, V)
        mask[:, 7] = 0
        return logits + mask

    tokens, logprobs, _ = decode(DynamicStep(*model), embeds, constrain=only_seven, max_new_tokens=4)
    assert tokens == [7] * 4 and logprobs == [0.0] * 4  # the constrained distribution is certain


@pytest.mark.parametrize("kind", STEPS)
def test_seeded_sampling_repeats_and_seeds_differ(model, embeds, kind):
    first, again, other = (decode(STEPS[kind](*model), embeds, temperature=1.5, seed=s)[0] for s in (1, 1, 2))
    assert first == again and first != other
