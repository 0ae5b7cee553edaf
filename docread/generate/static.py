"""The static KV cache step: one cache per language model, reused, and on CUDA the one-token step compiled
to a CUDA graph. Same tokens as the dynamic step through `loop.decode_tokens`; an encoded page's prefix
is copied in and left as it was, so the caller's `crop_cache` has nothing to undo. Rows batch: each
row's prefix is copied in right-aligned, and a finished row stays (fed a dummy token) so the shape, and
the graph, stay one. On CUDA the first call of a batch size compiles (tens of seconds); later calls replay.
"""

from __future__ import annotations

import warnings

import torch

from docread.generate.dynamic import cache_argument
from docread.generate.rows import Layout, padded_prefixes

COMPILE_MODE = "reduce-overhead"  # CUDA graphs: one launch a token instead of a dozen kernels a layer
CACHE_STEP = 256  # an eager (uncompiled) cache grows in steps of this many positions


class StaticStep:
    """Steps in a static cache it owns, for one language model: one batch of rows at a time.

    compile: None = on CUDA only (inductor on CPU takes minutes to build and gains little there).
    max_cache_len: positions of the static cache. Compiled, it is fixed (the model's context by
    default: a new size means a new graph); eager, it grows to what each answer needs.
    Extra memory when compiled: a cache of the model's context (Vicuna-7B, fp16: 0.5 MiB a
    position, 2 GiB at 4096).
    """

    def __init__(self, language_model, lm_head, *, compile: bool | None = None, max_cache_len: int | None = None):
        self.language_model = language_model
        self.lm_head = lm_head
        self.embed = language_model.get_input_embeddings()
        self.device = self.embed.weight.device
        self.compiled = self.device.type == "cuda" if compile is None else compile
        self.context = language_model.config.max_position_embeddings
        self.max_cache_len = max_cache_len or (self.context if self.compiled else None)
        self.cache = None  # transformers StaticCache, made on first use
        self._rows, self.live, self.mask, self.positions = 1, [0], None, None
        self._cache_kw = cache_argument(type(language_model))  # resolved here: no inspect() under dynamo
        self._step = (
            torch.compile(self._eager_step, mode=COMPILE_MODE, dynamic=False) if self.compiled else self._eager_step
        )

    # -- the static cache -----------------------------------------------------------------------
    def static_cache(self, needed: int, rows: int = 1):
        """The StaticCache for `rows` rows, able to hold `needed` positions (made or grown when it must)."""
        from transformers import StaticCache

        size = self.max_cache_len or -(-needed // CACHE_STEP) * CACHE_STEP  # eager: rounded up
        if needed > size:
            raise ValueError(
                f"the sequence needs {needed} positions, the static cache holds {size}: "
                f"build StaticStep(max_cache_len=...) larger, or lower max_new_tokens"
            )
        if self.cache is None or self._cache_len < needed or self._rows != rows:
            self.cache = StaticCache(config=self.language_model.config, max_cache_len=size)
            self._cache_len, self._rows = size, rows
        return self.cache

    def load_prefixes(self, prefixes: list, static, width: int) -> None:
        """Make `static` hold what `prefixes` (transformers caches or None, one a row) hold, each row's
        right-aligned at `width` (stale keys before it are masked, then overwritten)."""
        for layer in static.layers:
            layer.cumulative_length.zero_()
        for target, (keys, values) in zip(static.layers, padded_prefixes(prefixes, width)):  # (B, heads, T, hd)
            if not target.is_initialized:
                target.lazy_initialization(keys, values)
            target.keys[:, :, :width].copy_(keys)
            target.values[:, :, :width].copy_(values)
            target.cumulative_length.fill_(width)

    def release(self) -> None:
        """Free the static cache (it is made again on the next call; compiled, the graph is re-recorded)."""
        self.cache = None

    # -- the step -------------------------------------------------------------------------------
    def prefill(self, inputs_embeds: torch.Tensor, *, prefixes: list, room: int, layout: Layout) -> torch.Tensor:
        """Logits (B, V) after each row's prefix and inputs_embeds (B, T, D), `room` more positions kept free."""
        rows, device = inputs_embeds.shape[0], inputs_embeds.device
        width = layout.prefix_width
        static = self.static_cache(width + inputs_embeds.shape[1] + room, rows)
        if not (len(prefixes) == 1 and prefixes[0] is static):
            self.load_prefixes(prefixes, static, width)
        self.live = list(range(rows))  # finished rows stay in the cache, fed a dummy token: one shape
        self.mask = self.positions = prompt_positions = None
        if layout.padded:  # the mask spans the whole cache (a fixed shape); columns to come count as real
            self.mask = layout.mask(self._cache_len, device)
            prompt_positions, self.positions = layout.prompt_positions(device), layout.next_positions(device)
        hidden = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=self.mask,
            position_ids=prompt_positions,
            use_cache=True,
            **{self._cache_kw: static},
        ).last_hidden_state  # (B, T, D)
        return self.lm_head(hidden[:, -1]).float()

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after ids (B, 1) of the live rows, compiled when it can be."""
        if len(self.live) != self._rows:
            full = ids.new_zeros(self._rows, 1)
            full[self.live] = ids
            ids = full
        positions = None
        if self.positions is not None:
            positions, self.positions = self.positions[:, None], self.positions + 1
        logits = self._run(ids, self.mask, positions)
        return logits if len(self.live) == self._rows else logits[self.live]

    def drop(self, keep: list[int]) -> None:
        """Go on with rows `keep`; the others stay in the cache (masked out of nothing: rows never mix)."""
        self.live = [self.live[j] for j in keep]

    def _run(self, ids, mask, positions) -> torch.Tensor:
        if not self.compiled:
            return self._step(ids, mask, positions)
        torch.compiler.cudagraph_mark_step_begin()
        try:
            return self._step(ids, mask, positions).clone()  # the graph's output buffer is reused by the next replay
        except torch._dynamo.exc.TorchDynamoException as e:  # raised while tracing: nothing ran yet
            warnings.warn(
                f"torch.compile failed ({type(e).__name__}); decoding eagerly in the static cache", stacklevel=2
            )
            self.compiled, self._step = False, self._eager_step
            return self._step(ids, mask, positions)

    def _eager_step(self, ids: torch.Tensor, mask=None, positions=None) -> torch.Tensor:
        """Logits (B, V) of the token after ids (B, 1), appended to the static cache."""
        hidden = self.language_model(
            inputs_embeds=self.embed(ids),
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kw: self.cache},
        ).last_hidden_state  # (B, 1, D)
        return self.lm_head(hidden[:, -1]).float()


def static_step_for(language_model, lm_head) -> StaticStep:
    """The default StaticStep of a language model, made once and kept on the model."""
    step = getattr(language_model, "_docread_static_step", None)
    if step is None or step.lm_head is not lm_head:
        step = StaticStep(language_model, lm_head)
        language_model.__dict__["_docread_static_step"] = step  # not a submodule: never moved or saved
    return step
