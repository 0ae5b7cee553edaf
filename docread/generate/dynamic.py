"""The dynamic KV cache: prefill a prompt's embeddings into a transformers `DynamicCache`, decode in it
(`DynamicStep`, for `loop.decode_tokens`), crop it back to a prefix, score a teacher-forced continuation."""

from __future__ import annotations

import functools
import inspect

import torch


@functools.cache
def cache_argument(model_class) -> str:
    """transformers 5 names the KV-cache argument `cache`; 4.x `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def run_llm(language_model, inputs_embeds: torch.Tensor, cache) -> torch.Tensor:
    """Hidden states (1, T, D) of inputs_embeds (1, T, D) following what `cache` holds (which grows)."""
    kwargs = {cache_argument(type(language_model)): cache}
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


class DynamicStep:
    """One answer's steps in a dynamic cache: the prefix passed to `prefill` (grown in place; the caller
    crops it back) or a new cache."""

    def __init__(self, language_model, lm_head):
        self.language_model, self.lm_head = language_model, lm_head
        self.embed = language_model.get_input_embeddings()
        self.cache = None

    def prefill(self, inputs_embeds: torch.Tensor, *, prefix, room: int) -> torch.Tensor:
        """Logits (1, V) after inputs_embeds (1, T, D); a dynamic cache grows to any `room`."""
        self.cache = prefix if prefix is not None else new_cache(self.language_model)
        return self.lm_head(prefill(self.language_model, inputs_embeds, self.cache)).float()

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (1, V) after ids (1, 1)."""
        return self.lm_head(prefill(self.language_model, self.embed(ids), self.cache)).float()


@torch.inference_mode()
def continuation_logprob(language_model, lm_head, inputs_embeds: torch.Tensor, continuation: list[int], cache) -> float:
    """Sum of log-probabilities of `continuation` token ids after inputs_embeds (1, T, D), teacher-forced."""
    embed = language_model.get_input_embeddings()
    ids = torch.tensor([continuation], device=inputs_embeds.device)
    sequence = torch.cat([inputs_embeds, embed(ids)[:, :-1]], dim=1)  # (1, T + n - 1, D)
    hidden = run_llm(language_model, sequence, cache)
    logprobs = torch.log_softmax(lm_head(hidden[:, -len(continuation) :]).float(), dim=-1)  # (1, n, V)
    return float(logprobs[0].gather(1, ids[0, :, None]).sum())
