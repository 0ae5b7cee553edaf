"""The processor: a page and a question in, model-ready tensors out.

It plans the slicing within the LLM's context budget, renders the page once at the
plan's size, normalises the views, and builds the prompt ids with exactly as many image
placeholders as the page's tokens (the model only scatters them and checks the count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, ClassVar

from docread.errors import ContextOverflow
from docread.views.slicing import SlicePlan, TokenCount, count_tokens, page_views, plan_slices

if TYPE_CHECKING:
    import torch
    from PIL import Image

# Tile budgets tried, largest first, when a page does not fit the context: square-ish grids.
FALLBACK_SLICES = (16, 12, 9, 6, 4, 2, 1, 0)


@dataclass(frozen=True)
class Budget:
    """What the LLM's context must hold besides the image."""

    context: int  # max positions of the LLM (4096 for Vicuna)
    prompt_tokens: int  # text tokens of the prompt, image placeholder excluded
    max_new_tokens: int  # room kept for the answer

    @property
    def image_room(self) -> int:
        return self.context - self.prompt_tokens - self.max_new_tokens


@dataclass(frozen=True)
class PagePlan:
    plan: SlicePlan
    tokens: TokenCount
    requested_slices: int  # the --max-slices asked for
    max_slices: int  # the budget actually used (smaller when the context forced it)
    view: ClassVar[str] = "hires"  # docread's view; `docread.views.native.NativePlan` is the checkpoint's own

    @property
    def reduced(self) -> bool:
        return self.max_slices < self.requested_slices


def plan_page(
    width: int,
    height: int,
    *,
    size: int,
    patch: int,
    k: int,
    max_slices: int,
    budget: Budget | None = None,
    global_view: bool = True,
) -> PagePlan:
    """The slicing of a width x height page that fits `budget`, reducing tiles only when needed."""
    floor = 0 if global_view else 1  # tiles alone need at least one tile
    candidates = [max_slices] + [n for n in FALLBACK_SLICES if floor <= n < max_slices]
    for n in candidates:
        plan = plan_slices(width, height, size=size, max_slices=n)
        tokens = count_tokens(plan, patch=patch, k=k, global_view=global_view)
        if budget is None or tokens.image_tokens <= budget.image_room:
            return PagePlan(plan, tokens, requested_slices=max_slices, max_slices=n)
    assert budget is not None
    if budget.image_room < 0:
        raise ContextOverflow(
            f"the prompt ({budget.prompt_tokens} tokens) plus --max-new-tokens "
            f"{budget.max_new_tokens} already exceed the model's {budget.context} context tokens, "
            "with no room for the page: shorten the question or lower --max-new-tokens",
            needed=budget.context - budget.image_room + tokens.image_tokens,
            context=budget.context,
        )
    raise ContextOverflow(
        f"the prompt ({budget.prompt_tokens} tokens) plus --max-new-tokens {budget.max_new_tokens} leave "
        f"{budget.image_room} of the model's {budget.context} context tokens, fewer than the "
        f"{tokens.image_tokens} a page needs even without tiles: shorten the question or lower --max-new-tokens",
        needed=budget.context - budget.image_room + tokens.image_tokens,
        context=budget.context,
    )


def normalise(views, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 views (V, S, S, 3) -> float32 (V, 3, S, S), CLIP-normalised bit for bit as llava-hf's
    processor does it (rescale in float64, normalise in float32), by one 256-entry table per channel."""
    import numpy as np
    import torch

    levels = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)  # (256,)
    table = (levels[None] - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]  # (3, 256)
    planar = np.ascontiguousarray(np.asarray(views, dtype=np.uint8).transpose(0, 3, 1, 2))  # (V, 3, S, S)
    out = np.empty(planar.shape, np.float32)
    for c in range(3):
        np.take(table[c], planar[:, c], out=out[:, c], mode="clip")  # a gather, no int64 copy
    return torch.from_numpy(out)


def page_pixels(image: Image.Image, page_plan: PagePlan, mean, std) -> torch.Tensor:
    """(1 + tiles, 3, S, S) normalised views of a page rendered at the plan's size."""
    return normalise(page_views(image, page_plan.plan), mean, std)


@dataclass(frozen=True)
class PromptTemplate:
    """A chat format with one `<image>` marker and a `{question}` slot."""

    template: str

    def split(self, question: str) -> tuple[str, str]:
        before, after = self.template.split("<image>", 1)
        return before, after.replace("{question}", question)

    def without_image(self, question: str) -> str:
        """The prompt with no image: the marker and the line break after it left out, as LLaVA's
        conversation reads a question asked without one (`USER: <question> ASSISTANT:`)."""
        before, after = self.split(question)
        return before + after.removeprefix("\n")


def prompt_ids(tokenizer, template: PromptTemplate, question: str, image_token_id: int) -> list[int]:
    """Token ids of the prompt with a single image placeholder, tokenised as llava-hf does
    (the whole text at once, `<image>` being a special token). A question that itself contains
    the marker gets it as the plain word, so it cannot add a placeholder."""
    marker = tokenizer.convert_ids_to_tokens(image_token_id)
    before, after = template.split(question.replace(marker, marker.strip("<>")))
    ids = text_ids(tokenizer, before + marker + after)
    if ids.count(image_token_id) != 1:
        raise ValueError(f"the prompt must hold exactly one image token, found {ids.count(image_token_id)}")
    return ids


def text_prompt_ids(tokenizer, template: PromptTemplate, question: str, image_token_id: int) -> list[int]:
    """Token ids of the prompt for a question asked without an image: no image placeholder at all (a
    marker in the question is the plain word, as in `prompt_ids`)."""
    marker = tokenizer.convert_ids_to_tokens(image_token_id)
    ids = text_ids(tokenizer, template.without_image(question.replace(marker, marker.strip("<>"))))
    if image_token_id in ids:  # never with a preset's template; kept honest all the same
        raise ValueError("a prompt without an image holds an image token")
    return ids


def text_ids(tokenizer, text: str) -> list[int]:
    """`tokenizer(text).input_ids`. A fast tokenizer whose call is transformers' own (no method of the path
    overridden, no truncation or padding left on its backend) is asked through its backend directly, the same
    ids: the Python around the call costs as much as the tokenizing, and a server pays it on every request."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if (
        _plain_call(type(tokenizer))
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == tokenizer.split_special_tokens
    ):
        return backend.encode(text, add_special_tokens=True).ids
    return tokenizer(text).input_ids


@cache
def _plain_call(kind: type) -> bool:
    """Whether `kind(...)(text)` runs transformers 5's own fast path unchanged: `__call__` ->
    `_encode_plus` -> the backend's `encode_batch` of the one text, its ids."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase as Base
        from transformers.tokenization_utils_tokenizers import TokenizersBackend as Fast
    except ImportError:  # another transformers: its own call
        return False
    own = [(Base, "__call__"), (Base, "_get_padding_truncation_strategies"), (Fast, "_encode_plus")]
    own += [(Fast, "_convert_encoding"), (Fast, "set_truncation_and_padding")]
    return (
        issubclass(kind, Fast)
        and all(getattr(kind, name, None) is getattr(owner, name, None) for owner, name in own)
        and not hasattr(kind, "_switch_to_input_mode")
    )


def expand_image_token(ids: list[int], image_token_id: int, count: int) -> list[int]:
    """Replace the single image placeholder by `count` of them (the page's image tokens)."""
    at = ids.index(image_token_id)
    return ids[:at] + [image_token_id] * count + ids[at + 1 :]
