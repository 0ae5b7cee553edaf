"""Continuous batching's KV cache (`JoiningStep`, for `loop.decode_joining`): a row joins the running batch
between two steps. It is prefilled alone on its page's prefix, exactly as batch 1 prefills it (so its first
token is batch 1's), then its keys and values are left-padded to the batch's width, or the batch's to its
own, and stacked on; a padding mask and per-row positions keep each row's attention and RoPE what they are
alone. Rows that end leave (`drop`), and columns no row needs any more are cut from the left.

A step writes its column into room kept after each layer's keys and values (`RoomyLayer`), where a dynamic
cache would copy the whole batch's cache to append it; its padding mask goes to the model ready-made, as the
(B, 1, 1, columns) mask transformers would build from it, or none when no row is padded.

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
from transformers.cache_utils import DynamicLayer

from docread.generate.dynamic import DynamicStep, crop_cache, new_cache, run_llm
from docread.generate.rows import Layout, padded_prefixes, prefix_length

ROOM = 32  # columns kept free after a layer's keys and values: a new buffer (one copy) every ROOM steps


class RoomyLayer(DynamicLayer):
    """A dynamic cache layer whose keys and values (B, heads, columns, head_dim) are the first columns of
    buffers with room after them: `update` writes new columns in place. Keys or values set from outside (rows
    dropped by `batch_select_indices`) are moved into new buffers at the next update."""

    def __init__(self):
        super().__init__()
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._view: torch.Tensor | None = None  # the keys `hold` set: other keys were set from outside

    def hold(self, keys: torch.Tensor, values: torch.Tensor, columns: int) -> None:
        """Take buffers (B, heads, >= columns, head_dim) whose first `columns` are the layer's keys and values."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self._buffers = keys, values
        self.keys, self.values = keys[:, :, :columns], values[:, :, :columns]
        self._view = self.keys

    def _room(self, new: int) -> bool:
        """Whether the keys and values are still the buffers' first columns, with room for `new` more."""
        held = self._buffers is not None and self.keys is self._view
        return held and self.keys.shape[-2] + new <= self._buffers[0].shape[-2]

    def cut(self, first: int) -> None:
        """Drop the first `first` columns (no row attends to them): a view, the room after is kept."""
        if self._room(0):
            keys, values = self._buffers
            self.hold(keys[:, :, first:], values[:, :, first:], self.keys.shape[-2] - first)
        else:  # set from outside since (rows dropped): moved at the next update
            self.keys, self.values = self.keys[:, :, first:], self.values[:, :, first:]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        if not self._room(new):
            self._move(key_states, value_states, new)
        keys, values = self._buffers
        start = self.keys.shape[-2]
        keys[:, :, start : start + new] = key_states
        values[:, :, start : start + new] = value_states
        self.hold(keys, values, start + new)
        return self.keys, self.values

    def _move(self, key_states: torch.Tensor, value_states: torch.Tensor, new: int) -> None:
        """Into new buffers with room for `new` columns and ROOM more; the keys and values so far copied."""
        if not self.is_initialized or self.keys.numel() == 0:
            self.lazy_initialization(key_states, value_states)
            keys, values = key_states[:, :, :0], value_states[:, :, :0]
        else:
            keys, values = self.keys, self.values
        length = keys.shape[-2]
        self.hold(_roomy(keys, length + new + ROOM), _roomy(values, length + new + ROOM), length)


def _roomy(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """A buffer of `columns` columns whose first ones are `tensor`'s (along dim -2)."""
    buffer = tensor.new_empty(*tensor.shape[:-2], columns, tensor.shape[-1])
    buffer[..., : tensor.shape[-2], :] = tensor
    return buffer


def _roomy_cache(language_model):
    """A dynamic cache of RoomyLayers when every layer of the model's is a plain DynamicLayer (no sliding window)."""
    cache = new_cache(language_model)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [RoomyLayer() for _ in cache.layers]
    return cache


def _stacked(batch: torch.Tensor, width: int, rows: torch.Tensor, length: int, columns: int) -> torch.Tensor:
    """(B + k, heads, columns + ROOM, head_dim): the batch's (B, heads, width, hd) and k rows' (k, heads, length,
    hd), each right-aligned at `columns`, zeros before them (masked columns must hold numbers), room after."""
    ours = batch.shape[0]
    stacked = batch.new_empty(ours + rows.shape[0], batch.shape[1], columns + ROOM, batch.shape[-1])
    stacked[:ours, :, : columns - width] = 0
    stacked[:ours, :, columns - width : columns] = batch
    stacked[ours:, :, : columns - length] = 0
    stacked[ours:, :, columns - length : columns] = rows
    return stacked


class JoiningStep(DynamicStep):
    """Steps of a batch whose rows join (`join`) and leave (`drop`) between steps, in a dynamic cache it owns.
    `self.mask` (B, columns) bool marks each row's real columns; `self.positions` (B,) is each row's next
    position; `self.padded`: whether any row has padding (then the mask goes to the model)."""

    padded = False
    _grown = 0  # steps taken since the mask and positions were last brought up to date

    def join(self, inputs_embeds: list[torch.Tensor], prefixes: list) -> torch.Tensor:
        """Prefill rows (row i: inputs_embeds[i] (1, T, D) after the cache prefixes[i], None: nothing) and add them
        to the batch as its last rows; their logits (k, V). One row is prefilled alone on its page's prefix, grown
        in place and cropped back as `answer` does, so its first token is batch 1's; rows that come together are
        prefilled together, padded as `decode_rows` prefills a batch (their pages' prefixes copied, not grown)."""
        if len(inputs_embeds) == 1:
            return self._join_alone(inputs_embeds[0], prefixes[0])
        device = inputs_embeds[0].device
        layout = Layout([prefix_length(p) for p in prefixes], [e.shape[1] for e in inputs_embeds])
        cache = new_cache(self.language_model)
        for index, (keys, values) in enumerate(padded_prefixes(prefixes, layout.prefix_width)):
            cache.update(keys, values, index)
        mask = layout.mask(layout.prefix_width + layout.prompt_width, device)
        padded = layout.padded
        positions = layout.prompt_positions(device) if padded else None
        hidden = run_llm(self.language_model, layout.embeds(inputs_embeds), cache, mask if padded else None, positions)
        logits = self.lm_head(hidden[:, -1]).float()
        self._stack([(layer.keys, layer.values) for layer in cache.layers], mask.bool(), layout.next_positions(device))
        return logits

    def _join_alone(self, inputs_embeds: torch.Tensor, prefix) -> torch.Tensor:
        before = prefix_length(prefix)
        cache = prefix if prefix is not None else new_cache(self.language_model)
        length = before + inputs_embeds.shape[1]
        device = inputs_embeds.device
        try:
            hidden = run_llm(self.language_model, inputs_embeds, cache)  # (1, T, D)
            logits = self.lm_head(hidden[:, -1]).float()
            layers = [(layer.keys[:, :, :length], layer.values[:, :, :length]) for layer in cache.layers]
            self._stack(
                layers, torch.ones(1, length, dtype=torch.bool, device=device), torch.tensor([length], device=device)
            )
        finally:  # the rows' keys and values are copied into the batch's first
            if prefix is not None:
                crop_cache(prefix, before)
        return logits

    def _stack(
        self, layers: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor, positions: torch.Tensor
    ) -> None:
        """Put k rows' keys and values (k, heads, length, hd) a layer under the batch's, right-aligned; `mask`
        (k, length) marks their real columns, `positions` (k,) their next positions."""
        if self.cache is None:
            self.cache = _roomy_cache(self.language_model)
            for index, (keys, values) in enumerate(layers):
                self.cache.update(keys, values, index)  # copied into room
            self.mask, self.positions, self.padded = mask, positions, not bool(mask.all())
            return
        self._catch_up()
        width, length = self.mask.shape[1], mask.shape[1]
        columns = max(width, length)
        stacked = []  # all built before any is set: a failure (out of memory) leaves the batch as it was
        for layer, (keys, values) in zip(self.cache.layers, layers):
            pair = (layer.keys, keys), (layer.values, values)
            stacked.append([_stacked(ours, width, theirs, length, columns) for ours, theirs in pair])
        mask = torch.cat([_left(self.mask, columns - width, -1), _left(mask, columns - length, -1)])
        positions = torch.cat([self.positions, positions])
        for layer, (keys, values) in zip(self.cache.layers, stacked):
            if isinstance(layer, RoomyLayer):
                layer.hold(keys, values, columns)
            else:
                layer.keys, layer.values = keys[:, :, :columns], values[:, :, :columns]
        self.mask, self.positions, self.padded = mask, positions, not bool(mask.all())

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after ids (B, 1); rows without padding (a row alone) step as batch 1 does (no mask)."""
        if not self.padded:  # every row's position is the cache's length, as transformers counts it (batch 1's)
            self._grown += 1  # the mask and positions catch up when a row joins or leaves
            return self.lm_head(run_llm(self.language_model, self.embed(ids), self.cache)[:, -1]).float()
        self._catch_up(1)  # the new column: real in every row
        mask = self.mask[:, None, None, :]  # what transformers builds from the padding mask, for one query
        hidden = run_llm(self.language_model, self.embed(ids), self.cache, mask, self.positions[:, None] - 1)
        return self.lm_head(hidden[:, -1]).float()

    def _catch_up(self, steps: int = 0) -> None:
        """Grow the mask by the columns stepped without it (and `steps` more), all real; positions with them."""
        grown, self._grown = self._grown + steps, 0
        if grown:
            self.mask = torch.nn.functional.pad(self.mask, (0, grown), value=True)
            self.positions = self.positions + grown

    def drop(self, keep: list[int]) -> None:
        """Keep rows `keep`; the columns before every kept row's first real one are cut."""
        if not keep:
            self.cache = self.mask = self.positions = None  # the next row to join starts a new batch
            self.padded, self._grown = False, 0
            return
        self._catch_up()
        super().drop(keep)
        first = int(self.mask.any(dim=0).long().argmax())  # the first column some row still attends to
        if first > 0:
            for layer in self.cache.layers:
                if isinstance(layer, RoomyLayer):
                    layer.cut(first)
                else:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]
        self.padded = not bool(self.mask.all())


def _left(tensor: torch.Tensor, columns: int, dim: int, value: float = 0) -> torch.Tensor:
    """`tensor` with `columns` columns of `value` put before its own along `dim` (counted from the end)."""
    if columns == 0:
        return tensor
    pad = [0, 0] * (-dim - 1) + [columns, 0]
    return torch.nn.functional.pad(tensor, pad, value=value)
