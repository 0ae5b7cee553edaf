"""The reader: a loaded model that encodes pages once (their views through the vision encoder in
one pass, the LLM's KV prefix up to the end of the image prefilled once) and answers questions
about them, streaming. Single files and PIL images: `docread.pagecalls`; documents: `docread.document`.
Nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from docread.errors import ContextOverflow
from docread.manycalls import ManyCalls
from docread.model.presets import Preset
from docread.pagecalls import PageCalls
from docread.results import Answer, AnswerStream
from docread.settings import DEFAULT_MAX_NEW_TOKENS, View
from docread.textcalls import TextCalls
from docread.views.encoded import EncodedPage, PageSource, check_view
from docread.views.native import NativePlan, native_embeddings, native_pixels, native_spec, plan_native
from docread.views.processor import (
    Budget,
    PagePlan,
    PromptTemplate,
    expand_image_token,
    page_pixels,
    plan_page,
    prompt_ids,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from docread.model.weights import Base
    from docread.nn.hires import HiResLlava

IDS_KEPT = 64  # questions whose prompt ids a reader keeps (a server's concurrent requests, a batch's questions)
PLANS_KEPT = 256  # page plans a reader keeps: a server's kept pages x the prompt lengths asked of them


class DocReader(PageCalls, TextCalls, ManyCalls):
    """A loaded model: a llava-hf base, docread's HiRes modules, its preset."""

    def __init__(self, preset: Preset, base: Base, hires: HiResLlava, *, adapter: str | None = None):
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
        self._image_processor = None  # the checkpoint's own, built on the first native page
        # (rows, fast=) -> decode_rows' events, or None: a batch of their own. A server sets its running batch here.
        self.joiner: Callable | None = None
        self._kept_ids: dict[tuple[str, str], list[int]] = {}  # `_ids`' recent prompts, oldest first
        self._kept_plans: dict[tuple, PagePlan | NativePlan] = {}  # `plan`'s recent plans, oldest first

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def global_view(self) -> bool:
        return self.hires.modules.config.global_view

    def _ids(self, question: str) -> list[int]:
        """The question's prompt ids (`prompt_ids`), tokenised once for the several times one read needs them
        (planning, the context check, the prompt itself): the last IDS_KEPT questions' are kept."""
        key = (self.template.template, question)
        tokenizer, image_token = self.base.tokenizer, self.base.image_token_id
        return list(_recent(self._kept_ids, key, IDS_KEPT, prompt_ids, tokenizer, self.template, question, image_token))

    # -- planning -----------------------------------------------------------------------------
    def plan(
        self,
        width: int,
        height: int,
        questions: str | Sequence[str],
        *,
        max_slices: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        view: str = View.hires,
    ) -> tuple[PagePlan | NativePlan, list[int]]:
        """The slicing of a width x height page that fits the context with the longest of `questions`,
        and that question's prompt ids with one image placeholder. `view="native"`: the checkpoint's own
        AnyRes grid (or single view), `max_slices` ignored; a page too large for the context fails."""
        check_view(view)
        questions = [questions] if isinstance(questions, str) else list(questions)
        ids = max((self._ids(q) for q in questions), key=len)
        requested = self.preset.max_slices if max_slices is None else max_slices
        # kept, as a server plans each of its kept pages again for every request (the preset and config are the
        # reader's own); a page that does not fit raises each time
        key = (width, height, len(ids), requested, max_new_tokens, view, self.context)
        args = (width, height, len(ids) - 1, requested, max_new_tokens, view)
        return _recent(self._kept_plans, key, PLANS_KEPT, self._plan, *args), ids

    def _plan(
        self, width: int, height: int, prompt_tokens: int, max_slices: int, max_new_tokens: int, view: str
    ) -> PagePlan | NativePlan:
        if view == "native":
            return plan_native(
                width,
                height,
                native_spec(self.base.model.config),
                prompt_tokens=prompt_tokens,
                max_new_tokens=max_new_tokens,
                context=self.context,
            )
        budget = Budget(context=self.context, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens)
        return plan_page(
            width,
            height,
            size=self.preset.size,
            patch=self.preset.patch,
            k=self.preset.k,
            max_slices=max_slices,
            budget=budget,
            global_view=self.global_view,
        )

    # -- encoding pages once ---------------------------------------------------------------------
    def encode(
        self,
        render: Callable[[int, int], Image.Image],
        width: int,
        height: int,
        questions: str | Sequence[str],
        *,
        file: str = "<image>",
        page: int = 1,
        max_slices: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        page_plan: PagePlan | NativePlan | None = None,
        view: str = View.hires,
    ) -> EncodedPage:
        """Render, slice and encode one page of nominal size width x height, and prefill its prompt
        prefix. The plan leaves room for the longest of `questions` (or is `page_plan`, when given)."""
        (encoded,) = self.encode_pages(
            [PageSource(render, width, height, file, page)],
            questions,
            max_slices=max_slices,
            max_new_tokens=max_new_tokens,
            plans=None if page_plan is None else [page_plan],
            view=view,
        )
        encoded.cache  # noqa: B018  prefill now, so timing_ms is complete
        return encoded

    def encode_pages(
        self,
        sources: Sequence[PageSource],
        questions: str | Sequence[str],
        *,
        max_slices: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        plans: Sequence[PagePlan | NativePlan] | None = None,
        view: str = View.hires,
    ) -> list[EncodedPage]:
        """Several pages' views through the vision encoder in one pass (native pages: one pass each).
        Each page's prompt prefix is prefilled when first asked (one KV cache alive at a time when pages
        are answered in turn); `timing_ms["encode"]` is each page's share of the pass. `plans`, when
        given, decide the view; they must all be of one view."""
        if plans is None:
            plans = [
                self.plan(
                    s.width, s.height, questions, max_slices=max_slices, max_new_tokens=max_new_tokens, view=view
                )[0]
                for s in sources
            ]
        views = {p.view for p in plans}
        if len(views) > 1:
            raise ValueError(f"pages of one call are encoded in one view, got {sorted(views)}")
        encode = self._encode_native if views == {"native"} else self._encode_hires
        sequences, renders, encode_ms = encode(sources, plans)
        ids = self._ids(questions if isinstance(questions, str) else questions[0])
        prefix_ids = ids[: ids.index(self.base.image_token_id)]
        return [
            EncodedPage(
                file=s.file,
                page=s.page,
                page_plan=plan,
                prefix_ids=prefix_ids,
                sequence=sequence,
                prefix_len=len(prefix_ids) + sequence.shape[0],
                prefill=self._prefill_prefix,
                timing_ms={"render": render_ms, "encode": encode_ms},
            )
            for s, plan, sequence, render_ms in zip(sources, plans, sequences, renders)
        ]

    def _encode_hires(self, sources: Sequence[PageSource], plans: Sequence[PagePlan]):
        """Every page's views through docread's HiRes path in one batch: (sequences, render ms, encode ms)."""
        import torch

        renders, pixels = [], []
        for source, plan in zip(sources, plans):
            start = time.perf_counter()
            image = source.render(plan.plan.width, plan.plan.height)
            pixels.append(page_pixels(image, plan, self.base.image_mean, self.base.image_std))  # (1 + T, 3, S, S)
            renders.append(_ms(start))
        start = time.perf_counter()
        with torch.inference_mode():
            batch = torch.cat(pixels).to(self.base.device, self.base.dtype)  # (sum of views, 3, S, S)
            sequences = self.hires.image_embeddings(batch, [(p.plan.rows, p.plan.cols) for p in plans])
            self._sync()
        return sequences, renders, _ms(start) / len(sources)

    def _encode_native(self, sources: Sequence[PageSource], plans: Sequence[NativePlan]):
        """Each page rendered once at its nominal size, through the checkpoint's own image processor and
        `get_image_features` (AnyRes tiles differ in number per page, so one pass each)."""
        import torch

        if self._image_processor is None:
            from docread.views.native import image_processor, processor_settings

            folder = self.base.path if self.base.path.is_dir() else None  # in-memory bases have no files
            self._image_processor = image_processor(
                self.base.model.config, processor_settings(folder), self.base.image_mean, self.base.image_std
            )
        sequences, renders, encode_ms = [], [], 0.0
        for source, plan in zip(sources, plans):
            start = time.perf_counter()
            pixels = native_pixels(source.render(plan.plan.width, plan.plan.height), self._image_processor)
            renders.append(_ms(start))
            start = time.perf_counter()
            with torch.inference_mode():
                sequence = native_embeddings(self.base.model, pixels, dtype=self.base.dtype)  # (N, D)
                self._sync()
            encode_ms += _ms(start)
            if sequence.shape[0] != plan.tokens.image_tokens:  # the count and the model disagree: a bug
                raise ValueError(
                    f"{source.file} page {source.page}: planned {plan.tokens.image_tokens} native "
                    f"image tokens, the model produced {sequence.shape[0]}"
                )
            sequences.append(sequence)
        return sequences, renders, encode_ms / len(sources)

    def _prefill_prefix(self, encoded: EncodedPage):
        """A new KV cache holding the prompt up to the end of the page's image."""
        import torch

        from docread.generate.dynamic import new_cache, prefill

        start = time.perf_counter()
        with torch.inference_mode():
            embeds = self._embed(encoded.prefix_ids, encoded.sequence)
            cache = new_cache(self.hires.language_model)
            prefill(self.hires.language_model, embeds, cache)
            self._sync()
        encoded.timing_ms["prefill"] = _ms(start)
        return cache

    def _embed(self, ids: list[int], sequence: torch.Tensor | None) -> torch.Tensor:
        """Embeddings (1, T, D) of ids, the page's image sequence scattered into its placeholder."""
        import torch

        if sequence is None and self.base.image_token_id not in ids:  # text alone: no placeholder to fill
            return self.hires.language_model.get_input_embeddings()(torch.tensor([ids], device=self.base.device))
        if sequence is not None and self.base.image_token_id in ids:
            ids = expand_image_token(ids, self.base.image_token_id, sequence.shape[0])
        elif sequence is not None:
            ids = ids + [self.base.image_token_id] * sequence.shape[0]  # a prefix ends with the image
        input_ids = torch.tensor([ids], device=self.base.device)
        return self.hires.embed_prompt(input_ids, [sequence] if sequence is not None else [])

    def _sync(self) -> None:
        if self.base.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.base.device)

    def context_needed(self, encoded: EncodedPage, question: str, max_new_tokens: int = 0) -> int:
        """Context tokens the encoded page's prefix, `question`'s prompt after the image (the text of the
        template's question slot: a chat's earlier turns included) and `max_new_tokens` take together."""
        ids = self._ids(question)
        return encoded.prefix_len + len(ids) - ids.index(self.base.image_token_id) - 1 + max_new_tokens

    def _suffix(self, encoded: EncodedPage, question: str, max_new_tokens: int = 0) -> torch.Tensor:
        """Embeddings of the prompt after the image for `question`, checked against the cached prefix
        and the context (a question longer than the page was planned for must still fit)."""
        ids = self._ids(question)
        at = ids.index(self.base.image_token_id)
        if ids[:at] != encoded.prefix_ids:  # never with a fixed template; kept honest all the same
            raise ValueError("the prompt prefix changed between questions; encode the page again")
        self.check_fits(encoded, question, max_new_tokens)
        return self._embed(ids[at + 1 :], None)

    def check_fits(self, encoded: EncodedPage, question: str, max_new_tokens: int = 0) -> None:
        """Raise `context_overflow` when the page as planned, `question` and `max_new_tokens` exceed the context
        (a batch checks each question first, so one that does not fit is its own error, not the batch's)."""
        needed = self.context_needed(encoded, question, max_new_tokens)
        if needed > self.context:
            raise ContextOverflow(
                f"the page as planned, this question and --max-new-tokens "
                f"{max_new_tokens} need {needed} of the model's {self.context} context tokens: "
                "shorten the question, lower --max-new-tokens or --max-slices",
                needed=needed,
                context=self.context,
            )

    # -- answering ---------------------------------------------------------------------------
    def answer(
        self,
        encoded: EncodedPage,
        question: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        seed: int | None = None,
        fast: bool = False,
        constrain=None,
    ) -> AnswerStream:
        """Stream the answer to `question` about an encoded page (`fast`: the compiled decoder; `constrain`:
        a `generate.loop.Constraint` on each step's logits)."""
        from docread.generate.dynamic import crop_cache
        from docread.generate.loop import DecodeStats, Row
        from docread.generate.text import TextStream

        stream = AnswerStream(iter(()), encoded.page_plan)

        def chunks() -> Iterator[str]:
            import torch

            with torch.inference_mode():
                embeds = self._suffix(encoded, question, max_new_tokens)
            stats = DecodeStats()
            text = TextStream(self.base.tokenizer)
            try:
                row = Row(embeds, max_new_tokens, encoded.cache, temperature, seed, constrain, stats)
                for _, token, _ in self.decode([row], fast=fast):
                    if token is None:
                        continue
                    if chunk := text.push(token):
                        yield chunk
                if tail := text.flush():
                    yield tail
            finally:
                crop_cache(encoded.cache, encoded.prefix_len)
            stream.tokens = stats.tokens
            stream.answer = self._finish_answer(encoded, question, stats, text, encoded.prefix_len + embeds.shape[1])

        stream._chunks = chunks()
        return stream

    def _finish_answer(self, encoded: EncodedPage, question: str, stats, text, prompt_tokens: int) -> Answer:
        """The Answer of a decoded question (DecodeStats, TextStream); the page's first carries its timing."""
        first = encoded.answered == 0
        encoded.answered += 1
        timing = {
            "render": encoded.timing_ms["render"] if first else 0.0,
            "encode": encoded.timing_ms["encode"] if first else 0.0,
            "prefill": stats.prefill_ms + (encoded.timing_ms["prefill"] if first else 0.0),
            "decode": stats.decode_ms,
        }
        plan, tokens = encoded.page_plan.plan, encoded.page_plan.tokens
        return Answer(
            file=encoded.file,
            page=encoded.page,
            question=question,
            answer=text.text().strip(),
            score=stats.score,
            model=self.name,
            rows=plan.rows,
            cols=plan.cols,
            tiles=plan.tiles,
            visual_tokens=tokens.visual_tokens,
            image_tokens=tokens.image_tokens,
            prompt_tokens=prompt_tokens,
            generated_tokens=len(stats.tokens),
            max_slices=encoded.page_plan.max_slices,
            reduced_from=encoded.page_plan.requested_slices if encoded.page_plan.reduced else None,
            stopped_by=stats.stopped_by,
            timing_ms={k: round(v, 2) for k, v in timing.items()},
            view=encoded.view,
        )


def _recent(kept: dict, key, limit: int, make: Callable, *args):
    """`kept[key]`, made by `make(*args)` when missing; the `limit` most recently used kept, the oldest out first."""
    value = kept.pop(key, None)
    if value is None:
        value = make(*args)
    kept[key] = value  # the most recent last
    while len(kept) > limit:
        del kept[next(iter(kept))]
    return value


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
