"""Streaming generation: prefill the prompt's embeddings once, then decode token by token.

`decode_tokens` yields (token id, log-probability) pairs; `TextStream` turns them into
text chunks that never split a character. Greedy by default; the caller renders.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch


@dataclass
class DecodeStats:
    """Filled in while decoding; read it after the stream ends."""

    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stopped_by: str = ""  # "eos" or "length"

    @property
    def score(self) -> float | None:
        """Mean token log-probability of the answer (None for an empty answer)."""
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def _cache_argument(model_class) -> str:
    """transformers 5 names the KV-cache argument `cache`; 4.x `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def run_llm(language_model, inputs_embeds: torch.Tensor, cache) -> torch.Tensor:
    """Hidden states (1, T, D) of inputs_embeds (1, T, D) following what `cache` holds (which grows)."""
    kwargs = {_cache_argument(type(language_model)): cache}
    return language_model(inputs_embeds=inputs_embeds, use_cache=True, **kwargs).last_hidden_state


@torch.inference_mode()
def prefill(language_model, inputs_embeds: torch.Tensor, cache) -> torch.Tensor:
    """Run inputs_embeds (1, T, D) through the LLM after what `cache` holds; returns the last hidden (1, D)."""
    return run_llm(language_model, inputs_embeds, cache)[:, -1]


def crop_cache(cache, length: int) -> None:
    """Cut `cache` back to its first `length` positions (a negative crop means the same in 4.x and 5.x)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def new_cache(language_model):
    from transformers import DynamicCache

    return DynamicCache(config=language_model.config)


@torch.inference_mode()
def decode_tokens(
    language_model,
    lm_head,
    inputs_embeds: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_ids: Iterable[int],
    temperature: float = 0.0,
    seed: int | None = None,
    stats: DecodeStats | None = None,
    cache=None,
) -> Iterator[tuple[int, float]]:
    """Yield (token id, log-prob) for up to max_new_tokens tokens after inputs_embeds (1, T, D).

    With `cache`, inputs_embeds continue what it holds (an encoded page's prefix); the caller
    crops it back afterwards. Stops after an EOS token (not yielded). temperature 0 = greedy.
    """
    stats = stats if stats is not None else DecodeStats()
    eos = set(eos_token_ids)
    device = inputs_embeds.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None and temperature > 0 else None
    cache = cache if cache is not None else new_cache(language_model)
    embed = language_model.get_input_embeddings()

    start = time.perf_counter()
    logits = lm_head(prefill(language_model, inputs_embeds, cache)).float()  # (1, V)
    _sync(device)
    stats.prefill_ms = (time.perf_counter() - start) * 1000

    def next_logits(token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], device=device)
        return lm_head(prefill(language_model, embed(ids), cache)).float()

    start = time.perf_counter()
    yield from sample_tokens(
        logits,
        next_logits,
        max_new_tokens=max_new_tokens,
        eos=eos,
        temperature=temperature,
        generator=generator,
        stats=stats,
    )
    _sync(device)
    stats.decode_ms = (time.perf_counter() - start) * 1000


def sample_tokens(
    logits: torch.Tensor,
    next_logits,
    *,
    max_new_tokens: int,
    eos: set[int],
    temperature: float,
    generator: torch.Generator | None,
    stats: DecodeStats,
) -> Iterator[tuple[int, float]]:
    """The decoding loop shared by the plain and the fast decoder: from the prompt's last logits
    (1, V), pick a token (greedy, or sampled at `temperature`), yield it with its log-probability,
    get the next logits from `next_logits(token)`; stop at EOS (not yielded) or max_new_tokens."""
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
            return
        stats.tokens.append(token)
        stats.logprobs.append(float(logprobs[0, token]))
        yield token, stats.logprobs[-1]
        if step + 1 == max_new_tokens:
            return
        logits = next_logits(token)


@torch.inference_mode()
def continuation_logprob(language_model, lm_head, inputs_embeds: torch.Tensor, continuation: list[int], cache) -> float:
    """Sum of log-probabilities of `continuation` token ids after inputs_embeds (1, T, D), teacher-forced."""
    embed = language_model.get_input_embeddings()
    ids = torch.tensor([continuation], device=inputs_embeds.device)
    sequence = torch.cat([inputs_embeds, embed(ids)[:, :-1]], dim=1)  # (1, T + n - 1, D)
    hidden = run_llm(language_model, sequence, cache)
    logprobs = torch.log_softmax(lm_head(hidden[:, -len(continuation) :]).float(), dim=-1)  # (1, n, V)
    return float(logprobs[0].gather(1, ids[0, :, None]).sum())


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
