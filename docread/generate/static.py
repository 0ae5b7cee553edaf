"""The fast decode path: a static KV cache and, on CUDA, the one-token step compiled to a CUDA graph.

`decode_tokens` takes the arguments of `docread.generate.decode.decode_tokens` and yields the same greedy
tokens. It decodes in a static cache of its own (one per language model, reused): an encoded page's
prefix passed as `cache=` is copied in and left as it was, so the caller's `crop_cache` has nothing
to undo. On CUDA the first call compiles (tens of seconds); later calls replay the graph.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator

import torch

from docread.generate.decode import DecodeStats, _cache_argument, _sync, sample_tokens

COMPILE_MODE = "reduce-overhead"  # CUDA graphs: one launch a token instead of a dozen kernels a layer
CACHE_STEP = 256  # an eager (uncompiled) cache grows in steps of this many positions


class FastDecoder:
    """Decodes one sequence at a time for one language model, in a static cache it owns.

    compile: None = on CUDA only (inductor on CPU takes minutes to build and gains little there).
    max_cache_len: positions of the static cache. Compiled, it is fixed (the model's context by
    default: a new size means a new graph); eager, it grows to what each call needs.
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
        self._cache_kw = _cache_argument(type(language_model))  # resolved here: no inspect() under dynamo
        self._step = (
            torch.compile(self._eager_step, mode=COMPILE_MODE, dynamic=False) if self.compiled else self._eager_step
        )

    # -- the static cache -----------------------------------------------------------------------
    def static_cache(self, needed: int):
        """The decoder's StaticCache, able to hold `needed` positions (made or grown when it must)."""
        from transformers import StaticCache

        size = self.max_cache_len or -(-needed // CACHE_STEP) * CACHE_STEP  # eager: rounded up
        if needed > size:
            raise ValueError(
                f"the sequence needs {needed} positions, the static cache holds {size}: "
                f"build FastDecoder(max_cache_len=...) larger, or lower max_new_tokens"
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

    # -- one token ------------------------------------------------------------------------------
    def _eager_step(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (1, V) of the token after ids (1, 1), appended to the static cache."""
        hidden = self.language_model(
            inputs_embeds=self.embed(ids), use_cache=True, **{self._cache_kw: self.cache}
        ).last_hidden_state  # (1, 1, D)
        return self.lm_head(hidden[:, -1]).float()

    def _next_logits(self, token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], device=self.device)  # (1, 1)
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

    # -- a whole answer -------------------------------------------------------------------------
    @torch.inference_mode()
    def decode_tokens(
        self,
        inputs_embeds: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_ids: Iterable[int],
        temperature: float = 0.0,
        seed: int | None = None,
        stats: DecodeStats | None = None,
        cache=None,
    ) -> Iterator[tuple[int, float]]:
        """As `docread.generate.decode.decode_tokens`, after inputs_embeds (1, T, D) and what `cache` holds."""
        stats = stats if stats is not None else DecodeStats()
        eos = set(eos_token_ids)
        device = inputs_embeds.device
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None and temperature > 0 else None
        prefix_len = 0 if cache is None else int(cache.get_seq_length())
        static = self.static_cache(prefix_len + inputs_embeds.shape[1] + max_new_tokens)

        start = time.perf_counter()
        if cache is not static:
            self.load_prefix(cache, static)
        hidden = self.language_model(
            inputs_embeds=inputs_embeds, use_cache=True, **{self._cache_kw: static}
        ).last_hidden_state  # (1, T, D)
        logits = self.lm_head(hidden[:, -1]).float()  # (1, V)
        _sync(device)
        stats.prefill_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        yield from sample_tokens(
            logits,
            self._next_logits,
            max_new_tokens=max_new_tokens,
            eos=eos,
            temperature=temperature,
            generator=generator,
            stats=stats,
        )
        _sync(device)
        stats.decode_ms = (time.perf_counter() - start) * 1000


def decoder_for(language_model, lm_head) -> FastDecoder:
    """The default FastDecoder of a language model, made once and kept on the model."""
    decoder = getattr(language_model, "_docread_fast_decoder", None)
    if decoder is None or decoder.lm_head is not lm_head:
        decoder = FastDecoder(language_model, lm_head)
        language_model.__dict__["_docread_fast_decoder"] = decoder  # not a submodule: never moved or saved
    return decoder


def decode_tokens(
    language_model,
    lm_head,
    inputs_embeds: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_ids: Iterable[int],
    temperature: float = 0.0,
    seed: int | None = None,
    stats: DecodeStats | None = None,
    cache=None,
) -> Iterator[tuple[int, float]]:
    """Drop-in for `docread.generate.decode.decode_tokens` (same arguments, same greedy tokens), faster.

    `cache` (an encoded page's prefix) is read, never changed. Extra memory: a static cache of
    the model's context (Vicuna-7B, fp16: 0.5 MiB a position, 2 GiB at 4096) when compiled.
    """
    return decoder_for(language_model, lm_head).decode_tokens(
        inputs_embeds,
        max_new_tokens=max_new_tokens,
        eos_token_ids=eos_token_ids,
        temperature=temperature,
        seed=seed,
        stats=stats,
        cache=cache,
    )
