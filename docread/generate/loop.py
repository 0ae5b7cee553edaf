"""The one decode loop: prefill, then pick a token, yield it, step, until EOS or max_new_tokens.

Sampling, EOS, stats and timing live here once; a `Step` says how the next logits come out of a KV
cache (`dynamic.DynamicStep`, `static.StaticStep`) and an optional `constrain` masks them per step.
Steps and `pick` already speak in rows (logits (B, V), ids (B, 1)); the loop decodes one row (B = 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

# (logits (1, V), the answer's token ids so far) -> logits (1, V); -inf forbids a token
Constraint = Callable[[torch.Tensor, list[int]], torch.Tensor]


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


class Step(Protocol):
    """How the loop gets logits from one kind of KV cache; the step owns the cache it decodes in."""

    def prefill(self, inputs_embeds: torch.Tensor, *, prefix, room: int) -> torch.Tensor:
        """Logits (1, V) of the token after inputs_embeds (1, T, D), which continue what the cache
        `prefix` holds (None: nothing); `room` more positions will follow."""

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (1, V) of the token after ids (1, 1), which are appended to the cache."""


def step_for(language_model, lm_head, *, static: bool = False) -> Step:
    """A step for one answer: a fresh dynamic cache, or the model's (reused) static one."""
    from docread.generate.dynamic import DynamicStep
    from docread.generate.static import static_step_for

    return static_step_for(language_model, lm_head) if static else DynamicStep(language_model, lm_head)


def sync(device: torch.device) -> None:
    """Wait for the device, so that a timer reads the work done and not the work queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Token ids (1,) from logits (1, V): the argmax at temperature 0, else a draw from softmax(logits / t)."""
    if temperature > 0:
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
    return logits.argmax(dim=-1)


@torch.inference_mode()
def decode_tokens(
    step: Step,
    inputs_embeds: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_ids: Iterable[int],
    temperature: float = 0.0,
    seed: int | None = None,
    stats: DecodeStats | None = None,
    cache=None,
    constrain: Constraint | None = None,
) -> Iterator[tuple[int, float]]:
    """Yield (token id, log-prob) for up to max_new_tokens tokens after inputs_embeds (1, T, D).

    With `cache`, inputs_embeds continue what it holds (an encoded page's prefix): a dynamic step
    grows it (the caller crops it back), a static step copies it. Stops after an EOS token (not
    yielded). temperature 0 = greedy; `seed` makes sampling repeatable. Log-probs are of the
    logits after `constrain`.
    """
    stats = stats if stats is not None else DecodeStats()
    eos = set(eos_token_ids)
    device = inputs_embeds.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None and temperature > 0 else None

    start = time.perf_counter()
    logits = step.prefill(inputs_embeds, prefix=cache, room=max_new_tokens)  # (1, V)
    sync(device)
    stats.prefill_ms = (time.perf_counter() - start) * 1000

    start = time.perf_counter()
    stats.stopped_by = "length"
    for n in range(max_new_tokens):
        if constrain is not None:
            logits = constrain(logits, stats.tokens)
        token = int(pick(logits, temperature, generator))
        if token in eos:
            stats.stopped_by = "eos"
            break
        stats.tokens.append(token)
        stats.logprobs.append(float(torch.log_softmax(logits, dim=-1)[0, token]))
        yield token, stats.logprobs[-1]
        if n + 1 == max_new_tokens:
            break
        logits = step(torch.tensor([[token]], device=device))  # ids (1, 1) -> logits (1, V)
    sync(device)
    stats.decode_ms = (time.perf_counter() - start) * 1000
