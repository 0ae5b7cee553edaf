"""`docread bench speed` in a process of its own (conftest's `speed_run`: every key present, figures sane, ratios
consistent; no timing is ever asserted), the fast decode path against the plain one, and the in-memory model builder."""

import json
import math

import numpy as np
import pytest
import torch
from kit.forked import GROUP
from PIL import Image

import docread
from docread.generate.dynamic import DynamicStep, crop_cache
from docread.generate.loop import DecodeStats, decode_tokens
from docread.generate.static import StaticStep, static_step_for

QUESTION = "What is written here?"
STAGES = {"render", "slice_normalise", "vision", "vision_sra", "vision_sampler", "prefill", "ttft", "followup_ttft"}
SIDE_KEYS = {
    "stages_ms",
    "decode_ms_per_token",
    "decode_tokens_per_s",
    "generated_tokens",
    "intake_ms_per_view",
    "grid",
    "views",
    "visual_tokens",
    "image_tokens",
    "prompt_tokens",
    "pixels",
    "effective_dpi",
    "peak_memory_mb",
    "memory",
}
TOP_KEYS = {
    "benchmark",
    "date",
    "model",
    "synthetic",
    "pages",
    "questions",
    "repeats",
    "max_new_tokens",
    "dpi",
    "threads",
    "device",
    "device_name",
    "dtype",
    "quantization",
    "cpu_count",
    "versions",
    "docread",
    "baseline",
    "ratios",
    "intake_speedup",
    "startup",
}


@pytest.fixture(scope="module")
def speed_json(speed_run):
    run = speed_run  # conftest: one real `docread bench speed ... --json` process a session
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.system
@pytest.mark.xdist_group(GROUP)  # conftest's speed_run, forked: on the worker of kit.forked's server
def test_speed_json_has_every_key(speed_json):
    assert TOP_KEYS <= speed_json.keys()
    assert speed_json["model"] == "synthetic-tiny" and speed_json["device"] == "cpu"
    assert speed_json["threads"] == 1 and speed_json["pages"] == 1 and speed_json["questions"] == 2
    assert {"torch", "transformers", "bitsandbytes", "python", "docread"} <= speed_json["versions"].keys()
    for side in ("docread", "baseline"):
        figures = speed_json[side]
        assert SIDE_KEYS <= figures.keys(), side
        assert set(figures["stages_ms"]) == STAGES
        for key in (
            "decode_ms_per_token",
            "decode_tokens_per_s",
            "intake_ms_per_view",
            "peak_memory_mb",
            "views",
            "visual_tokens",
            "pixels",
            "prompt_tokens",
        ):
            assert positive(figures[key]), (side, key, figures[key])
        assert figures["memory"] == "rss"


@pytest.mark.system
@pytest.mark.xdist_group(GROUP)
def test_speed_figures_are_consistent(speed_json):
    ours, theirs = speed_json["docread"], speed_json["baseline"]
    for key in ("render", "slice_normalise", "vision", "prefill", "ttft", "followup_ttft"):
        assert positive(ours["stages_ms"][key]) and positive(theirs["stages_ms"][key]), key
        assert speed_json["ratios"][key] == pytest.approx(
            ours["stages_ms"][key] / theirs["stages_ms"][key], rel=1e-3, abs=5e-5
        )  # ratios are rounded to 4 decimals
    parts = sum(ours["stages_ms"][k] for k in ("render", "slice_normalise", "vision", "prefill"))
    assert ours["stages_ms"]["ttft"] == pytest.approx(parts, abs=0.01)
    assert ours["stages_ms"]["vision_sra"] > 0 and ours["stages_ms"]["vision_sampler"] > 0
    assert theirs["stages_ms"]["vision_sra"] is None and speed_json["ratios"]["vision_sra"] is None
    for key in ("decode_ms_per_token", "intake_ms_per_view", "peak_memory_mb", "views", "visual_tokens", "pixels"):
        assert speed_json["ratios"][key] == pytest.approx(ours[key] / theirs[key], rel=1e-3, abs=5e-5), key
    assert ours["decode_tokens_per_s"] == pytest.approx(1000 / ours["decode_ms_per_token"], rel=1e-2)
    # a letter page: docread's 4 x 3 tiles + global view, LLaVA-NeXT's default 2 x 2 grid + its base view
    assert (ours["grid"], ours["views"], theirs["grid"], theirs["views"]) == ("4x3", 13, "2x2", 5)
    assert ours["pixels"] > theirs["pixels"] and ours["effective_dpi"] > theirs["effective_dpi"]
    assert ours["fast"]["same_tokens"] is True and positive(ours["fast"]["tokens_per_s"])
    overhead = ours["sra_overhead"]  # a ratio of two timings: a number, never asserted as a speed
    assert isinstance(overhead, (int, float)) and math.isfinite(overhead)
    startup = speed_json["startup"]
    assert positive(startup["docread_help_ms"]) and positive(startup["import_torch_ms"])
    assert startup["ratio"] == pytest.approx(startup["docread_help_ms"] / startup["import_torch_ms"], rel=1e-2)


# -- the fast decode path ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reader(tiny_llava_next):
    return docread.load(str(tiny_llava_next), device="cpu", quant="none")


def page_image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (700, 500, 3), dtype=np.uint8))


def plain_step(reader):
    return DynamicStep(reader.hires.language_model, reader.hires.lm_head)


def fast_step(reader):
    return static_step_for(reader.hires.language_model, reader.hires.lm_head)


def run(make_step, reader, embeds, **kwargs):
    stats = DecodeStats()
    tokens = [t for t, _ in decode_tokens(make_step(reader), embeds, eos_token_ids=[], stats=stats, **kwargs)]
    return tokens, stats


def test_fast_decode_matches_plain_decode_on_an_encoded_page(reader):
    with reader.open_page(page_image(), QUESTION) as encoded:
        embeds = reader._suffix(encoded, QUESTION)
        plain, plain_stats = run(plain_step, reader, embeds, max_new_tokens=24, cache=encoded.cache)
        crop_cache(encoded.cache, encoded.prefix_len)
        for _ in range(2):  # the second call reuses the decoder's static cache
            fast, fast_stats = run(fast_step, reader, embeds, max_new_tokens=24, cache=encoded.cache)
            assert fast == plain and len(fast) == 24
            assert fast_stats.logprobs == pytest.approx(plain_stats.logprobs, abs=1e-4)
            assert encoded.cache.get_seq_length() == encoded.prefix_len  # the page's prefix is left as it was


def test_fast_decode_without_a_cache_and_when_sampling(reader):
    width = reader.hires.language_model.config.hidden_size
    embeds = torch.randn(1, 40, width, generator=torch.Generator().manual_seed(0))
    for kwargs in ({}, {"temperature": 1.0, "seed": 7}):
        plain, _ = run(plain_step, reader, embeds, max_new_tokens=12, **kwargs)
        fast, _ = run(fast_step, reader, embeds, max_new_tokens=12, **kwargs)
        assert fast == plain, kwargs


def test_fast_decode_stops_at_eos(reader):
    with reader.open_page(page_image(1), QUESTION) as encoded:
        embeds = reader._suffix(encoded, QUESTION)
        plain, _ = run(plain_step, reader, embeds, max_new_tokens=8, cache=encoded.cache)
        crop_cache(encoded.cache, encoded.prefix_len)
        stats = DecodeStats()
        tokens = [
            t
            for t, _ in decode_tokens(
                fast_step(reader),
                embeds,
                max_new_tokens=8,
                eos_token_ids=[plain[3]],
                stats=stats,
                cache=encoded.cache,
            )
        ]
        assert tokens == plain[: plain.index(plain[3])] and stats.stopped_by == "eos"


def test_fast_decoder_refuses_a_sequence_longer_than_its_cache(reader):
    step = StaticStep(reader.hires.language_model, reader.hires.lm_head, max_cache_len=16)
    with pytest.raises(ValueError, match="static cache holds 16"):
        next(decode_tokens(step, torch.zeros(1, 10, 64), max_new_tokens=8, eos_token_ids=[]))


@pytest.mark.cuda
def test_compiled_fast_decode_matches_plain_on_cuda(tiny_llava_next):
    cuda = docread.load(str(tiny_llava_next), device="cuda", quant="none")
    with cuda.open_page(page_image(), QUESTION) as encoded:
        embeds = cuda._suffix(encoded, QUESTION)
        plain, _ = run(plain_step, cuda, embeds, max_new_tokens=16, cache=encoded.cache)
        crop_cache(encoded.cache, encoded.prefix_len)
        step = StaticStep(cuda.hires.language_model, cuda.hires.lm_head, compile=True)
        for _ in range(3):  # compile, record the CUDA graph, replay it
            compiled, _ = run(lambda _: step, cuda, embeds, max_new_tokens=16, cache=encoded.cache)
            assert compiled == plain


# -- the in-memory model builder (`--synthetic real`, here in toy shapes) ------------------------------------
def test_in_memory_builder_quantizes_only_the_llm_and_runs_both_sides():
    import bitsandbytes as bnb

    from docread.bench.speedsetup import baseline_processor
    from docread.testing import build_reader

    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        image_size=336,
        patch_size=42,
        projection_dim=32,
    )
    text = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4
    )
    reader = build_reader(device="cpu", quant="4bit", vision=vision, text=text, vocab_size=512)
    language_model = reader.hires.language_model
    assert len(language_model.layers) == language_model.config.num_hidden_layers == 3
    assert isinstance(language_model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in reader.base.model.model.vision_tower.modules())
    assert not isinstance(reader.base.model.lm_head, bnb.nn.Linear4bit)
    answer = reader.ask(page_image(), QUESTION, max_new_tokens=4)
    assert (answer.rows, answer.cols) == (3, 2) and answer.visual_tokens > 0
    inputs = baseline_processor(reader)(
        images=page_image(), text=f"USER: <image>\n{QUESTION} ASSISTANT:", return_tensors="pt"
    )
    out = reader.base.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_the_baselines_per_token_time_comes_from_one_generate_call(tiny_llava_next):
    """The baseline's decode figure: the time between its first and last new token in one `generate`, never
    the difference of a long and a short run (which noise made negative)."""
    from transformers import LlavaNextForConditionalGeneration

    from docread.bench.timing import token_arrivals

    model = LlavaNextForConditionalGeneration.from_pretrained(tiny_llava_next).eval()
    arrivals = token_arrivals()
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.inference_mode():
        model.generate(input_ids=ids, max_new_tokens=5, min_new_tokens=5, do_sample=False, streamer=arrivals)
    assert len(arrivals.times) == 5 and arrivals.times == sorted(arrivals.times)  # each new token, in order
    assert arrivals.ms_per_token() == pytest.approx((arrivals.times[-1] - arrivals.times[0]) * 1000 / 4)
    one = token_arrivals()
    one.put(ids)
    one.put(ids[:, :1])
    assert one.ms_per_token() == 0.0 and arrivals.ms_per_token() > 0
