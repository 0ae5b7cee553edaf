"""The HiRes-LLaVA model on tiny random llava-hf checkpoints: reference equivalence, identity at
init, the adapter crossing tile borders, gradients, 4-bit, context budget, adapter files."""

import numpy as np
import pytest
import torch
from PIL import Image

import docread
from docread.errors import DocreadError
from docread.model.adapters import attach_lora, save_adapter
from docread.views.processor import expand_image_token, prompt_ids

QUESTION = "What is written here?"
PROMPT = f"USER: <image>\n{QUESTION} ASSISTANT:"


def random_image(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def reader(tiny_reader):
    """conftest's session reader (docread.load(tiny_llava, device="cpu", quant="none")); these tests only read."""
    return tiny_reader


def hf_greedy(path, image, max_new_tokens):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(path)
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    inputs = processor(images=image, text=PROMPT, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    return new, inputs, processor


def test_reference_equivalence_with_transformers_llava(tiny_llava, reader):
    """--max-slices 0, untrained modules, a 336x336 image: token for token transformers' greedy answer."""
    image = random_image(336, 336)
    expected, inputs, processor = hf_greedy(tiny_llava, image, max_new_tokens=12)
    stream = reader.stream(image, QUESTION, max_slices=0, max_new_tokens=12)
    text = "".join(stream)
    eos = processor.tokenizer.eos_token_id
    expected_tokens = expected[: expected.index(eos)] if eos in expected else expected
    assert stream.tokens == expected_tokens
    assert len(expected_tokens) >= 3  # the tiny model really says something
    assert (
        text.strip()
        == stream.answer.answer
        == processor.tokenizer.decode(expected_tokens, skip_special_tokens=True).strip()
    )
    answer = stream.answer
    assert (answer.rows, answer.cols, answer.tiles, answer.visual_tokens) == (0, 0, 0, 64)
    # the prompt docread built is the one llava-hf's processor builds
    assert answer.prompt_tokens == inputs["input_ids"].shape[1]


def test_pixels_match_llava_hf_processor(tiny_llava, reader):
    from docread.views.processor import normalise

    image = random_image(336, 336, seed=3)
    _, inputs, _ = hf_greedy(tiny_llava, image, max_new_tokens=1)
    ours = normalise(np.asarray(image)[None], reader.base.image_mean, reader.base.image_std)
    assert torch.equal(ours, inputs["pixel_values"])


def test_untrained_modules_are_identity_and_average_pooling(reader):
    """SRA exact identity, SMS = average pooling of the encoder's tile features."""
    hires = reader.hires
    pixels = torch.randn(1 + 4, 3, 336, 336)
    grids = [(2, 2)]
    features = hires.encode_views(pixels, grids)  # (5, 64, C)
    plain = hires.vision(pixels, output_hidden_states=True).hidden_states[hires.modules.config.feature_layer][:, 1:]
    assert torch.equal(features, plain)
    sequence = hires.image_embeddings(pixels, grids)[0]
    side = hires.modules.config.tokens_side
    tiles = plain[1:].transpose(1, 2).reshape(4, -1, side, side)
    pooled = torch.nn.functional.avg_pool2d(tiles, 2).flatten(2).transpose(1, 2)  # (4, 16, C)
    projected = hires.projector(pooled)
    per_tile = hires.modules.config.tokens_per_tile
    assert sequence.shape[0] == 64 + 4 * per_tile + 5
    torch.testing.assert_close(sequence[:64], hires.projector(plain[0]))
    sep_a, sep_b, sep_c = hires.modules.separators
    torch.testing.assert_close(sequence[64], sep_a)
    for i in range(4):
        start = 65 + i * (per_tile + 1)
        torch.testing.assert_close(sequence[start : start + per_tile], projected[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sequence[start + per_tile], sep_c if i % 2 else sep_b)


def _randomise(modules, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in modules.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)


def test_adapter_crosses_tile_borders(tiny_llava):
    reader = docread.load(str(tiny_llava), device="cpu", quant="none")
    hires = reader.hires
    pixels = torch.randn(1 + 2, 3, 336, 336)  # global view + a 1x2 grid
    changed = pixels.clone()
    changed[1, :, :100, :100] += 1.0  # pixels inside tile (0,0) only
    untouched = lambda: (hires.encode_views(pixels, [(1, 2)]), hires.encode_views(changed, [(1, 2)]))  # noqa: E731
    before, after = untouched()
    assert not torch.equal(before[1], after[1])
    assert torch.equal(before[2], after[2]), "without a trained adapter, tiles are encoded independently"
    _randomise(hires.modules)
    before, after = untouched()
    assert not torch.allclose(before[2], after[2]), "the adapter must carry tile (0,0)'s change into tile (0,1)"
    assert torch.equal(before[0], after[0]), "the global view is encoded on its own"


def test_gradients_reach_hires_parts_and_lora_only(tiny_llava):
    reader = docread.load(str(tiny_llava), device="cpu", quant="none")
    hires, llava = reader.hires, reader.base.model
    attach_lora(llava, r=4, alpha=8)
    _randomise(hires.modules)
    trainable = dict(hires.modules.named_parameters())
    for name, p in llava.named_parameters():
        if "lora_" in name:
            with torch.no_grad():
                p.add_(0.01)  # lora_B starts at zero: move it, as one training step would
            p.requires_grad_(True)
            trainable[name] = p
    hires.modules.requires_grad_(True)
    frozen = {n: p for n, p in llava.named_parameters() if "lora_" not in n}
    pixels = torch.randn(1 + 4, 3, 336, 336)
    sequences = hires.image_embeddings(pixels, [(2, 2)])
    ids = prompt_ids(reader.base.tokenizer, reader.template, QUESTION, reader.base.image_token_id)
    ids = expand_image_token(ids, reader.base.image_token_id, sequences[0].shape[0])
    embeds = hires.embed_prompt(torch.tensor([ids]), sequences)
    hidden = hires.language_model(inputs_embeds=embeds).last_hidden_state
    hires.lm_head(hidden).logsumexp(-1).mean().backward()
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached: {missing}"
    assert all(p.grad is None for p in frozen.values()), "a frozen base weight got a gradient"
    assert any("lora_" in n for n in trainable) and len(trainable) > 10


def test_adapter_file_round_trips_exactly(tiny_llava, tmp_path):
    reader = docread.load(str(tiny_llava), device="cpu", quant="none")
    config = attach_lora(reader.base.model, r=4, alpha=8)
    _randomise(reader.hires.modules, seed=1)
    with torch.no_grad():
        for name, p in reader.base.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    path = save_adapter(tmp_path / "adapter", reader.hires.modules, reader.base.model, lora_config=config)
    assert path.name == "adapter.safetensors"
    image = random_image(500, 700, seed=2)
    first = reader.ask(image, QUESTION, max_new_tokens=6)
    again = docread.load(str(tiny_llava), device="cpu", quant="none", adapter=tmp_path / "adapter")
    for (name, a), (_, b) in zip(reader.hires.modules.state_dict().items(), again.hires.modules.state_dict().items()):
        assert torch.equal(a, b), name
    second = again.ask(image, QUESTION, max_new_tokens=6)
    assert (first.answer, first.score) == (second.answer, second.score)
    plain = docread.load(str(tiny_llava), device="cpu", quant="none").ask(image, QUESTION, max_new_tokens=6)
    assert plain.score != first.score  # the adapter really changed the model


def test_adapter_for_another_base_is_refused(tiny_llava, tiny_llava_next, tmp_path):
    reader = docread.load(str(tiny_llava), device="cpu", quant="none")
    path = save_adapter(tmp_path / "a.safetensors", reader.hires.modules)
    other = tmp_path / "not-an-adapter.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(other))
    with pytest.raises(DocreadError) as e:
        docread.load(str(tiny_llava), device="cpu", quant="none", adapter=other)
    assert e.value.code == "bad_adapter"
    with pytest.raises(DocreadError) as e:
        docread.load(str(tiny_llava), device="cpu", quant="none", adapter=tmp_path / "missing")
    assert e.value.code == "adapter_missing"
    assert path.exists()


def test_llava_next_base_answers_with_tiles(tiny_llava_next):
    reader = docread.load(str(tiny_llava_next), device="cpu", quant="none")
    answer = reader.ask(random_image(700, 900), QUESTION, max_new_tokens=5)
    assert (answer.rows, answer.cols) == (3, 3)  # ceil(900/336) x ceil(700/336)
    assert answer.visual_tokens == 64 + 9 * 16 and answer.image_tokens == answer.visual_tokens + 10
    assert answer.generated_tokens >= 1 and set(answer.timing_ms) == {"render", "encode", "prefill", "decode"}


def test_four_bit_path_runs_on_cpu(tiny_llava):
    import bitsandbytes as bnb

    reader = docread.load(str(tiny_llava), device="cpu", quant="4bit")
    llm = reader.hires.language_model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in llm.modules())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in reader.hires.vision.modules())
    assert not isinstance(reader.hires.lm_head, bnb.nn.Linear4bit)
    answer = reader.ask(random_image(400, 300), QUESTION, max_new_tokens=4)
    assert (answer.rows, answer.cols) == (2, 4) and answer.generated_tokens >= 1  # 1x2, doubled: 4*2 < 16


def test_context_budget_reduces_tiles_instead_of_truncating(reader):
    context = reader.context  # 4096
    prompt = len(prompt_ids(reader.base.tokenizer, reader.template, QUESTION, reader.base.image_token_id)) - 1
    full = 64 + 16 * 16 + 17  # 16 tiles at the tiny model's 64 + 16 per tile
    max_new = context - prompt - full + 1  # one token short for 16 tiles
    stream = reader.stream(random_image(2000, 2000), QUESTION, max_new_tokens=max_new)
    plan = stream.page_plan
    assert plan.reduced and plan.requested_slices == 16 and plan.max_slices < 16
    assert plan.tokens.image_tokens + prompt + max_new <= context
    with pytest.raises(DocreadError) as e:
        reader.stream(random_image(100, 100), QUESTION, max_new_tokens=context - prompt - 10)
    assert e.value.code == "context_overflow" and "--max-new-tokens" in e.value.message


def test_model_checks_placeholder_count(reader):
    hires = reader.hires
    sequences = hires.image_embeddings(torch.randn(1, 3, 336, 336), [(0, 0)])
    ids = torch.tensor([[1] + [reader.base.image_token_id] * 63 + [5]])
    with pytest.raises(ValueError, match="63 image placeholder tokens but the images produced 64"):
        hires.embed_prompt(ids, sequences)


def test_choose_scores_equal_a_full_forward_and_reuse_the_cached_page(reader):
    """Multiple choice: each option's summed log-probability, computed on the cached page prefix,
    equals a plain forward over prompt + option; the best index is the highest score."""
    image = random_image(336, 336, seed=5)
    options = ["A", "B", "C", "D"]
    best, scores = reader.choose(image, QUESTION, options, max_slices=0)
    assert len(scores) == 4 and best == max(range(4), key=scores.__getitem__)
    assert len(set(scores)) > 1
    with reader.open_page(image, QUESTION, max_slices=0) as encoded:
        ids = prompt_ids(reader.base.tokenizer, reader.template, QUESTION, reader.base.image_token_id)
        prompt = reader.base.tokenizer(PROMPT).input_ids
        for option, score in zip(options, scores):
            continuation = reader.base.tokenizer(PROMPT + " " + option).input_ids[len(prompt) :]
            full = expand_image_token(ids + continuation, reader.base.image_token_id, encoded.sequence.shape[0])
            with torch.inference_mode():
                embeds = reader.hires.embed_prompt(torch.tensor([full]), [encoded.sequence])
                logits = reader.hires.lm_head(reader.hires.language_model(inputs_embeds=embeds).last_hidden_state)
            logprobs = torch.log_softmax(logits[0, -len(continuation) - 1 : -1].float(), -1)
            expected = float(logprobs.gather(1, torch.tensor(continuation)[:, None]).sum())
            assert score == pytest.approx(expected, abs=1e-4)


def test_a_question_longer_than_the_page_was_planned_for_is_refused(reader):
    image = random_image(336, 336, seed=6)
    prompt = len(prompt_ids(reader.base.tokenizer, reader.template, "q", reader.base.image_token_id)) - 1
    max_new = reader.context - prompt - 64  # exactly fills the context with the short question
    with reader.open_page(image, "q", max_slices=0, max_new_tokens=max_new) as encoded:
        stream = reader.answer(encoded, "a much longer question than the page was planned for", max_new_tokens=max_new)
        with pytest.raises(DocreadError) as e:
            list(stream)
        assert e.value.code == "context_overflow"
        assert encoded.cache.get_seq_length() == encoded.prefix_len  # nothing was left in the cache


@pytest.mark.slow
def test_pages_encoded_in_one_pass_equal_pages_encoded_alone(reader):
    from docread.views.encoded import PageSource

    images = [random_image(500, 700, seed=7), random_image(336, 336, seed=8), random_image(900, 300, seed=9)]
    sources = [
        PageSource(lambda w, h, im=im: im.resize((w, h)), im.width, im.height, page=i + 1)
        for i, im in enumerate(images)
    ]
    together = reader.encode_pages(sources, QUESTION)
    assert [e._cache for e in together] == [None] * 3  # prefixes are prefilled only when asked
    for source, batched in zip(sources, together):
        alone = reader.encode(source.render, source.width, source.height, QUESTION, page=source.page)
        assert batched.page_plan == alone.page_plan and batched.page == alone.page
        torch.testing.assert_close(batched.sequence, alone.sequence, rtol=1e-5, atol=1e-5)
        first = "".join(reader.answer(batched, QUESTION, max_new_tokens=4))
        assert first == "".join(reader.answer(alone, QUESTION, max_new_tokens=4))
        assert batched.cache.get_seq_length() == batched.prefix_len
