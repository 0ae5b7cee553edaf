"""What the reader holds: the view a page is read in, a page to encode, an encoded page whose KV prefix
every question about it reuses, and a question about one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docread.errors import UsageError
from docread.settings import DEFAULT_MAX_NEW_TOKENS, View

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from docread.views.native import NativePlan
    from docread.views.processor import PagePlan


@dataclass
class PageSource:
    """A page to encode: `render(w, h)` returns it as an RGB image of exactly w x h pixels."""

    render: Callable[[int, int], Image.Image]
    width: int  # nominal size the slicing is planned from
    height: int
    file: str = "<image>"
    page: int = 1


@dataclass
class EncodedPage:
    """A page rendered and encoded once; every question about it reuses that, and the LLM's keys
    and values for the prompt up to the end of the image (the part no question changes).

    `cache` is prefilled on first use; each answer continues it and crops it back to `prefix_len`.
    `release()` frees it once the page's questions are done.
    """

    file: str
    page: int
    page_plan: PagePlan | NativePlan
    prefix_ids: list[int]  # prompt ids before the image placeholder (<s>USER: )
    sequence: torch.Tensor  # (N, D) the page's laid-out image embeddings
    prefix_len: int  # positions of prefix + image in the cache
    timing_ms: dict[str, float]  # render, encode, prefill (of the prefix): paid once
    prefill: Callable[[EncodedPage], object] = field(repr=False, default=None)
    answered: int = 0  # questions answered so far (the first carries the timing)
    _cache: object = field(repr=False, default=None)

    @property
    def view(self) -> str:
        return self.page_plan.view

    @property
    def cache(self):
        """The transformers Cache holding prefix + image (prefilled now if it was not yet)."""
        if self._cache is None:
            self._cache = self.prefill(self)
        return self._cache

    def release(self) -> None:
        self._cache = None


@dataclass
class PageQuestion:
    """One request of `DocReader.answer_many`: a question about an encoded page, and how to answer it."""

    encoded: EncodedPage
    question: str
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    seed: int | None = None
    constrain: Callable | None = None  # (logits (1, V), tokens so far) -> logits, as generate.loop.Constraint


def check_view(view: str) -> None:
    if view not in tuple(View):
        raise UsageError(f"view {view!r}: choose {' or '.join(tuple(View))}")
