"""Several sequences as rows of one batch. Each row's prompt continues its own KV prefix; rows are
left-padded twice (before the prefix, before the prompt) so every row's last prompt token sits in one
column, and a padding mask and per-row positions keep each row's attention and RoPE what it is alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def prefix_length(prefix) -> int:
    """Positions a transformers cache holds (0 for None)."""
    return 0 if prefix is None else int(prefix.get_seq_length())


@dataclass
class Layout:
    """Where each row's tokens sit in the batch's columns: [pad][prefix][pad][prompt], then new tokens."""

    prefix_lens: list[int]
    prompt_lens: list[int]

    @property
    def rows(self) -> int:
        return len(self.prompt_lens)

    @property
    def prefix_width(self) -> int:
        return max(self.prefix_lens, default=0)

    @property
    def prompt_width(self) -> int:
        return max(self.prompt_lens, default=0)

    @property
    def padded(self) -> bool:
        """Whether any row has padding (if not, no mask and the default positions: batch 1's numerics)."""
        return len(set(self.prefix_lens)) > 1 or len(set(self.prompt_lens)) > 1

    def embeds(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """(B, S, D) from each row's (1, T, D), zeros on the left."""
        if len(rows) == 1:
            return rows[0]
        width = self.prompt_width
        return torch.cat([torch.nn.functional.pad(r, (0, 0, width - r.shape[1], 0)) for r in rows])

    def mask(self, columns: int, device) -> torch.Tensor:
        """(B, columns) long: 1 where a row has a real token (every column after the prompt counts as real)."""
        mask = torch.ones(self.rows, columns, dtype=torch.long, device=device)
        p, s = self.prefix_width, self.prompt_width
        for i, (prefix, prompt) in enumerate(zip(self.prefix_lens, self.prompt_lens)):
            mask[i, : p - prefix] = 0
            mask[i, p : p + s - prompt] = 0
        return mask

    def prompt_positions(self, device) -> torch.Tensor:
        """(B, S) the RoPE position of each prompt column: a row's prompt goes on from its own prefix."""
        width = self.prompt_width
        starts = torch.tensor([p + t - width for p, t in zip(self.prefix_lens, self.prompt_lens)], device=device)
        return (starts[:, None] + torch.arange(width, device=device)).clamp(min=0)

    def next_positions(self, device) -> torch.Tensor:
        """(B,) the position of each row's first new token."""
        return torch.tensor([p + t for p, t in zip(self.prefix_lens, self.prompt_lens)], device=device)


def padded_prefixes(prefixes: list, width: int):
    """Per layer, (keys, values) of shape (B, heads, width, head_dim): each row's prefix right-aligned,
    zeros before it (rows without a prefix are all zeros). Empty when no row has a prefix."""
    template = next((p for p in prefixes if prefix_length(p) > 0), None)
    if template is None:
        return []
    layers = []
    for index, layer in enumerate(template.layers):
        keys = layer.keys.new_zeros(len(prefixes), *layer.keys.shape[1:2], width, layer.keys.shape[-1])
        values = layer.values.new_zeros(len(prefixes), *layer.values.shape[1:2], width, layer.values.shape[-1])
        for row, prefix in enumerate(prefixes):
            length = prefix_length(prefix)
            if length:  # a static source is longer than it holds: take what it holds
                keys[row, :, width - length :] = prefix.layers[index].keys[0, :, :length]
                values[row, :, width - length :] = prefix.layers[index].values[0, :, :length]
        layers.append((keys, values))
    return layers
