"""`--pages auto`: which pages to read for a question, by BM25 (bm25s) of the question against each
page's text. Pages without text cannot be ranked: they are read as before (the first ones, within the
usual page cap), so a scan without OCR behaves as it always did."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from docread.settings import AUTO_PAGES, DEFAULT_TOP_PAGES


@dataclass(frozen=True)
class Pick:
    """A page chosen for reading, and why."""

    page: int
    why: str  # bm25 | no_text | given | first | fallback
    score: float | None = None  # the BM25 score, for `bm25`

    def to_json(self) -> dict:
        score = {} if self.score is None else {"score": round(self.score, 4)}
        return {"page": self.page, "why": self.why, **score}


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


def bm25_scores(page_texts: Mapping[int, str], question: str) -> dict[int, float]:
    """Each page's BM25 score for `question` (pages with text only)."""
    import bm25s

    numbers = [n for n, text in page_texts.items() if text.strip()]
    if not numbers:
        return {}
    index = bm25s.BM25()
    index.index(
        bm25s.tokenize([page_texts[n] for n in numbers], stopwords="en", show_progress=False), show_progress=False
    )
    (query,) = _tokens([question])
    if not query:
        return dict.fromkeys(numbers, 0.0)
    scores = index.get_scores(query)
    return {n: float(s) for n, s in zip(numbers, scores)}


def pick_pages(
    page_texts: Mapping[int, str], question: str, *, top: int = DEFAULT_TOP_PAGES, max_pages: int | None = None
) -> list[Pick]:
    """The `top` best-scoring pages with text (a score above 0), then the pages without text, first
    ones first, within `max_pages` in all. When no page with text matches at all, the first pages are
    read as without ranking (`fallback`)."""
    scores = bm25_scores(page_texts, question)
    ranked = sorted((n for n, s in scores.items() if s > 0), key=lambda n: (-scores[n], n))[:top]
    picks = [Pick(n, "bm25", scores[n]) for n in ranked]
    if not picks and scores:
        order = list(page_texts)[:max_pages] if max_pages else list(page_texts)
        return [Pick(n, "fallback") for n in order]
    room = None if max_pages is None else max(0, max_pages - len(picks))
    no_text = [n for n in page_texts if n not in scores]
    picks += [Pick(n, "no_text") for n in (no_text if room is None else no_text[:room])]
    return sorted(picks, key=lambda p: p.page)


def choose_pages(
    document,
    questions: Sequence[str],
    *,
    pages: str | None,
    max_pages: int | None,
    top: int = DEFAULT_TOP_PAGES,
    text: str = "auto",
    warn=lambda message: None,
    kept=None,
) -> dict[str, list[Pick]]:
    """The pages each question reads: with `pages="auto"` its BM25 picks (from the text layer; OCR only
    with `text="ocr"`, since OCR of every page would cost more than reading it), else the pages named,
    else the first `max_pages` (as always). `kept`: a `text.evidence.TextCache` the page texts come from."""
    from docread.errors import DocreadError
    from docread.text.evidence import PageTexts

    if pages != AUTO_PAGES or text == "off":
        selected = document.pages
        if pages in (None, AUTO_PAGES) and max_pages is not None and len(selected) > max_pages:
            warn(f"reading the first {max_pages} of {len(selected)} pages; choose others with --pages")
            selected = selected[:max_pages]
        why = "given" if pages not in (None, AUTO_PAGES) else "first"
        return {q: [Pick(p.number, why) for p in selected] for q in questions}
    texts = PageTexts(document, "ocr" if text == "ocr" else "layer", kept)
    page_texts = {}
    for page in document.pages:
        try:
            page_texts[page.number] = texts.get(page).text
        except DocreadError as e:
            warn(f"page {page.number} cannot be ranked: {e.message}")
            page_texts[page.number] = ""
    return {q: pick_pages(page_texts, q, top=top, max_pages=max_pages) for q in questions}
