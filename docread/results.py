"""What an answer is: the `Answer` record (the CLI's --json object) and the stream that yields it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docread.native import NativePlan
    from docread.processor import PagePlan


@dataclass
class Answer:
    """One answer and everything about how it was produced (the CLI's --json object)."""

    file: str
    page: int
    question: str
    answer: str
    score: float | None  # mean token log-probability of the answer
    model: str
    rows: int
    cols: int
    tiles: int
    visual_tokens: int  # global + tiles x tokens per tile
    image_tokens: int  # visual + separators: positions the page takes in the prompt
    prompt_tokens: int  # whole prompt, image positions included
    generated_tokens: int
    max_slices: int  # tile budget used (lower than asked when the context forced it)
    reduced_from: int | None  # the --max-slices asked for, when it had to be reduced
    stopped_by: str  # "eos" or "length"
    timing_ms: dict[str, float] = field(default_factory=dict)  # render, encode, prefill, decode
    view: str = "hires"  # "hires" (docread's tiles) or "native" (the checkpoint's own image handling)
    evidence: list[dict] = field(default_factory=list)  # where the answer occurs in the page's text (docread.evidence)
    grounded: bool = False  # the answer was found in the page's text (False when the page has none)
    text_prompt: dict | None = None  # page text given to the model ({source, tokens, cut}); None: image alone

    def to_json(self) -> dict:
        return asdict(self)


class AnswerStream:
    """Iterate for text chunks; after the loop, `.answer` holds the full Answer."""

    def __init__(self, chunks: Iterator[str], page_plan: PagePlan | NativePlan | None = None):
        self._chunks = chunks
        self.page_plan = page_plan  # known before the first chunk: the CLI reports reductions up front
        self.answer: Answer | None = None
        self.tokens: list[int] = []  # the answer's token ids, once the stream has ended

    def __iter__(self) -> Iterator[str]:
        yield from self._chunks
