"""The static KV cache step: one cache per language model, reused, and on CUDA the one-token step compiled
to a CUDA graph. Same tokens as the dynamic step through `loop.decode_tokens`; an encoded page's prefix
is copied in and left as it was, so the caller's `crop_cache` has nothing to undo. On CUDA the first
call compiles (tens of seconds); later calls replay the graph.
"""

from __future__ import annotations

import warnings

import torch

from docread.generate.dynamic import cache_argument

COMPILE_MODE = "reduce-overhead"  # CUDA graphs: one launch a token instead of a dozen kernels a layer
CACHE_STEP = 256  # an eager (uncompiled) cache grows in steps of this many positions


class StaticStep:
    """Steps in a static cache it owns, one sequence at a time, for one language model.

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
        self._cache_kw = cache_argument(type(language_model))  # resolved here: no inspect() under dynamo
        self._step = (
            torch.compile(self._eager_step, mode=COMPILE_MODE, dynamic=False) if self.compiled else self._eager_step
        )

    # -- the static cache -----------------------------------------------------------------------
    def static_cache(self, needed: int):
        """The StaticCache, able to hold `needed` positions (made or grown when it must)."""
        from transformers import StaticCache

        size = self.max_cache_len or -(-needed // CACHE_STEP) * CACHE_STEP  # eager: rounded up
        if needed > size:
            raise ValueError(
                f"the sequence needs {needed} positions, the static cache holds {size}: "
                f"build StaticStep(max_cache_len=...) larger, or lower max_new_tokens"
            )
        if self.cache is None or self._cache_len < needed:
            self.cache, self._cache_len = StaticCache(config=self.language_model.config, max_cache_len=size), size
        return self.cache

    def load_prefix(self, prefix, static) -> None:
        """Make `static` hold exactly what `prefix` (any transformers cache, or None) holds."""
        for layer in static.layers:
            layer.cumulative_length.zero_()  # stale keys beyond the length are masked, then overwritten
        length = 0 if prefix is None else int(prefix.get_seq_length())
        if length == 0:
            return
        for source, target in zip(prefix.layers, static.layers):  # keys (1, heads, T, head_dim)
            if not target.is_initialized:
                target.lazy_initialization(source.keys, source.values)
            target.keys[:, :, :length].copy_(source.keys[:, :, :length])  # a static source is longer than it holds
            target.values[:, :, :length].copy_(source.values[:, :, :length])
            target.cumulative_length.fill_(length)

    def release(self) -> None:
        """Free the static cache (it is made again on the next call; compiled, the graph is re-recorded)."""
        self.cache = None

    # -- the step -------------------------------------------------------------------------------
    def prefill(self, inputs_embeds: torch.Tensor, *, prefix, room: int) -> torch.Tensor:
        """Logits (1, V) after what `prefix` holds and inputs_embeds (1, T, D), `room` more positions kept free."""
        prefix_len = 0 if prefix is None else int(prefix.get_seq_length())
        static = self.static_cache(prefix_len + inputs_embeds.shape[1] + room)
        if prefix is not static:
            self.load_prefix(prefix, static)
        hidden = self.language_model(
            inputs_embeds=inputs_embeds, use_cache=True, **{self._cache_kw: static}
        ).last_hidden_state  # (1, T, D)
        return self.lm_head(hidden[:, -1]).float()

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (1, V) after ids (1, 1), compiled when it can be."""
        if not self.compiled:
            return self._step(ids)
        torch.compiler.cudagraph_mark_step_begin()
        try:
            return self._step(ids).clone()  # the graph's output buffer is reused by the next replay
        except torch._dynamo.exc.TorchDynamoException as e:  # raised while tracing: nothing ran yet
            warnings.warn(
                f"torch.compile failed ({type(e).__name__}); decoding eagerly in the static cache", stacklevel=2
            )
            self.compiled, self._step = False, self._eager_step
            return self._step(ids)

    def _eager_step(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (1, V) of the token after ids (1, 1), appended to the static cache."""
        hidden = self.language_model(
            inputs_embeds=self.embed(ids), use_cache=True, **{self._cache_kw: self.cache}
        ).last_hidden_state  # (1, 1, D)
        return self.lm_head(hidden[:, -1]).float()


def static_step_for(language_model, lm_head) -> StaticStep:
    """The default StaticStep of a language model, made once and kept on the model."""
    step = getattr(language_model, "_docread_static_step", None)
    if step is None or step.lm_head is not lm_head:
        step = StaticStep(language_model, lm_head)
        language_model.__dict__["_docread_static_step"] = step  # not a submodule: never moved or saved
    return step
