"""Encoded pages kept across questions: `PageCache` holds pages (their image embeddings and prefilled
prompt prefix) by content and settings, least recently used out first, and beside them the pages' text
(`texts`, a `text.evidence.TextCache`: OCR paid once per page). `chat` keeps one page in it, `docread serve` many."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from docread.pagework import encode_with_fallback
from docread.reader import DocReader
from docread.settings import Settings
from docread.text.evidence import TextCache
from docread.views.encoded import EncodedPage


@dataclass
class _KeptPage(EncodedPage):
    """An EncodedPage the cache owns: `release()` after a request keeps it; eviction frees it."""

    def release(self) -> None:
        pass

    def evict(self) -> None:
        self._cache = None


class PageCache:
    """Encoded pages (their image embeddings and prefilled prompt prefix) by content sha256, page, view,
    settings and plan; least recently used first out beyond `capacity` (0 = no cache). `texts`: as many pages'
    text, by content, page, size and text mode (pass it to `ask_document` as `text_cache`)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.texts = TextCache(capacity)
        self._pages: OrderedDict[tuple, _KeptPage] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def documents(self) -> set[str]:
        """The sha256s of the files whose pages are kept: bytes that decode (`intake.open_bytes`' `decoded`)."""
        return {key[0] for key in self._pages}

    def encode(
        self, reader: DocReader, document, page, prompts: Sequence[str], settings: Settings
    ) -> tuple[EncodedPage, bool]:
        """`docread.pagework.Encode`: the cached page when one fits these prompts, else a fresh one kept."""
        if self.capacity <= 0:
            return encode_with_fallback(reader, document, page, prompts, settings)
        plan, _ = reader.plan(
            page.width,
            page.height,
            prompts,
            max_slices=settings.max_slices,
            max_new_tokens=settings.max_new_tokens,
            view=settings.view,
        )
        # the plan leaves room for the longest prompt: a page planned for shorter ones is not reused
        key = (
            document.sha256,
            page.number,
            page.width,
            page.height,
            str(settings.view),
            settings.dpi,
            settings.max_slices,
            plan.max_slices,
            getattr(plan, "plan", None) and repr(plan.plan),
        )
        kept = self._pages.get(key)
        if kept is not None:
            self.hits += 1
            self._pages.move_to_end(key)
            # this request's file name on the answers; the embeddings and prefilled prefix are shared, paid
            return replace(kept, file=document.name, answered=max(1, kept.answered)), False
        self.misses += 1
        encoded, degraded = encode_with_fallback(reader, document, page, prompts, settings)
        if degraded:  # fewer tiles than asked to fit memory: not what the key says
            return encoded, degraded
        kept = _KeptPage(**{f.name: getattr(encoded, f.name) for f in fields(EncodedPage)})
        self._pages[key] = kept
        while len(self._pages) > self.capacity:
            self._pages.popitem(last=False)[1].evict()
        return kept, False
