"""The dynamic KV cache: prefill a prompt's embeddings into a transformers `DynamicCache`, decode in it
(`DynamicStep`, for `loop.decode_tokens`), crop it back to a prefix, score a teacher-forced continuation."""

from __future__ import annotations

import functools
import inspect

import torch

from docread.generate.rows import Layout, padded_prefixes


@functools.cache
def cache_argument(model_class) -> str:
    """transformers 5 names the KV-cache argument `cache`; 4.x `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def run_llm(language_model, inputs_embeds: torch.Tensor, cache, mask=None, positions=None) -> torch.Tensor:
    """Hidden states (B, T, D) of inputs_embeds (B, T, D) following what `cache` holds (which grows);
    with padded rows, `mask` (B, cached + T) and `positions` (B, T)."""
    kwargs = {cache_argument(type(language_model)): cache}
    return language_model(
        inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs
    ).last_hidden_state


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
    """Rows' steps in a dynamic cache. One row continues the prefix passed to `prefill` in place (the
    caller crops it back); several rows get a new cache holding copies of their prefixes, padded."""

    def __init__(self, language_model, lm_head):
        self.language_model, self.lm_head = language_model, lm_head
        self.embed = language_model.get_input_embeddings()
        self.cache = None
        self.mask = self.positions = None  # (B, columns) and (B,) when rows are padded

    def prefill(self, inputs_embeds: torch.Tensor, *, prefixes: list, room: int, layout: Layout) -> torch.Tensor:
        """Logits (B, V) after inputs_embeds (B, T, D); a dynamic cache grows to any `room`."""
        device = inputs_embeds.device
        if len(prefixes) == 1 and prefixes[0] is not None:
            self.cache = prefixes[0]
        else:
            self.cache = new_cache(self.language_model)
            for index, (keys, values) in enumerate(padded_prefixes(prefixes, layout.prefix_width)):
                self.cache.update(keys, values, index)
        positions = None
        if layout.padded:
            self.mask = layout.mask(layout.prefix_width + layout.prompt_width, device)
            positions, self.positions = layout.prompt_positions(device), layout.next_positions(device)
        hidden = run_llm(self.language_model, inputs_embeds, self.cache, self.mask, positions)
        return self.lm_head(hidden[:, -1]).float()

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after ids (B, 1)."""
        positions = None
        if self.mask is not None:
            self.mask = torch.nn.functional.pad(self.mask, (0, 1), value=1)
            positions, self.positions = self.positions[:, None], self.positions + 1
        hidden = run_llm(self.language_model, self.embed(ids), self.cache, self.mask, positions)
        return self.lm_head(hidden[:, -1]).float()

    def drop(self, keep: list[int]) -> None:
        """Keep rows `keep` of the cache (finished rows leave the batch: later steps cost less)."""
        index = torch.tensor(keep, device=self.embed.weight.device)
        self.cache.batch_select_indices(index)
        if self.mask is not None:
            self.mask, self.positions = self.mask[index], self.positions[index]


@torch.inference_mode()
def continuation_logprob(language_model, lm_head, inputs_embeds: torch.Tensor, continuation: list[int], cache) -> float:
    """Sum of log-probabilities of `continuation` token ids after inputs_embeds (1, T, D), teacher-forced."""
    embed = language_model.get_input_embeddings()
    ids = torch.tensor([continuation], device=inputs_embeds.device)
    sequence = torch.cat([inputs_embeds, embed(ids)[:, :-1]], dim=1)  # (1, T + n - 1, D)
    hidden = run_llm(language_model, sequence, cache)
    logprobs = torch.log_softmax(lm_head(hidden[:, -len(continuation) :]).float(), dim=-1)  # (1, n, V)
    return float(logprobs[0].gather(1, ids[0, :, None]).sum())
