"""How many sequences decode at once: the KV bytes one sequence needs (from the model's config), the batch
that fits free memory (`auto`), and the loop that halves a batch on out-of-memory and retries the same
work, never losing or repeating an item. `ask` and `batch` (local and Ray) decode through it; a benchmark
or a server sizes its batches with the same `plan_batch`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from docread.errors import UsageError

AUTO = "auto"
DEFAULT_MAX_BATCH = 8  # `serve --max-batch`: requests served at once (1: one at a time, in arrival order)
CPU_CAP = 16  # sequences at once on a CPU: past this a step's matmuls are compute-bound, no cheaper per token
CUDA_CAP = 64  # on a GPU: past this the batch's prefill of 64 pages' prompts dominates the decode it saves
HEADROOM = 0.5  # share of free memory the batch's KV copies may take: the pages' own prefix caches beside
# them take about as much again; activations, logits and allocator slack the rest
LARGEST_PAGE = 8000  # px a side: a page this large plans the most tiles the preset allows (the longest prefix)


def parse_batch_size(value: str | int) -> int | str:
    """`auto`, or a positive whole number of sequences; anything else is one line naming the choices."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise UsageError(f"--batch-size {value}: give auto or a whole number of sequences from 1 (e.g. --batch-size 8)")


def kv_bytes_per_token(text_config, dtype_bytes: int) -> int:
    """Bytes of keys and values one token keeps in the cache: layers x 2 x kv_heads x head_dim x dtype bytes."""
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return text_config.num_hidden_layers * 2 * kv_heads * head_dim * dtype_bytes


@dataclass(frozen=True)
class BatchPlan:
    """The decode batch a run starts with, and what it was sized from."""

    size: int  # sequences decoded at once (halved, for the rest of the run, by an out-of-memory)
    kv_per_sequence: int  # bytes: prefix + max_new_tokens positions of keys and values
    free: int  # bytes free on the device when planned (RAM on a CPU)
    device: str  # "cuda" or "cpu"
    requested: int | str = AUTO  # the --batch-size asked for

    def line(self) -> str:
        how = "auto" if self.requested == AUTO else "as asked"
        return (
            f"batch {self.size} ({how}), KV per sequence {self.kv_per_sequence / 2**20:.1f} MiB, "
            f"free {self.free / 2**30:.1f} GiB ({self.device})"
        )


def plan_batch(
    text_config,
    *,
    dtype_bytes: int,
    sequence_tokens: int,
    free: int,
    device: str = "cpu",
    requested: int | str = AUTO,
) -> BatchPlan:
    """The batch for `requested` (a number: that; `auto`: as many sequences of `sequence_tokens` positions as
    HEADROOM of `free` bytes holds, at least 1, at most CPU_CAP or CUDA_CAP)."""
    per_sequence = kv_bytes_per_token(text_config, dtype_bytes) * max(1, sequence_tokens)
    if requested != AUTO:
        return BatchPlan(int(requested), per_sequence, free, device, requested)
    cap = CUDA_CAP if device == "cuda" else CPU_CAP
    size = max(1, min(cap, int(free * HEADROOM) // per_sequence))
    return BatchPlan(size, per_sequence, free, device, requested)


def free_memory(device) -> int:
    """Bytes free on `device` (a torch.device or its type): the CUDA allocator's view, or available RAM."""
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def reader_plan(reader, max_new_tokens: int, requested: int | str = AUTO) -> BatchPlan:
    """The batch plan of a loaded DocReader: its text model's KV layout and dtype, its longest page prefix (the
    preset's most tiles) plus `max_new_tokens`, within its context; free memory on its device."""
    prefix = reader.context - max_new_tokens
    try:  # the most tiles the preset plans, and the longest prompt text around them
        plan, ids = reader.plan(LARGEST_PAGE, LARGEST_PAGE, "?", max_new_tokens=max_new_tokens)
        prefix = min(prefix, plan.tokens.image_tokens + len(ids))
    except Exception:  # noqa: BLE001  a view that cannot plan such a page: the context bounds it
        pass
    device = reader.base.device
    return plan_batch(
        reader.base.model.config.text_config,
        dtype_bytes=reader.base.dtype.itemsize,
        sequence_tokens=min(reader.context, prefix + max_new_tokens),
        free=free_memory(device),
        device=getattr(device, "type", str(device)),
        requested=requested,
    )


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA out-of-memory: torch's own error, or a RuntimeError saying so (older torch, cuBLAS)."""
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def halving_warning(size: int) -> str:
    return f"out of GPU memory: decoding {size} sequence{'s' * (size > 1)} at a time from now on"


def release_memory() -> None:
    """Give the CUDA allocator's cached blocks back after an out-of-memory."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Halving:
    """Decodes work in batches of up to `size`. A batch that runs out of memory is retried at half its size
    (kept for the rest of the run): its finished items stay finished, its unfinished ones go back first, in
    order, so no item is lost or done twice. An item alone that runs out goes to `alone(item, error)`.
    `on_halve(size)` hears of each halving (a surface's warning)."""

    def __init__(self, size: int, on_halve: Callable[[int], None] = lambda size: None):
        if size < 1:
            raise ValueError(f"a batch holds at least one sequence, got {size}")
        self.size, self.on_halve = size, on_halve
        self.halvings = 0

    def run(
        self,
        items: Sequence,
        decode: Callable[[list], Iterator[tuple[int, Any]]],
        alone: Callable[[Any, BaseException], Any],
    ) -> Iterator[tuple[Any, Any]]:
        """(item, result) for every item: `decode(batch)` yields (index in batch, result) as each finishes."""
        queue = list(items)
        while queue:
            batch, queue = queue[: self.size], queue[self.size :]
            done: set[int] = set()
            try:
                for i, result in decode(batch):
                    if i not in done:
                        done.add(i)
                        yield batch[i], result
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                release_memory()
                left = [item for i, item in enumerate(batch) if i not in done]
                if len(batch) == 1:
                    yield from ((item, alone(item, e)) for item in left)
                    continue
                self.size = max(1, len(batch) // 2)
                self.halvings += 1
                self.on_halve(self.size)
                queue = left + queue
