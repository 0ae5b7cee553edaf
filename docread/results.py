"""What an answer is: the `Answer` record (the CLI's --json object), the stream that yields it, and a
question's answer over a whole document (`DocumentAnswer`: the best page, every page, the failures)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from docread.errors import DocreadError

if TYPE_CHECKING:
    from docread.views.native import NativePlan
    from docread.views.processor import PagePlan


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
    evidence: list[dict] = field(
        default_factory=list
    )  # where the answer occurs in the page's text (docread.text.evidence)
    grounded: bool | None = False  # every value of the answer found in the page's text; None: no text checked
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


@dataclass
class DocumentAnswer:
    """One question over the pages read: the best-scoring page's answer, every page's kept, and the
    pages that failed. `best` is None only when no page could answer."""

    file: str
    question: str
    best: Answer | None
    pages: list[Answer] = field(default_factory=list)
    errors: list[tuple[int | None, DocreadError]] = field(default_factory=list)
    repaired: bool = False
    page_selection: list[dict] = field(default_factory=list)  # the pages this question read, and why

    @property
    def pages_read(self) -> list[int]:
        return [pick["page"] for pick in self.page_selection]

    def to_json(self) -> dict:
        if self.best is not None:
            record = self.best.to_json()
            record["question"] = self.question
            record["status"] = "ok"
        else:
            first = self.errors[0][1]
            record = {
                "file": self.file,
                "question": self.question,
                "page": None,
                "answer": None,
                "score": None,
                "status": "error",
                "error": first.to_json(),
                "evidence": [],
                "grounded": False,
            }
        record["pages"] = [{"page": a.page, "answer": a.answer, "score": a.score} for a in self.pages]
        record["errors"] = [{"page": page, **error.to_json()} for page, error in self.errors]
        record["repaired"] = self.repaired
        record["pages_read"], record["page_selection"] = self.pages_read, self.page_selection
        return record

    @property
    def evidence(self) -> list[dict]:
        """Where the best answer occurs in its page's text (empty without an answer or page text)."""
        return self.best.evidence if self.best is not None else []

    @property
    def grounded(self) -> bool | None:
        return self.best.grounded if self.best is not None else False


def best_of(
    file: str,
    question: str,
    answers: Sequence[Answer],
    errors: Sequence[tuple[int | None, DocreadError]] = (),
    repaired: bool = False,
) -> DocumentAnswer:
    """The answer with the highest mean token log-probability (an empty answer scores lowest)."""
    best = max(answers, key=lambda a: float("-inf") if a.score is None else a.score) if answers else None
    return DocumentAnswer(file, question, best, list(answers), list(errors), repaired)
