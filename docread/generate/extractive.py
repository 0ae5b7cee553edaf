"""Extractive answers (`--extractive`): a `generate.loop` constraint that lets the model say only spans of
the page's own text. At each step the best-scoring candidates are checked in order, and a token survives
only when the answer so far plus it is still a substring of the page text (whitespace runs as one space);
the end of the answer is allowed once it holds a span. So every answer is on the page by construction."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from docread.generate.text import TextStreams

NEG = float("-inf")
TOP_K = 64  # candidates checked at each step, best first; more only when none of these fits
WIDE_K = 4096  # the widest search before the answer is ended (or, still empty, started at the text's start)
_SPACES = re.compile(r"\s+")


def normalized(text: str) -> str:
    """Whitespace runs as one space (page text and answers are compared so)."""
    return _SPACES.sub(" ", text)


class Extractive:
    """A Constraint (reset by an empty answer) keeping each answer a span of `text`; with `accept`, the
    answer may end only where `accept(answer)` holds (extract's typed spans: where it parses)."""

    def __init__(self, tokenizer, text: str, eos_token_ids: Iterable[int], accept: Callable[[str], bool] | None = None):
        self.tokenizer, self.eos, self.accept = tokenizer, sorted(set(eos_token_ids)), accept
        self.text = normalized(text).strip()
        self.first = (tokenizer(self.text, add_special_tokens=False).input_ids or self.eos)[0]
        self.checked = 0  # candidates decoded so far (what a step costs)
        self.texts = TextStreams(tokenizer, skip_special_tokens=True)

    def _fits(self, head: str, rest: str) -> bool:
        """Whether an answer is on the page: `head` its normalized text up to a trailing whitespace run,
        `rest` the raw text from there (normalized apart, as no whitespace run crosses between them)."""
        said = (head + normalized(rest)).lstrip()
        return bool(said) and said in self.text

    def __call__(self, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:  # logits: (1, V)
        stream, _ = self.texts.of(tokens)  # a candidate decodes only the window after the text read so far
        said = stream.said()
        body = said.rstrip()
        head, space = normalized(body), said[len(body) :]
        order = torch.argsort(logits[0], descending=True).tolist()
        allowed: list[int] = []
        for start, stop in ((0, TOP_K), (TOP_K, WIDE_K)):
            for token in order[start:stop]:
                if token in self.eos:
                    if tokens and self._ends(head, space + stream.pending, said + stream.pending):
                        allowed.append(token)
                    continue
                self.checked += 1
                if self._fits(head, space + stream.peek(token)):
                    allowed.append(token)
            if allowed:
                break
        if not allowed:  # nothing near the top continues a span: end it, or start at the page's first token
            allowed = self.eos if tokens else [self.first]
        keep = torch.full_like(logits, NEG)
        keep[..., allowed] = logits[..., allowed]
        return keep

    def _ends(self, head: str, rest: str, answer: str) -> bool:
        return self._fits(head, rest) and (self.accept is None or self.accept(answer.strip()))

    def finish(self, tokens: list[int]) -> None:
        self.texts.drop(tokens)
