"""Questions about one page of a file or a PIL image, for `DocReader` (a mixin): open a page,
stream or return an answer, choose among options by likelihood. Whole documents: `docread.document`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from docread.intake.limits import DEFAULT_DPI
from docread.results import Answer, AnswerStream
from docread.settings import DEFAULT_MAX_NEW_TOKENS, View
from docread.views.encoded import EncodedPage

if TYPE_CHECKING:
    from PIL import Image


class PageCalls:
    """`open_page`, `stream`, `ask` and `choose` over a reader's `encode`, `answer` and `_suffix`."""

    def choose(self, source, question: str, options: Sequence[str], **options_kw) -> tuple[int, list[float]]:
        """The option (index) the model finds likeliest as the answer, with every option's summed
        log-probability: multiple choice without parsing generated text."""
        from docread.generate.dynamic import continuation_logprob, crop_cache

        with self.open_page(source, question, **options_kw) as encoded:
            embeds = self._suffix(encoded, question)
            prompt = self.base.tokenizer(self.template.template.replace("{question}", question)).input_ids
            scores = []
            for option in options:
                full = self.base.tokenizer(
                    self.template.template.replace("{question}", question) + " " + option
                ).input_ids
                continuation = (
                    full[len(prompt) :]
                    if full[: len(prompt)] == prompt
                    else self.base.tokenizer(option, add_special_tokens=False).input_ids
                )
                try:
                    scores.append(
                        continuation_logprob(
                            self.hires.language_model, self.hires.lm_head, embeds, continuation, encoded.cache
                        )
                    )
                finally:
                    crop_cache(encoded.cache, encoded.prefix_len)
        return max(range(len(options)), key=scores.__getitem__), scores

    @contextmanager
    def open_page(
        self,
        source: str | Path | Image.Image,
        questions: str | Sequence[str],
        *,
        page: int = 1,
        dpi: float = DEFAULT_DPI,
        password: str | None = None,
        max_slices: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        view: str = View.hires,
    ) -> Iterator[EncodedPage]:
        """One page of a PDF or image file (or a PIL image), encoded for `questions` in `view`."""
        from PIL import Image

        if isinstance(source, Image.Image):
            image = source.convert("RGB")
            render = lambda w, h: image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BICUBIC)  # noqa: E731
            yield self.encode(
                render,
                image.width,
                image.height,
                questions,
                max_slices=max_slices,
                max_new_tokens=max_new_tokens,
                view=view,
            )
            return
        from docread.intake import open_document

        with open_document(str(source), pages=str(page), password=password, dpi=dpi) as document:
            selected = document.pages[0]
            yield self.encode(
                lambda w, h: document.render(selected, w, h),
                selected.width,
                selected.height,
                questions,
                file=str(source),
                page=selected.number,
                max_slices=max_slices,
                max_new_tokens=max_new_tokens,
                view=view,
            )

    def stream(
        self,
        source: str | Path | Image.Image,
        question: str,
        *,
        page: int = 1,
        dpi: float = DEFAULT_DPI,
        password: str | None = None,
        max_slices: int | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        seed: int | None = None,
        fast: bool = False,
        view: str = View.hires,
    ) -> AnswerStream:
        """Answer `question` about one page of a PDF or image file (or a PIL image), streaming."""
        context = self.open_page(
            source,
            question,
            page=page,
            dpi=dpi,
            password=password,
            max_slices=max_slices,
            max_new_tokens=max_new_tokens,
            view=view,
        )
        encoded = context.__enter__()  # the plan is known (and a bad file fails) before the first chunk
        inner = self.answer(
            encoded, question, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, fast=fast
        )

        def chunks() -> Iterator[str]:
            try:
                yield from inner
            finally:
                context.__exit__(None, None, None)
            outer.answer, outer.tokens = inner.answer, inner.tokens

        outer = AnswerStream(chunks(), encoded.page_plan)
        return outer

    def ask(self, source, question: str, **options) -> Answer:
        """Answer `question` and return the whole Answer (no streaming)."""
        stream = self.stream(source, question, **options)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer
