"""Questions asked without an image, for `DocReader` (a mixin): the chat format with no image marker,
decoded by the same loop as a page's answer. Benchmarks use it for questions that come without a
figure (HallusionBench's `visual_input` 0); a document question always has its page."""

from __future__ import annotations

from collections.abc import Iterator

from docread.errors import DocreadError
from docread.results import Answer, AnswerStream
from docread.settings import DEFAULT_MAX_NEW_TOKENS

NO_IMAGE_VIEW = "none"  # Answer.view of a question asked without an image


class TextCalls:
    """`stream_text` and `ask_text` over a reader's base, HiRes language model, template and context."""

    def stream_text(
        self,
        question: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AnswerStream:
        """Answer `question` with no image in the prompt, streaming."""
        import torch

        from docread.generate.loop import DecodeStats, decode_tokens, step_for
        from docread.generate.text import TextStream
        from docread.views.processor import text_prompt_ids

        ids = text_prompt_ids(self.base.tokenizer, self.template, question, self.base.image_token_id)
        if len(ids) + max_new_tokens > self.context:
            raise DocreadError(
                "context_overflow",
                f"this question and --max-new-tokens {max_new_tokens} need {len(ids) + max_new_tokens} of the "
                f"model's {self.context} context tokens: shorten the question or lower --max-new-tokens",
            )
        stream = AnswerStream(iter(()))

        def chunks() -> Iterator[str]:
            with torch.inference_mode():
                embeds = self._embed(ids, None)  # (1, T, D)
            stats, text = DecodeStats(), TextStream(self.base.tokenizer)
            step = step_for(self.hires.language_model, self.hires.lm_head)
            for token, _ in decode_tokens(
                step,
                embeds,
                max_new_tokens=max_new_tokens,
                eos_token_ids=self.eos_token_ids,
                temperature=temperature,
                seed=seed,
                stats=stats,
            ):
                if chunk := text.push(token):
                    yield chunk
            if tail := text.flush():
                yield tail
            stream.tokens = stats.tokens
            stream.answer = _text_answer(self.name, question, text.text().strip(), stats, len(ids))

        stream._chunks = chunks()
        return stream

    def ask_text(self, question: str, **options) -> Answer:
        """Answer `question` with no image and return the whole Answer (`view` "none", no tiles)."""
        stream = self.stream_text(question, **options)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer


def _text_answer(model: str, question: str, answer: str, stats, prompt_tokens: int) -> Answer:
    return Answer(
        file="",
        page=0,
        question=question,
        answer=answer,
        score=stats.score,
        model=model,
        rows=0,
        cols=0,
        tiles=0,
        visual_tokens=0,
        image_tokens=0,
        prompt_tokens=prompt_tokens,
        generated_tokens=len(stats.tokens),
        max_slices=0,
        reduced_from=None,
        stopped_by=stats.stopped_by,
        timing_ms={"prefill": round(stats.prefill_ms, 2), "decode": round(stats.decode_ms, 2)},
        view=NO_IMAGE_VIEW,
    )
