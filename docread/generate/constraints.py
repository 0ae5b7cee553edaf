"""Per-answer constraints for the decode loop's `constrain` hook: nucleus sampling (`TopP`), stop strings
(`StopAt`), each token's log-probability and top alternatives (`Recorder`), several in a row (`Chain`).
Each starts over when it sees an empty answer (a new page's answer), and may have `finish(tokens)`,
which the loop calls when the answer ends."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from docread.generate.text import TextStreams

NEG = float("-inf")


class TopP:
    """Nucleus sampling: keep the fewest most likely tokens whose probability (at `temperature`) sums to
    `top_p`; the rest are forbidden. Greedy decoding is unchanged (the argmax is always kept)."""

    def __init__(self, top_p: float, temperature: float):
        self.top_p, self.temperature = top_p, temperature

    def __call__(self, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        if self.top_p >= 1.0 or self.temperature <= 0:
            return logits
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the tokens ranked above each one
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before >= self.top_p)
        return logits.masked_fill(drop, NEG)


class StopAt:
    """Force an end of sequence once the answer's text (special tokens written out) holds one of `stops`
    (the caller cuts it there). Each step decodes only the new tokens' window and looks for a stop only
    where a new one can be: in the text the step added and the `len(stop) - 1` characters before it."""

    def __init__(self, tokenizer, stops: Sequence[str], eos_token_ids: Iterable[int]):
        self.stops = [s for s in stops if s]
        self.eos = sorted(set(eos_token_ids))
        self.back = max((len(s) for s in self.stops), default=1) - 1  # characters a new match may reach back
        self.texts = TextStreams(tokenizer, skip_special_tokens=False)
        self.stopped: set[int] = set()  # the answers (ids of token lists) that hold a stop

    def __call__(self, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        if not tokens:  # a new answer
            self.finish(tokens)
        if not (tokens and self.eos and self.stops):
            return logits
        stream, new = self.texts.of(tokens)
        if id(tokens) not in self.stopped:
            # the pending text (an incomplete character at its end) can still change, so it is read every step
            seen = stream.sent - len(new)
            region = stream.tail(min(seen, self.back) + len(new)) + stream.pending
            if not any(s in region for s in self.stops):
                return logits
            self.stopped.add(id(tokens))
        forced = torch.full_like(logits, NEG)
        forced[..., self.eos[0]] = 0.0
        return forced

    def finish(self, tokens: list[int]) -> None:
        self.texts.drop(tokens)
        self.stopped.discard(id(tokens))


class Recorder:
    """Each chosen token's log-probability and the `top_k` most likely tokens at its step (of the logits
    the loop samples from, so it goes last in a `Chain`). `runs` holds one list per answer decoded:
    [(token, logprob, [(token, logprob), ...]), ...]."""

    def __init__(self, top_k: int = 0):
        self.top_k = top_k
        self.runs: list[list[tuple[int, float, list[tuple[int, float]]]]] = []
        self._last: torch.Tensor | None = None
        self._tops: list[list[tuple[int, float]]] = []

    def _resolve(self, tokens: list[int]) -> None:
        run = self.runs[-1]
        while len(run) < len(tokens) and self._last is not None:
            token = tokens[len(run)]
            run.append((token, float(self._last[token]), self._tops[len(run)]))

    def __call__(self, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        if not tokens:
            self.runs.append([])
            self._tops = []
        else:
            self._resolve(tokens)
        logprobs = torch.log_softmax(logits[0].float(), dim=-1)
        self._last = logprobs
        if self.top_k > 0:
            values, ids = logprobs.topk(min(self.top_k, logprobs.shape[-1]))
            self._tops.append([(int(i), float(v)) for i, v in zip(ids, values)])
        else:
            self._tops.append([])
        return logits

    def finish(self, tokens: list[int]) -> None:
        if self.runs:
            self._resolve(tokens)
        self._last = None


class Chain:
    """Constraints applied in order; `finish` reaches each that has one."""

    def __init__(self, *constraints):
        self.constraints = [c for c in constraints if c is not None]

    def __call__(self, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        for constraint in self.constraints:
            logits = constraint(logits, tokens)
        return logits

    def finish(self, tokens: list[int]) -> None:
        for constraint in self.constraints:
            if hasattr(constraint, "finish"):
                constraint.finish(tokens)


def finish(constrain, tokens: list[int]) -> None:
    """Tell a constraint its answer ended with `tokens` (when it wants to know)."""
    if constrain is not None and hasattr(constrain, "finish"):
        constrain.finish(tokens)
