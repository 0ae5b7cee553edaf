"""What `--extractive` asks of the decoder on one page: every answer a span of the page's text, and for
extract's typed fields a span of the page's numbers or dates (`TypedSpan`). `page_constraint` builds
the decode loop's constraint from the caller's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from docread.errors import DocreadError
from docread.settings import Settings
from docread.text.evidence import PageTexts


@dataclass(frozen=True)
class TypedSpan:
    """A per-question constraint (extract's, under --extractive): the answer is a span of one of the page's
    spans written as `kind` ("number", "integer" or "date", `docread.text.units.typed_spans`), so it is on
    the page and reads as its type; on a page with none of them the answer is empty (it scores lowest, so
    another page's value wins; on no page, the field has none). `accept`: whether an answer may end (it
    parses as the type)."""

    kind: str
    accept: Callable[[str], bool] | None = None


def page_constraint(reader, texts: PageTexts, page, settings: Settings, constrain=None, questions=()):
    """The caller's constraint, with `--extractive`'s span of this page's text added to every question's."""
    if not settings.extractive:
        return constrain
    from docread.generate.constraints import Chain
    from docread.generate.extractive import Extractive

    text = texts.get(page).text
    if not text.strip():
        raise DocreadError(
            "no_page_text",
            f"page {page.number}: --extractive answers with the page's own text, and it has none "
            "(a scan: install the ocr extra; or --text auto|ocr; extract: --no-extractive)",
        )
    span = Extractive(reader.base.tokenizer, text, reader.eos_token_ids)
    if isinstance(constrain, Mapping):  # per question (extract): a grammar, a typed span, or any span
        return {q: _typed(reader, text, constrain.get(q)) or span for q in questions}
    return span if constrain is None else Chain(constrain, span)


def _typed(reader, text: str, constrain):
    """A TypedSpan as the Extractive constraint over the page's spans of its kind (joined by NUL, which no
    answer holds, so an answer never runs from one into the next); any other constraint as it is."""
    if not isinstance(constrain, TypedSpan):
        return constrain
    from docread.generate.extractive import Extractive
    from docread.text.units import typed_spans

    found = typed_spans(text, constrain.kind)
    if not found:
        return _EndAtOnce(reader.eos_token_ids)
    return Extractive(reader.base.tokenizer, "\x00".join(found), reader.eos_token_ids, accept=constrain.accept)


class _EndAtOnce:
    """A Constraint for a page without the field's kind of value: only an end-of-sequence token, so the
    answer is empty (never a span of other text that merely parses, or does not)."""

    def __init__(self, eos_token_ids):
        self.eos = sorted(set(eos_token_ids))

    def __call__(self, logits, tokens: list[int]):  # logits: (1, V)
        import torch

        ended = torch.full_like(logits, float("-inf"))
        ended[..., self.eos] = logits[..., self.eos]
        return ended
