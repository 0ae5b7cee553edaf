"""Streaming generation: prefill the prompt's embeddings once, then decode token by token.

`decode_tokens` yields (token id, log-probability) pairs; `TextStream` turns them into
text chunks that never split a character. Greedy by default; the caller renders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch


@dataclass
class DecodeStats:
    """Filled in while decoding; read it after the stream ends."""

    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stopped_by: str = ""   # "eos" or "length"

    @property
    def score(self) -> float | None:
        """Mean token log-probability of the answer (None for an empty answer)."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def decode_tokens(language_model, lm_head, inputs_embeds: torch.Tensor, *, max_new_tokens: int,
                  eos_token_ids: Iterable[int], temperature: float = 0.0, seed: int | None = None,
                  stats: DecodeStats | None = None) -> Iterator[tuple[int, float]]:
    """Yield (token id, log-prob) for up to max_new_tokens tokens after inputs_embeds (1, T, D).

    Stops after an EOS token (not yielded). temperature 0 = greedy.
    """
    from transformers import DynamicCache

    stats = stats if stats is not None else DecodeStats()
    eos = set(eos_token_ids)
    device = inputs_embeds.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None and temperature > 0 else None
    cache = DynamicCache(config=language_model.config)
    embed = language_model.get_input_embeddings()

    start = time.perf_counter()
    hidden = language_model(inputs_embeds=inputs_embeds, cache=cache, use_cache=True).last_hidden_state
    logits = lm_head(hidden[:, -1]).float()  # (1, V)
    _sync(device)
    stats.prefill_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    stats.stopped_by = "length"
    for step in range(max_new_tokens):
        logprobs = torch.log_softmax(logits, dim=-1)  # (1, V)
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        else:
            token = int(logits.argmax(dim=-1))
        if token in eos:
            stats.stopped_by = "eos"
            break
        stats.tokens.append(token)
        stats.logprobs.append(float(logprobs[0, token]))
        yield token, stats.logprobs[-1]
        if step + 1 == max_new_tokens:
            break
        ids = torch.tensor([[token]], device=device)
        hidden = language_model(inputs_embeds=embed(ids), cache=cache, use_cache=True).last_hidden_state
        logits = lm_head(hidden[:, -1]).float()
    _sync(device)
    stats.decode_ms = (time.perf_counter() - start) * 1000


class TextStream:
    """Incremental detokenisation: yields only text that later tokens cannot change."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character is still incomplete
            return ""
        chunk, self.emitted = text[self.emitted :], len(text)
        return chunk

    def flush(self) -> str:
        """What is left at the end of the stream, an incomplete character included."""
        text = self.text()
        chunk, self.emitted = text[self.emitted :], len(text)
        return chunk

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)
