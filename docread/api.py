"""The Python API: load a model once, ask many questions.

    import docread
    reader = docread.load("llava-1.6-vicuna-7b")
    stream = reader.stream("invoice.pdf", "What is the total amount?")
    for chunk in stream:
        print(chunk, end="", flush=True)
    print(stream.answer.page, stream.answer.score)

The CLI is a thin layer over exactly these calls. Nothing here prints.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from docread.errors import DocreadError
from docread.presets import Preset, resolve_preset
from docread.processor import Budget, PagePlan, PromptTemplate, expand_image_token, page_pixels, plan_page, prompt_ids

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from docread.nn.hires import HiResLlava
    from docread.weights import Base

DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class Answer:
    """One answer and everything about how it was produced (the CLI's --json object)."""

    file: str
    page: int
    question: str
    answer: str
    score: float | None            # mean token log-probability of the answer
    model: str
    rows: int
    cols: int
    tiles: int
    visual_tokens: int             # global + tiles x tokens per tile
    image_tokens: int              # visual + separators: positions the page takes in the prompt
    prompt_tokens: int             # whole prompt, image positions included
    generated_tokens: int
    max_slices: int                # tile budget used (lower than asked when the context forced it)
    reduced_from: int | None       # the --max-slices asked for, when it had to be reduced
    stopped_by: str                # "eos" or "length"
    timing_ms: dict[str, float] = field(default_factory=dict)  # render, encode, prefill, decode

    def to_json(self) -> dict:
        return asdict(self)


class AnswerStream:
    """Iterate for text chunks; after the loop, `.answer` holds the full Answer."""

    def __init__(self, chunks: Iterator[str], page_plan: PagePlan | None = None):
        self._chunks = chunks
        self.page_plan = page_plan  # known before the first chunk: the CLI reports reductions up front
        self.answer: Answer | None = None
        self.tokens: list[int] = []  # the answer's token ids, once the stream has ended

    def __iter__(self) -> Iterator[str]:
        yield from self._chunks


class DocReader:
    """A loaded model: a llava-hf base, docread's HiRes modules, its preset."""

    def __init__(self, preset: Preset, base: "Base", hires: "HiResLlava", *, adapter: str | None = None):
        self.preset = preset
        self.base = base
        self.hires = hires
        self.adapter = adapter
        self.template = PromptTemplate(preset.prompt)
        config = base.model.config
        self.context = config.text_config.max_position_embeddings  # 4096 for Vicuna
        eos = config.text_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_token_ids = [e for e in eos if e is not None] or [base.tokenizer.eos_token_id]

    @property
    def name(self) -> str:
        return self.preset.name

    # -- one page -----------------------------------------------------------------------------
    def plan(self, width: int, height: int, question: str, *, max_slices: int | None = None,
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple[PagePlan, list[int]]:
        """The slicing of a width x height page that fits the context with this question, and
        the prompt ids with one image placeholder."""
        ids = prompt_ids(self.base.tokenizer, self.template, question, self.base.image_token_id)
        budget = Budget(context=self.context, prompt_tokens=len(ids) - 1, max_new_tokens=max_new_tokens)
        requested = self.preset.max_slices if max_slices is None else max_slices
        plan = plan_page(width, height, size=self.preset.size, patch=self.preset.patch, k=self.preset.k,
                         max_slices=requested, budget=budget)
        return plan, ids

    def stream_image(self, render, width: int, height: int, question: str, *, file: str = "<image>", page: int = 1,
                     max_slices: int | None = None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                     temperature: float = 0.0, seed: int | None = None) -> AnswerStream:
        """Answer `question` about one page of nominal size width x height.

        `render(w, h)` must return the page as an RGB image of exactly w x h pixels.
        """
        import torch

        from docread.generate import DecodeStats, TextStream, decode_tokens

        page_plan, ids = self.plan(width, height, question, max_slices=max_slices, max_new_tokens=max_new_tokens)
        timing: dict[str, float] = {}
        stream = AnswerStream(iter(()), page_plan)

        def chunks() -> Iterator[str]:
            start = time.perf_counter()
            image = render(page_plan.plan.width, page_plan.plan.height)
            pixels = page_pixels(image, page_plan, self.base.image_mean, self.base.image_std)
            timing["render"] = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            with torch.inference_mode():
                pixels = pixels.to(self.base.device, self.base.dtype)
                grid = (page_plan.plan.rows, page_plan.plan.cols)
                sequences = self.hires.image_embeddings(pixels, [grid])
                full_ids = expand_image_token(ids, self.base.image_token_id, page_plan.tokens.image_tokens)
                input_ids = torch.tensor([full_ids], device=self.base.device)
                embeds = self.hires.embed_prompt(input_ids, sequences)
            if self.base.device.type == "cuda":
                torch.cuda.synchronize(self.base.device)
            timing["encode"] = (time.perf_counter() - start) * 1000
            stats = DecodeStats()
            text = TextStream(self.base.tokenizer)
            for token, _ in decode_tokens(self.hires.language_model, self.hires.lm_head, embeds,
                                          max_new_tokens=max_new_tokens, eos_token_ids=self.eos_token_ids,
                                          temperature=temperature, seed=seed, stats=stats):
                chunk = text.push(token)
                if chunk:
                    yield chunk
            if tail := text.flush():
                yield tail
            timing["prefill"], timing["decode"] = stats.prefill_ms, stats.decode_ms
            stream.tokens = stats.tokens
            plan, tokens = page_plan.plan, page_plan.tokens
            stream.answer = Answer(
                file=file, page=page, question=question, answer=text.text().strip(), score=stats.score,
                model=self.name, rows=plan.rows, cols=plan.cols, tiles=plan.tiles,
                visual_tokens=tokens.visual_tokens, image_tokens=tokens.image_tokens,
                prompt_tokens=len(full_ids), generated_tokens=len(stats.tokens),
                max_slices=page_plan.max_slices,
                reduced_from=page_plan.requested_slices if page_plan.reduced else None,
                stopped_by=stats.stopped_by, timing_ms={k: round(v, 2) for k, v in timing.items()},
            )

        stream._chunks = chunks()
        return stream

    def stream(self, source: "str | Path | Image.Image", question: str, *, page: int = 1, dpi: float = 200.0,
               password: str | None = None, **options) -> AnswerStream:
        """Answer `question` about one page of a PDF or image file (or a PIL image)."""
        from PIL import Image

        if isinstance(source, Image.Image):
            image = source.convert("RGB")
            render = lambda w, h: image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)  # noqa: E731
            return self.stream_image(render, image.width, image.height, question, **options)

        from docread.intake import open_document

        document = open_document(str(source), pages=str(page), password=password, dpi=dpi)
        selected = document.pages[0]
        inner = self.stream_image(lambda w, h: document.render(selected, w, h), selected.width, selected.height,
                                  question, file=str(source), page=selected.number, **options)

        def chunks() -> Iterator[str]:
            with document:
                yield from inner
            outer.answer, outer.tokens = inner.answer, inner.tokens

        outer = AnswerStream(chunks(), inner.page_plan)
        return outer

    def ask(self, source, question: str, **options) -> Answer:
        """Answer `question` and return the whole Answer (no streaming)."""
        stream = self.stream(source, question, **options)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer


def hires_config(hf_config, preset: Preset):
    """docread's module shapes for a llava-hf config and a preset."""
    from docread.nn.hires import HiResConfig, place_adapters

    vision, text = hf_config.vision_config, hf_config.text_config
    layer = hf_config.vision_feature_layer
    if not isinstance(layer, int):
        raise DocreadError("unsupported_model", f"{preset.base}: multi-layer vision features "
                           f"(vision_feature_layer={layer}) are not supported; use a LLaVA-1.5/1.6 checkpoint")
    feature_layer = layer if layer > 0 else vision.num_hidden_layers + 1 + layer  # -2 -> 23 of 24
    return HiResConfig(
        vision_width=vision.hidden_size, text_width=text.hidden_size,
        tokens_side=vision.image_size // vision.patch_size, feature_layer=feature_layer,
        adapter_layers=place_adapters(preset.adapter_layers, feature_layer),
        adapter_heads=preset.adapter_heads, adapter_pool=preset.adapter_pool, k=preset.k,
        keep_cls=hf_config.vision_feature_select_strategy == "full",
    )


SEPARATOR_SEEDS = (":", ",", "\n")  # text tokens whose embeddings start SEP_A, SEP_B, SEP_C


def load(model: str | None = None, *, adapter: str | Path | None = None, device: str = "auto",
         quant: str = "auto", offline: bool | None = None) -> DocReader:
    """Load a model: a preset name, a hub id or a local llava-hf directory; optionally a trained adapter."""
    import torch

    from docread.nn.hires import HiResLlava, HiResModules
    from docread.weights import load_base

    preset = resolve_preset(model)
    base = load_base(preset.base, device=device, quant=quant, offline=offline)
    vision = base.model.config.vision_config
    preset = replace(preset, size=vision.image_size, patch=vision.patch_size)
    modules = HiResModules(hires_config(base.model.config, preset))
    embed = base.model.get_input_embeddings()
    with torch.no_grad():
        seeds = [base.tokenizer(s, add_special_tokens=False).input_ids[-1] for s in SEPARATOR_SEEDS]
        modules.init_separators(embed(torch.tensor(seeds, device=embed.weight.device)).float())
    if adapter is not None:
        from docread.adapterfile import load_adapter

        load_adapter(Path(adapter), modules, base.model)
    modules.to(device=base.device, dtype=base.dtype).eval().requires_grad_(False)
    hires = HiResLlava(base.model, modules, image_token_id=base.image_token_id)
    return DocReader(preset, base, hires, adapter=str(adapter) if adapter else None)
