"""The one decode loop: prefill, then pick a token, yield it, step, until EOS or max_new_tokens.

Sampling, EOS, stats and timing live here once, for B rows decoded together (`decode_rows`; one answer
is one row: `decode_tokens`; rows that join a running batch between steps: `decode_joining`, a server's
continuous batching); a `Step` says how the next logits come out of a KV cache (`dynamic.DynamicStep`,
`static.StaticStep`, `joining.JoiningStep`) and an optional `constrain` masks a row's logits per step
(and, with a `finish(tokens)` method, hears when the row ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from docread.generate.rows import Layout, prefix_length

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

    def prefill(self, inputs_embeds: torch.Tensor, *, prefixes: list, room: int, layout: Layout) -> torch.Tensor:
        """Logits (B, V) of the token after inputs_embeds (B, T, D) laid out as `layout` says; row i
        continues what the cache `prefixes[i]` holds (None: nothing); `room` more positions will follow."""

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) of the token after ids (B, 1), which are appended to the cache."""

    def drop(self, keep: list[int]) -> None:
        """Go on with rows `keep` (indices among the current rows) only."""


def step_for(language_model, lm_head, *, static: bool = False) -> Step:
    """A step for one answer: a fresh dynamic cache, or the model's (reused) static one."""
    from docread.generate.dynamic import DynamicStep
    from docread.generate.static import static_step_for

    return static_step_for(language_model, lm_head) if static else DynamicStep(language_model, lm_head)


def sync(device: torch.device) -> None:
    """Wait for the device, so that a timer reads the work done and not the work queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Row:
    """One sequence of a batch: its prompt after its own prefix, when it stops, how it samples."""

    inputs_embeds: torch.Tensor  # (1, T, D)
    max_new_tokens: int
    prefix: object = None  # a transformers cache the prompt continues (an encoded page's)
    temperature: float = 0.0
    seed: int | None = None
    constrain: Constraint | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    cancelled: bool = False  # set from outside (its reader left): the row leaves the batch at the next step

    def generator(self) -> torch.Generator | None:
        """The row's own generator, seeded as batch 1 seeds it: its draws do not depend on its company."""
        if self.seed is None or self.temperature <= 0:
            return None
        return torch.Generator(device=self.inputs_embeds.device).manual_seed(self.seed)


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Token ids (1,) from logits (1, V): the argmax at temperature 0, else a draw from softmax(logits / t)."""
    if temperature > 0:
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
    return logits.argmax(dim=-1)


def choose(
    row: Row, logits: torch.Tensor, generator: torch.Generator | None, eos: set[int], picked: tuple | None = None
) -> int | None:
    """The row's next token from its logits (1, V), recorded in its stats; None at an EOS token. `picked`: its
    (token, log-prob), already taken from the batch's logits (`greedy_picks`)."""
    if picked is None:
        if row.constrain is not None:
            logits = row.constrain(logits, row.stats.tokens)
        token = int(pick(logits, row.temperature, generator))
    else:
        token = picked[0]
    if token in eos:
        row.stats.stopped_by = "eos"
        return None
    row.stats.tokens.append(token)
    row.stats.logprobs.append(float(torch.log_softmax(logits, dim=-1)[0, token]) if picked is None else picked[1])
    return token


def greedy_picks(rows: list[Row], logits: torch.Tensor) -> list[tuple[int, float] | None]:
    """Each greedy row's (token, log-prob) without a constraint, from one argmax and one log_softmax over the
    batch's logits (B, V) (each row's are what it would get alone: both work row by row); None for a row that
    samples or is constrained, and for every row when fewer than two are greedy (one row: no batch to share)."""
    plain = [j for j, row in enumerate(rows) if row.constrain is None and row.temperature <= 0]
    if len(plain) < 2:
        return [None] * len(rows)
    taken = logits if len(plain) == len(rows) else logits[torch.tensor(plain, device=logits.device)]
    tokens = taken.argmax(dim=-1)
    logprobs = torch.log_softmax(taken, dim=-1).gather(1, tokens[:, None])[:, 0]
    picks: list[tuple[int, float] | None] = [None] * len(rows)
    for j, token, logprob in zip(plain, tokens.tolist(), logprobs.tolist()):
        picks[j] = (token, logprob)
    return picks


@torch.inference_mode()
def decode_rows(
    step: Step, rows: list[Row], *, eos_token_ids: Iterable[int]
) -> Iterator[tuple[int, int | None, float | None]]:
    """Yield (row index, token id, log-prob) as the rows decode together, prefilled in one batch, and
    (row index, None, None) when a row ends (its stats are complete then).

    A row stops after an EOS token (not yielded) or its max_new_tokens, and leaves the batch; the
    others go on. Each row samples with its own seeded generator and its own `constrain`; log-probs
    are of the logits after it. Each row's stats get the batch's prefill time and its own decode time.
    """
    if not rows:
        return
    eos = set(eos_token_ids)
    device = rows[0].inputs_embeds.device
    generators = [row.generator() for row in rows]
    layout = Layout([prefix_length(r.prefix) for r in rows], [r.inputs_embeds.shape[1] for r in rows])

    start = time.perf_counter()
    prefixes = [r.prefix for r in rows]
    room = max(r.max_new_tokens for r in rows)
    logits = step.prefill(layout.embeds([r.inputs_embeds for r in rows]), prefixes=prefixes, room=room, layout=layout)
    sync(device)
    for row in rows:
        row.stats.prefill_ms, row.stats.stopped_by = (time.perf_counter() - start) * 1000, "length"

    start = time.perf_counter()
    live = list(range(len(rows)))  # the rows still in the batch, in the step's order
    while live:
        ids, keep = [], []
        picks = greedy_picks([rows[i] for i in live], logits)
        for j, i in enumerate(live):
            token, going = advance(rows[i], logits[j : j + 1], generators[i], eos, start, picks[j])  # logits (1, V)
            if token is not None:
                yield i, token, rows[i].stats.logprobs[-1]
            if going:
                ids.append(token)
                keep.append(j)
            else:
                yield i, None, None  # the row's end
        if not keep:
            return
        if len(keep) < len(live):
            step.drop(keep)
        live = [live[j] for j in keep]
        logits = step(torch.tensor(ids, device=device)[:, None])  # ids (B, 1) -> logits (B, V)


def advance(
    row: Row, logits: torch.Tensor, generator: torch.Generator | None, eos: set[int], started: float, picked=None
) -> tuple[int | None, bool]:
    """The row's next token from its logits (1, V) (None: it ended without one) and whether it goes on; a row
    that ends gets its decode time (since `started`) and its constraint's `finish`. `picked`: see `choose`."""
    stats = row.stats
    token = choose(row, logits, generator, eos, picked) if len(stats.tokens) < row.max_new_tokens else None
    if token is not None and len(stats.tokens) < row.max_new_tokens:
        return token, True
    sync(logits.device)
    stats.decode_ms = (time.perf_counter() - started) * 1000
    if row.constrain is not None and hasattr(row.constrain, "finish"):
        row.constrain.finish(stats.tokens)  # e.g. a grammar learns whether it completed
    return token, False


class JoinStep(Step, Protocol):
    def join(self, inputs_embeds: list[torch.Tensor], prefixes: list) -> torch.Tensor:
        """Prefill rows (each (1, T, D) after its own prefix; one alone as batch 1 prefills it), add them to the
        batch as its last rows; their logits (k, V). On failure the batch is as it was."""


# (free slots, whether the batch is empty) -> the rows that join now; [] with an empty batch ends the decode
Arrivals = Callable[[int, bool], list[Row]]


@torch.inference_mode()
def decode_joining(
    step: JoinStep,
    arrivals: Arrivals,
    *,
    eos_token_ids: Iterable[int],
    max_rows: int,
    failed: Callable[[Row, Exception], None] | None = None,
) -> Iterator[tuple[Row, int | None, float | None]]:
    """Continuous batching: yield (row, token id, log-prob) and (row, None, None) at a row's end, as
    `decode_rows` does, for rows that join the batch between steps (up to `max_rows` at a time).

    Before each step `arrivals(free, empty)` names the rows that join now; they are prefilled on their own
    prefixes (one alone exactly as batch 1 prefills it, several together as `decode_rows` prefills a batch),
    then their keys and values join the batch's (`step.join`). When that fails, each is tried alone: a row
    whose prefill fails goes to `failed(row, error)` and the batch goes on without it (without `failed`, the
    error ends the decode). A row sets `cancelled` to leave at the next step (set during
    `arrivals` too), without an end event. Ends when the batch is empty and `arrivals` brings nothing.
    """
    eos = set(eos_token_ids)
    live: list[Row] = []
    generators: dict[int, torch.Generator | None] = {}
    starts: dict[int, float] = {}
    logits = None  # (len(live), V)
    while True:
        live, logits = _leave(step, live, logits, generators, starts)
        joining = arrivals(max_rows - len(live), not live)
        live, logits = _leave(step, live, logits, generators, starts)  # rows cancelled while `arrivals` ran
        start = time.perf_counter()
        joined, fresh = _join(step, [row for row in joining if not row.cancelled], failed)  # (k, V)
        if fresh:
            sync(joined.device)
            for row in fresh:
                row.stats.prefill_ms, row.stats.stopped_by = (time.perf_counter() - start) * 1000, "length"
                generators[id(row)], starts[id(row)] = row.generator(), time.perf_counter()
            logits = joined if logits is None or not live else torch.cat([logits, joined])
            live += fresh
        if not live:
            if joining:
                continue  # every newcomer failed or left: ask again (an empty batch waits there)
            return
        ids, keep = [], []
        picks = greedy_picks(live, logits)
        for j, row in enumerate(live):
            token = None
            if not row.cancelled:
                token, going = advance(row, logits[j : j + 1], generators[id(row)], eos, starts[id(row)], picks[j])
                if token is not None:
                    yield row, token, row.stats.logprobs[-1]
                if going:
                    ids.append(token)
                    keep.append(j)
                    continue
            del generators[id(row)], starts[id(row)]
            if not row.cancelled:
                yield row, None, None  # the row's end
        if len(keep) < len(live):
            step.drop(keep)
        live = [live[j] for j in keep]
        logits = step(torch.tensor(ids, device=logits.device)[:, None]) if live else None  # (B, 1) -> (B, V)


def _join(step: JoinStep, rows: list[Row], failed) -> tuple[torch.Tensor | None, list[Row]]:
    """The logits (k, V) of the rows that joined the batch, and those rows: prefilled together; when that fails,
    each alone, a row that fails alone going to `failed(row, error)` (without `failed`, the error is raised)."""
    if not rows:
        return None, []
    try:
        return step.join([r.inputs_embeds for r in rows], [r.prefix for r in rows]), rows
    except Exception as e:  # out of memory, or a bug: each row finds out alone whose it is
        if failed is None:
            raise
        if len(rows) == 1:
            failed(rows[0], e)
            return None, []
    joined, fresh = [], []
    for row in rows:
        try:
            joined.append(step.join([row.inputs_embeds], [row.prefix]))
            fresh.append(row)
        except Exception as e:  # noqa: BLE001  this row's own error when the caller takes it
            failed(row, e)
    return (torch.cat(joined) if joined else None), fresh


def _leave(step: JoinStep, live: list[Row], logits, *tables: dict) -> tuple[list[Row], torch.Tensor | None]:
    """The batch without its cancelled rows (dropped from the step's cache and `tables` too)."""
    if not any(row.cancelled for row in live):
        return live, logits
    keep = [j for j, row in enumerate(live) if not row.cancelled]
    for row in live:
        if row.cancelled:
            for table in tables:
                table.pop(id(row), None)
    step.drop(keep)
    return [live[j] for j in keep], logits[keep]


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
    """Yield (token id, log-prob) for up to max_new_tokens tokens after inputs_embeds (1, T, D): one row.

    With `cache`, inputs_embeds continue what it holds (an encoded page's prefix): a dynamic step
    grows it (the caller crops it back), a static step copies it. Stops after an EOS token (not
    yielded). temperature 0 = greedy; `seed` makes sampling repeatable. Log-probs are of the
    logits after `constrain`.
    """
    stats = stats if stats is not None else DecodeStats()
    row = Row(inputs_embeds, max_new_tokens, cache, temperature, seed, constrain, stats)
    for _, token, logprob in decode_rows(step, [row], eos_token_ids=eos_token_ids):
        if token is not None:
            yield token, logprob
