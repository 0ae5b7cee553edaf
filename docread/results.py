"""What an answer is: the stream that yields an `Answer` (`docread.records`), and a question's answer over a
whole document (`DocumentAnswer`: the best page, every page, the failures; as JSON, an `AskRecord`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docread.errors import DocreadError
from docread.records import Answer, AskRecord

__all__ = ["Answer", "AnswerStream", "DocumentAnswer", "best_of"]

if TYPE_CHECKING:
    from docread.views.native import NativePlan
    from docread.views.processor import PagePlan


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
        rest = dict(
            pages=[{"page": a.page, "answer": a.answer, "score": a.score} for a in self.pages],
            errors=[{"page": page, **error.to_json()} for page, error in self.errors],
            repaired=self.repaired,
            pages_read=self.pages_read,
            page_selection=self.page_selection,
        )
        if self.best is not None:
            return AskRecord.answered(self.best, self.question, **rest).to_json()
        return AskRecord.failed(self.file, self.question, self.errors[0][1], **rest).to_json()

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
