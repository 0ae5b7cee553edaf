"""`docread bench throughput`'s peer: transformers' own `generate` (LlavaNextForConditionalGeneration, or
LlavaForConditionalGeneration for LLaVA-1.5 checkpoints) on a padded batch of the same pages and weights,
greedy, every answer exactly as long as docread's: what a user batching with transformers alone gets."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from docread.bench.speedsetup import BenchModel, baseline_processor
from docread.bench.timing import Clock, rates


def peer_processor(reader):
    """transformers' processor for the checkpoint's class: LLaVA-NeXT's (as `bench speed`'s baseline) or
    LLaVA-1.5's (CLIP's resize and centre crop), both with the model's own normalisation."""
    config = reader.base.model.config
    if config.model_type == "llava_next":
        return baseline_processor(reader)
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    side = config.vision_config.image_size
    tokenizer = reader.base.tokenizer
    return LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_mean=list(reader.base.image_mean),
            image_std=list(reader.base.image_std),
        ),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=tokenizer.convert_ids_to_tokens(reader.base.image_token_id),
        num_additional_image_tokens=1,
    )


def peer_generate(
    bench: BenchModel, document, pages: Sequence, size: int, tokens: int, clock: Clock, *, questions: Sequence[str]
) -> dict:
    """Every page rendered, through the processor and one greedy `generate` call per `size` pages, prompts
    padded on the left; each answer exactly `tokens` tokens long."""
    reader, model = bench.reader, bench.llava
    processor = peer_processor(reader)
    prompts = [reader.template.template.replace("{question}", q) for q in questions]  # questions[i]: pages[i]'s
    tokenizer = processor.tokenizer
    pad = model.config.text_config.pad_token_id
    pad = tokenizer.pad_token_id if pad is None else pad
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answered = generated = 0
    clock.sync()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        for at in range(0, len(pages), size):
            images = [document.render(page, page.width, page.height) for page in pages[at : at + size]]
            inputs = processor(images=images, text=prompts[at : at + size], padding=True, return_tensors="pt")
            inputs = inputs.to(reader.base.device, reader.base.dtype)  # dtype: floating tensors only
            with torch.inference_mode():
                out = model.generate(
                    **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=pad
                )
            assert out.shape[1] == inputs["input_ids"].shape[1] + tokens, "generate did not decode the tokens asked"
            answered, generated = answered + len(images), generated + len(images) * tokens
        clock.sync()
    finally:
        tokenizer.padding_side = side
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    return {"pages": answered, "tokens": generated, "elapsed_s": elapsed, "cpu_s": cpu_s}


def measure_peer(
    bench, document, pages, *, size: int, tokens: int, repeats: int, clock: Clock, questions: Sequence[str], log
) -> dict:
    """The peer's row: the best of `repeats` passes after a warm-up."""
    peer_generate(bench, document, pages[:1], 1, tokens, clock, questions=questions)  # warm-up
    runs = []
    for repeat in range(repeats):
        log(f"peer (transformers generate), batch size {size}: pass {repeat + 1} of {repeats}")
        runs.append(peer_generate(bench, document, pages, size, tokens, clock, questions=questions))
    run = min(runs, key=lambda r: r["elapsed_s"])
    return {
        "batch_size": size,
        **rates(run["pages"], run["tokens"], run["elapsed_s"]),
        "pages": run["pages"],
        "tokens": run["tokens"],
        "elapsed_s": round(run["elapsed_s"], 4),
        "tokens_per_cpu_s": round(run["tokens"] / run["cpu_s"], 2),
        "cpu_s": round(run["cpu_s"], 4),
        "runs": f"{bench.llava.__class__.__name__}.generate",
    }
