"""`--text-prompt`: the page's own text given to the model after the image, as reference, capped at a
token budget. It goes into the prompt text that follows the image, so the context planner counts it
like the question: tiles are reduced before anything else, and a prompt that cannot fit fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from docread.errors import ContextOverflow, DocreadError
from docread.settings import DEFAULT_TEXT_TOKENS, TextPrompt

if TYPE_CHECKING:
    from docread.events import Events
    from docread.intake import Document
    from docread.settings import Settings
    from docread.text.evidence import PageTexts

REFERENCE_HEAD = "Text found on the page (for reference):"
CUT_MARK = " [...]"  # ends a page text cut at the token budget, so the model (and reader) see it


@dataclass(frozen=True)
class Reference:
    """The page text added to one page's prompts, as the records show it."""

    block: str  # the text put before the question
    source: str  # layer | ocr
    tokens: int  # tokens of page text kept (the tokenizer's count, special tokens aside)
    cut: bool  # the page text was longer than the budget and was cut (marked with CUT_MARK)

    def to_json(self) -> dict:
        return {"source": self.source, "tokens": self.tokens, "cut": self.cut}


def wanted(mode: str, source: str, view: str) -> bool:
    """Whether a page whose text came from `source` gets it in its prompt under `mode`."""
    mode = TextPrompt(mode)
    if mode == TextPrompt.off or source not in ("layer", "ocr"):
        return False
    return mode == TextPrompt.on or (source == "layer" and str(view) == "hires")


def cap(tokenizer, text: str, max_tokens: int) -> tuple[str, int, bool]:
    """`text` cut to at most `max_tokens` tokens at a token boundary: (text, tokens kept, cut?)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) <= max_tokens:
        return text, len(ids), False
    end = offsets[max_tokens - 1][1] if max_tokens else 0
    return text[:end].rstrip() + CUT_MARK, max_tokens, True


def reference(tokenizer, text: str, source: str, max_tokens: int = DEFAULT_TEXT_TOKENS) -> Reference | None:
    """The reference block for a page's text (None when it has none)."""
    if not text.strip() or max_tokens <= 0:
        return None
    kept, tokens, cut = cap(tokenizer, text.strip(), max_tokens)
    return Reference(f"{REFERENCE_HEAD}\n{kept}\n\n", source, tokens, cut)


def with_reference(prompt: str, ref: Reference | None) -> str:
    """The prompt text that follows the image, with the page text before the question."""
    return prompt if ref is None else ref.block + prompt


def blame_text(error: DocreadError, ref: Reference | None) -> DocreadError:
    """A context overflow that the page text in the prompt causes (it would fit without it) says so and
    names --text-tokens; any other error is returned as it is."""
    if not isinstance(error, ContextOverflow) or ref is None or error.needed - ref.tokens > error.context:
        return error
    keep = ref.tokens - (error.needed - error.context)
    fix = f"lower --text-tokens to {keep} or less" if keep > 0 else "use --text-prompt off"
    return ContextOverflow(
        f"the page text in the prompt ({ref.tokens} tokens) leaves no room: the prompt needs {error.needed} of "
        f"the model's {error.context} context tokens: {fix} (or lower --max-new-tokens)",
        needed=error.needed,
        context=error.context,
        param="text_tokens",
    )


def page_reference(
    reader, document: Document, texts: PageTexts, page, settings: Settings, events: Events
) -> Reference | None:
    """The page text for this page's prompts under --text-prompt (None: the image alone); `reader`: the
    loaded model (its tokenizer counts the text's tokens)."""
    mode = TextPrompt(settings.text_prompt)
    if mode == TextPrompt.off or (mode == TextPrompt.auto and (document.kind != "pdf" or settings.view != "hires")):
        return None  # decided without reading the page's text (no OCR just to find out)
    try:
        text = texts.get(page)
    except DocreadError as e:
        events.warning(f"page {page.number}: no page text for the prompt: {e.message}")
        return None
    if not wanted(mode, text.source, settings.view):
        return None
    return reference(reader.base.tokenizer, text.text, text.source, settings.text_tokens)
