"""Several questions decoded as one batch, for `DocReader` (a mixin): each question about its own encoded
page, with its own prompt length, stop condition and seed; finished rows leave the batch; a server's
`joiner` may take the rows into its running batch instead (continuous batching, `docread.serve.batcher`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from docread.results import Answer
from docread.views.encoded import PageQuestion


class ManyCalls:
    """`stream_many`, `answer_many` and `decode` over a reader's `_suffix`, `_finish_answer`, language model
    and `joiner`."""

    def stream_many(
        self, requests: Sequence[PageQuestion | tuple], *, fast: bool = False
    ) -> Iterator[tuple[int, str | Answer]]:
        """Decode several questions, each about its own encoded page, as one batch (`fast`: in the static
        cache). Yields (index, text chunk) as a request's tokens come and (index, Answer) when it ends.
        Greedy answers are what `answer` gives one at a time, token for token; a seeded request samples
        as it would alone. Tuples are read as PageQuestion(encoded, question, max_new_tokens, ...)."""
        import torch

        from docread.generate.dynamic import crop_cache
        from docread.generate.loop import Row
        from docread.generate.text import TextStream

        requests = [r if isinstance(r, PageQuestion) else PageQuestion(*r) for r in requests]
        with torch.inference_mode():
            embeds = [self._suffix(r.encoded, r.question, r.max_new_tokens) for r in requests]
        args = [(r.max_new_tokens, r.encoded.cache, r.temperature, r.seed, r.constrain) for r in requests]
        rows = [Row(e, *a) for e, a in zip(embeds, args)]
        texts = [TextStream(self.base.tokenizer) for _ in requests]
        try:
            for i, token, _ in self.decode(rows, fast=fast):
                if token is not None:
                    if chunk := texts[i].push(token):
                        yield i, chunk
                    continue
                if tail := texts[i].flush():
                    yield i, tail
                request, row = requests[i], rows[i]
                prompt_tokens = request.encoded.prefix_len + row.inputs_embeds.shape[1]
                yield i, self._finish_answer(request.encoded, request.question, row.stats, texts[i], prompt_tokens)
        finally:
            for encoded in {id(r.encoded): r.encoded for r in requests}.values():
                crop_cache(encoded.cache, encoded.prefix_len)  # one row grows its page's prefix in place

    def decode(self, rows: list, *, fast: bool = False) -> Iterator[tuple[int, int | None, float | None]]:
        """`generate.loop.decode_rows`' events for `rows`: decoded as a batch of their own (`fast`: in the static
        cache), or, when a server set `joiner` and it takes them, in its running batch, joined at its next step."""
        from docread.generate.loop import decode_rows, step_for

        joined = self.joiner(rows, fast=fast) if self.joiner is not None else None  # None: decode them here
        if joined is not None:
            return joined
        step = step_for(self.hires.language_model, self.hires.lm_head, static=fast)
        return decode_rows(step, rows, eos_token_ids=self.eos_token_ids)

    def answer_many(self, requests: Sequence[PageQuestion | tuple], *, fast: bool = False) -> list[Answer]:
        """The Answers of `stream_many(requests)`, in the requests' order."""
        answers: dict[int, Answer] = {}
        for i, event in self.stream_many(requests, fast=fast):
            if isinstance(event, Answer):
                answers[i] = event
        return [answers[i] for i in range(len(answers))]
