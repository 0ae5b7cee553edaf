"""`docread bench speed`: docread and transformers' LLaVA-NeXT side by side, stage by stage.

Both read the same PDF pages with the same weights (one LlavaNextForConditionalGeneration, shared).
Every figure is the median of `repeats` runs after one warm-up; CUDA timings synchronise; decoding
runs a fixed number of tokens (EOS ignored). Returns one dict (the `--json` object); prints nothing.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from docread.bench.speedsetup import (
    SYNTHETIC,
    BenchModel,
    baseline_content_size,
    baseline_processor,
    load_model,
    write_pages,
)
from docread.bench.speedsetup import questions as make_questions
from docread.bench.timing import MIB, Clock, Memory, Samples, environment, measure_startup, module_time, token_arrivals
from docread.errors import UsageError
from docread.intake.limits import DEFAULT_DPI
from docread.model.weights import QUANT_CHOICES

STAGES = ("render", "slice_normalise", "vision", "vision_sra", "vision_sampler", "prefill", "ttft", "followup_ttft")
TTFT_PARTS = ("render", "slice_normalise", "vision", "prefill")  # time to first token: file to first token


@dataclass(frozen=True)
class SpeedOptions:
    model: str | None = None
    synthetic: str | None = None  # "tiny" | "real"
    pages: int = 2
    questions: int = 3
    repeats: int = 3  # timed runs after one warm-up; figures are medians
    max_new_tokens: int = 32  # tokens decoded per answer (EOS ignored)
    max_slices: int | None = None  # docread's tile budget (None: the preset's, 16)
    dpi: float = DEFAULT_DPI  # nominal PDF dpi: docread plans at it, the baseline renders at it
    threads: int = 1  # torch CPU threads (0: leave torch's default)
    device: str = "auto"
    quant: str = "auto"
    view: str = "hires"  # docread's side: hires tiles, or the checkpoint's own view (no SRA)

    def __post_init__(self):
        if self.model is not None and self.synthetic is not None:
            raise UsageError("--model and --synthetic exclude each other: choose one")
        if self.synthetic not in (None, *SYNTHETIC):
            raise UsageError(f"--synthetic {self.synthetic!r}: choose tiny or real")
        if self.quant not in QUANT_CHOICES:
            raise UsageError(f"--quant {self.quant!r}: choose {', '.join(QUANT_CHOICES)}")
        for name, low in (("pages", 1), ("questions", 1), ("repeats", 1), ("max_new_tokens", 2), ("threads", 0)):
            if getattr(self, name) < low:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least {low}")


# -- docread ------------------------------------------------------------------------------------------
class DocreadSide:
    """docread's stages: intake, vision (of which SRA and sampler), prefill, decode (plain and fast),
    and the time to first token of each further question on the encoded page."""

    def __init__(self, bench: BenchModel, asked: list[str], options: SpeedOptions, clock: Clock):
        from docread.generate.static import static_step_for

        self.reader, self.asked, self.options, self.clock = bench.reader, asked, options, clock
        hires = self.reader.hires
        self.parts = {"vision_sra": list(hires.modules.adapters.values()), "vision_sampler": [hires.modules.sampler]}
        self.fast = static_step_for(hires.language_model, hires.lm_head)
        self.samples, self.shape, self.same_tokens, self.first_fast_ms = Samples(), {}, True, None

    def run(self, document, page, keep: bool) -> None:
        """Read one page once, from the file to the last answer."""
        from docread.views.processor import page_pixels

        if self.options.view == "native":
            return self._run_native(document, page, keep)
        reader, clock, options, asked = self.reader, self.clock, self.options, self.asked
        hires, base = reader.hires, reader.base
        page_plan, _ = reader.plan(
            page.width, page.height, asked, max_slices=options.max_slices, max_new_tokens=options.max_new_tokens
        )
        plan, grids = page_plan.plan, [(page_plan.plan.rows, page_plan.plan.cols)]
        image, render_ms = clock.time(document.render, page, plan.width, plan.height)
        pixels, slice_ms = clock.time(page_pixels, image, page_plan, base.image_mean, base.image_std)
        with torch.inference_mode():
            pixels = pixels.to(base.device, base.dtype)  # (1 + tiles, 3, S, S)
            _, vision_ms = clock.time(hires.image_embeddings, pixels, grids)
            with module_time(clock, self.parts) as inner:  # a second, hooked pass: hooks sync and add time
                hires.image_embeddings(pixels, grids)
        encoded = reader.encode(
            lambda w, h: image,
            page.width,
            page.height,
            asked,
            page_plan=page_plan,
            max_new_tokens=options.max_new_tokens,
        )
        self._answer_all(
            encoded, page, page_plan, keep, render=render_ms, slice_normalise=slice_ms, vision=vision_ms, **inner
        )

    def _run_native(self, document, page, keep: bool) -> None:
        """The checkpoint's own view: rendering, then the processor and the vision tower as one stage
        (docread calls transformers for both); no SRA or sampler to time."""
        reader, options, asked = self.reader, self.options, self.asked
        page_plan, _ = reader.plan(page.width, page.height, asked, max_new_tokens=options.max_new_tokens, view="native")
        encoded = reader.encode(
            lambda w, h: document.render(page, w, h),
            page.width,
            page.height,
            asked,
            page_plan=page_plan,
            max_new_tokens=options.max_new_tokens,
            view="native",
        )
        self._answer_all(
            encoded,
            page,
            page_plan,
            keep,
            render=encoded.timing_ms["render"],
            slice_normalise=0.0,
            vision=encoded.timing_ms["encode"],
            vision_sra=0.0,
            vision_sampler=0.0,
        )

    def _answer_all(self, encoded, page, page_plan, keep: bool, **stages) -> None:
        """Every question on the encoded page (the first timed to its first token, the rest as
        further questions), the fast decoder, and the page's shape."""
        reader, options, asked = self.reader, self.options, self.asked
        first = _answer(reader, encoded, asked[0], options.max_new_tokens)
        self.samples.add(
            keep,
            **stages,
            prefill=first.answer.timing_ms["prefill"],  # the page's prefix, then the question
            decode_ms_per_token=first.answer.timing_ms["decode"] / (first.answer.generated_tokens - 1),
        )
        for question in asked[1:]:
            self.samples.add(
                keep,
                followup_ttft=_answer(reader, encoded, question, options.max_new_tokens).answer.timing_ms["prefill"],
            )
        self._fast(encoded, first.tokens, keep)
        plan = page_plan.plan
        self.shape = {
            "grid": f"{plan.rows}x{plan.cols}",
            "views": 1 + plan.tiles,
            "visual_tokens": page_plan.tokens.visual_tokens,
            "image_tokens": page_plan.tokens.image_tokens,
            "prompt_tokens": first.answer.prompt_tokens,
            "pixels": plan.width * plan.height,
            "effective_dpi": round(plan.width / (page.width / _dpi(page, self.options)), 1),
        }

    def _fast(self, encoded, plain_tokens: list[int], keep: bool) -> None:
        """The first question again through docread.generate.static, as `--fast` runs it."""
        from docread.generate.dynamic import crop_cache
        from docread.generate.loop import DecodeStats, decode_tokens

        stats = DecodeStats()
        embeds = self.reader._suffix(encoded, self.asked[0])
        tokens, ms = self.clock.time(
            lambda: [
                t
                for t, _ in decode_tokens(
                    self.fast,
                    embeds,
                    max_new_tokens=self.options.max_new_tokens,
                    eos_token_ids=[],
                    stats=stats,
                    cache=encoded.cache,
                )
            ]
        )
        crop_cache(encoded.cache, encoded.prefix_len)  # a no-op: the fast path leaves the prefix as it was
        self.first_fast_ms = self.first_fast_ms or ms  # the first call compiles (CUDA)
        self.same_tokens &= tokens == plain_tokens
        self.samples.add(keep, fast_ms_per_token=stats.decode_ms / (len(tokens) - 1))

    def retained_bytes(self) -> int:
        """Memory this side keeps between its runs: the fast decoder's static cache."""
        layers = self.fast.cache.layers if self.fast.cache is not None else []
        return sum(t.nbytes for layer in layers if layer.is_initialized for t in (layer.keys, layer.values))

    def result(self) -> dict:
        side = _side(self.samples, self.shape, self.options)
        per_token = self.samples.median("fast_ms_per_token")
        stages = side["stages_ms"]  # what the SRAs add to the rest of the vision stage (goal: at most 0.15)
        side["sra_overhead"] = round(
            stages["vision_sra"] / (stages["vision"] - stages["vision_sra"] - stages["vision_sampler"]), 4
        )
        side["fast"] = {
            "ms_per_token": per_token,
            "tokens_per_s": _per_s(per_token),
            "compiled": self.fast.compiled,
            "same_tokens": self.same_tokens,
            "first_call_ms": round(self.first_fast_ms, 1),
        }
        return side


def _answer(reader, encoded, question: str, max_new_tokens: int):
    stream = reader.answer(encoded, question, max_new_tokens=max_new_tokens)
    for _ in stream:
        pass
    return stream


# -- the baseline -------------------------------------------------------------------------------------
class BaselineSide:
    """transformers' LLaVA-NeXT on the same pages: the page rendered at --dpi, LlavaNextImageProcessorPil,
    get_image_features, one forward over the prompt, `generate` for decoding and further questions."""

    def __init__(self, bench: BenchModel, asked: list[str], options: SpeedOptions, clock: Clock):
        self.model, self.processor = bench.llava, baseline_processor(bench.reader)
        self.device, self.dtype = bench.reader.base.device, bench.reader.base.dtype
        self.prompts = [bench.reader.template.template.replace("{question}", q) for q in asked]
        self.options, self.clock, self.samples, self.shape = options, clock, Samples(), {}

    def run(self, document, page, keep: bool) -> None:
        model, clock, config = self.model, self.clock, self.model.config
        image, render_ms = clock.time(document.render, page, page.width, page.height)
        _, slice_ms = clock.time(self.processor.image_processor, image, return_tensors="pt")
        prompts = [
            self.processor(images=image, text=text, return_tensors="pt").to(self.device, self.dtype)
            for text in self.prompts
        ]  # dtype: floating tensors only
        first = prompts[0]
        with torch.inference_mode():
            features, vision_ms = clock.time(
                model.model.get_image_features,
                first["pixel_values"],
                first["image_sizes"],  # (1, views, 3, S, S)
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
            )
            visual = torch.cat(list(features.pooler_output))  # (N, D)
            _, prefill_ms = clock.time(_baseline_prefill, model, first["input_ids"], visual)
        one, _, _ = _generate(clock, model, first, 1)
        _, _, per_token = _generate(clock, model, first, self.options.max_new_tokens)
        self.samples.add(
            keep,
            render=render_ms,
            slice_normalise=slice_ms,
            vision=vision_ms,
            prefill=prefill_ms,
            decode_ms_per_token=per_token,
            generate_ttft=one,
        )
        for inputs in prompts[1:]:
            self.samples.add(keep, followup_ttft=_generate(clock, model, inputs, 1)[0])
        width, height, (rows, cols) = baseline_content_size(
            page.width, page.height, config.image_grid_pinpoints, config.vision_config.image_size
        )
        self.shape = {
            "grid": f"{rows}x{cols}",
            "views": int(first["pixel_values"].shape[1]),
            "visual_tokens": int(visual.shape[0]),
            "image_tokens": int(visual.shape[0]),
            "prompt_tokens": int(first["input_ids"].shape[1]),
            "pixels": width * height,
            "effective_dpi": round(width / (page.width / _dpi(page, self.options)), 1),
        }

    def retained_bytes(self) -> int:
        return 0  # generate's caches die with each call

    def result(self) -> dict:
        side = _side(self.samples, self.shape, self.options)
        side["generate_ttft_ms"] = self.samples.median("generate_ttft")  # model only: processed inputs to token 1
        return side


def _baseline_prefill(model, input_ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """The first token's logits (1, V) as LlavaNextModel.forward computes them: one masked_scatter, one pass."""
    from docread.generate.dynamic import new_cache, prefill

    embeds = model.get_input_embeddings()(input_ids)  # (1, T, D)
    mask = (input_ids == model.config.image_token_id)[..., None]  # (1, T, 1)
    embeds = embeds.masked_scatter(mask, visual.to(embeds.dtype))
    language_model = model.model.language_model
    return model.lm_head(prefill(language_model, embeds, new_cache(language_model))).float()


def _generate(clock: Clock, model, inputs, tokens: int) -> tuple[float, torch.Tensor, float]:
    """Milliseconds of a greedy `generate` of exactly `tokens` new tokens (EOS suppressed), its output, and its
    milliseconds per token after the first, within this one call (never the difference of two runs, which
    noise can make negative)."""
    arrivals = token_arrivals()
    pad = model.config.text_config.pad_token_id
    with torch.inference_mode():
        out, ms = clock.time(
            model.generate, **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
            pad_token_id=pad, streamer=arrivals,
        )  # fmt: skip
    assert out.shape[1] == inputs["input_ids"].shape[1] + tokens, "generate did not decode the tokens asked"
    return ms, out, arrivals.ms_per_token()


# -- both sides ---------------------------------------------------------------------------------------
def _side(samples: Samples, shape: dict, options: SpeedOptions) -> dict:
    stages = {key: samples.median(key) for key in STAGES}
    stages["ttft"] = round(sum(stages[k] for k in TTFT_PARTS), 3)
    per_token = samples.median("decode_ms_per_token")
    intake = (stages["render"] + stages["slice_normalise"]) / shape["views"]
    return {
        "stages_ms": stages,
        "decode_ms_per_token": per_token,
        "decode_tokens_per_s": _per_s(per_token),
        "generated_tokens": options.max_new_tokens,
        "intake_ms_per_view": round(intake, 3),
        **shape,
    }


def _per_s(ms_per_token: float | None) -> float | None:
    return round(1000 / ms_per_token, 1) if ms_per_token else None


def ratios(docread: dict, baseline: dict) -> dict:
    """docread / baseline for every figure both sides have (below 1: docread is faster or smaller)."""
    pairs = {
        **{k: (docread["stages_ms"][k], baseline["stages_ms"][k]) for k in STAGES},
        **{
            k: (docread[k], baseline[k])
            for k in ("decode_ms_per_token", "intake_ms_per_view", "peak_memory_mb", "views", "visual_tokens", "pixels")
        },
    }
    return {k: round(a / b, 4) if a is not None and b else None for k, (a, b) in pairs.items()}


def _dpi(page, options: SpeedOptions) -> float:
    """A PDF page's nominal dpi; image pages (written when PyMuPDF is absent) are drawn at --dpi."""
    return page.dpi or options.dpi


def run_speed(options: SpeedOptions, log: Callable[[str], None] = lambda message: None) -> dict:
    """Run the whole comparison; the result is the `--json` object."""
    from docread.intake import open_document

    if options.threads:
        torch.set_num_threads(options.threads)
    asked = make_questions(options.questions)
    with tempfile.TemporaryDirectory(prefix="docread-speed-") as workdir:
        log("building the model" if options.synthetic else "loading the model")
        bench = load_model(
            options.model, options.synthetic, device=options.device, quant=options.quant, workdir=Path(workdir)
        )
        bench.reader.eos_token_ids = []  # random weights stop anywhere: every answer decodes max_new_tokens
        clock, memory = Clock(bench.reader.base.device), Memory(bench.reader.base.device)
        pdf = write_pages(Path(workdir) / "pages.pdf", options.pages, dpi=options.dpi)
        sides = {
            "docread": DocreadSide(bench, asked, options, clock),
            "baseline": BaselineSide(bench, asked, options, clock),
        }
        peaks = dict.fromkeys(sides, 0.0)
        with open_document(str(pdf), dpi=options.dpi) as document:
            for page in document.pages:
                for run in range(1 + options.repeats):  # the sides take turns: load drifting on a shared
                    log(f"page {page.number}, run {run}" + (" (warm-up)" if run == 0 else ""))  # machine hits both
                    for key, side in sides.items():
                        others = sum(s.retained_bytes() for k, s in sides.items() if k != key) / MIB
                        memory.reset()
                        side.run(document, page, keep=run > 0)
                        peaks[key] = max(peaks[key], memory.peak_mb() - others)  # not the other side's caches
        sides = {key: side.result() for key, side in sides.items()}
        for key, side in sides.items():
            side.update(peak_memory_mb=round(peaks[key], 1), memory=memory.kind)
    log("measuring start-up")
    startup = measure_startup(options.repeats)
    fast, plain = sides["docread"]["fast"], sides["docread"]["decode_ms_per_token"]
    fast["speedup_vs_plain"] = round(plain / fast["ms_per_token"], 3)
    fast["speedup_vs_baseline"] = round(sides["baseline"]["decode_ms_per_token"] / fast["ms_per_token"], 3)
    return {
        "benchmark": "speed",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **asdict(options),
        "model": bench.name,
        **environment(bench),
        "docread": sides["docread"],
        "baseline": sides["baseline"],
        "ratios": ratios(sides["docread"], sides["baseline"]),
        "intake_speedup": round(sides["baseline"]["intake_ms_per_view"] / sides["docread"]["intake_ms_per_view"], 2),
        "startup": startup,
    }
