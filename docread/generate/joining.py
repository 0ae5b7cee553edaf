"""Continuous batching's KV cache (`JoiningStep`, for `loop.decode_joining`): a row joins the running batch
between two steps. It is prefilled alone on its page's prefix, exactly as batch 1 prefills it (so its first
token is batch 1's), then its keys and values are left-padded to the batch's width, or the batch's to its
own, and stacked on; a padding mask and per-row positions keep each row's attention and RoPE what they are
alone. Rows that end leave (`drop`), and columns no row needs any more are cut from the left.

Why not transformers' own continuous batching (`generate_batch`, `ContinuousBatchingManager`, 5.x): it
takes prompts as token ids, while a docread row is embeddings (a page's image tokens from the HiRes
path scattered into the prompt) continuing a KV prefix prefilled once per page and shared by that page's
questions; it has no per-request seeded generator (a seeded answer must not depend on its company) nor
per-row logits constraints of our shape (JSON grammars, --extractive spans, stop strings), and it switches
the model to paged attention. The padded dynamic cache here is plain transformers and keeps batch 1's
numerics; paging would pay off only at far more rows than one docread server holds.
"""

from __future__ import annotations

import torch

from docread.generate.dynamic import DynamicStep, crop_cache, new_cache, run_llm
from docread.generate.rows import prefix_length


def _left(tensor: torch.Tensor, columns: int, dim: int, value: float = 0) -> torch.Tensor:
    """`tensor` with `columns` columns of `value` put before its own along `dim` (counted from the end)."""
    if columns == 0:
        return tensor
    pad = [0, 0] * (-dim - 1) + [columns, 0]
    return torch.nn.functional.pad(tensor, pad, value=value)


class JoiningStep(DynamicStep):
    """Steps of a batch whose rows join (`join`) and leave (`drop`) between steps, in a dynamic cache it owns.
    `self.mask` (B, columns) marks each row's real columns; `self.positions` (B,) is each row's next position."""

    def join(self, inputs_embeds: torch.Tensor, prefix) -> torch.Tensor:
        """Prefill inputs_embeds (1, T, D) alone after `prefix` (a page's cache, grown in place and cropped
        back, as `answer` does; None: nothing), add the row to the batch as its last; its logits (1, V)."""
        before = prefix_length(prefix)
        cache = prefix if prefix is not None else new_cache(self.language_model)
        try:
            hidden = run_llm(self.language_model, inputs_embeds, cache)  # (1, T, D)
            logits = self.lm_head(hidden[:, -1]).float()
            layers = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]  # (1, heads, L, hd)
        finally:
            if prefix is not None:
                crop_cache(prefix, before)
        self._stack(layers, before + inputs_embeds.shape[1])
        return logits

    def _stack(self, layers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        """Put one row's keys and values (1, heads, length, hd) a layer under the batch's, right-aligned."""
        device = layers[0][0].device
        mask, position = torch.ones(1, length, dtype=torch.long, device=device), torch.tensor([length], device=device)
        if self.cache is None:
            self.cache = new_cache(self.language_model)
            for index, (keys, values) in enumerate(layers):
                self.cache.update(keys, values, index)
            self.mask, self.positions = mask, position
            return
        width = self.mask.shape[1]
        columns = max(width, length)
        stacked = []  # all built before any is set: a failure (out of memory) leaves the batch as it was
        for layer, (keys, values) in zip(self.cache.layers, layers):
            stacked.append(
                (
                    torch.cat([_left(layer.keys, columns - width, -2), _left(keys, columns - length, -2)]),
                    torch.cat([_left(layer.values, columns - width, -2), _left(values, columns - length, -2)]),
                )
            )
        mask = torch.cat([_left(self.mask, columns - width, -1), _left(mask, columns - length, -1)])
        positions = torch.cat([self.positions, position])
        for layer, (keys, values) in zip(self.cache.layers, stacked):
            layer.keys, layer.values = keys, values
        self.mask, self.positions = mask, positions

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after ids (B, 1); a row alone steps as batch 1 does (no mask, its own positions)."""
        if ids.shape[0] > 1:
            return super().__call__(ids)
        self.mask = torch.nn.functional.pad(self.mask, (0, 1), value=1)  # (1, columns): all real, nothing cut
        self.positions = self.positions + 1
        return self.lm_head(run_llm(self.language_model, self.embed(ids), self.cache)[:, -1]).float()

    def drop(self, keep: list[int]) -> None:
        """Keep rows `keep`; the columns before every kept row's first real one are cut."""
        if not keep:
            self.cache = self.mask = self.positions = None  # the next row to join starts a new batch
            return
        super().drop(keep)
        first = int(self.mask.any(dim=0).long().argmax())  # the first column some row still attends to
        if first > 0:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]
