"""The local batch engine: a loaded `DocReader` answers the groups in this process. A group's pages go
through the vision encoder in one pass; the page x question pairs of the pages in hand, across files, are
decoded together by `docread.pagework.answer_pages` (the call `ask` makes, with the same page-text prompt:
`--text-prompt`, `--text-tokens`, `--text`), `--batch-size` at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain

from docread.batch.engine import Engine, Group
from docread.errors import DocreadError
from docread.generate.sizing import AUTO, BatchPlan, Halving, halving_warning, reader_plan, release_memory
from docread.pagework import PageWork, answer_pages, page_source, page_work
from docread.reader import DocReader
from docread.records import BatchRecord
from docread.settings import Settings
from docread.text.evidence import PageTexts, evidence_fields
from docread.text.spans import page_constraint
from docread.text.textprompt import Reference, page_reference, with_reference
from docread.views.encoded import EncodedPage
from docread.views.prompt import task_question


class LocalEngine(Engine):
    """Answers with `reader`: each group's pages encoded in one pass as it comes, the page x question pairs
    of the groups in hand (across files) decoded `batch_size` at a time (`auto`: sized from free memory,
    see `docread.generate.sizing`; a CUDA out-of-memory halves it for the rest of the run)."""

    def __init__(self, reader: DocReader, batch_size: int | str = AUTO):
        self.reader = reader
        self.model, self.adapter = reader.name, reader.adapter
        self.batch_size = batch_size
        self.halving: Halving | None = None  # made with the first group, from the run's --max-new-tokens

    def plan(self, settings: Settings) -> BatchPlan:
        """The decode batch this engine starts with for `settings` (what `batch --verbose` states)."""
        return reader_plan(self.reader, settings.max_new_tokens, self.batch_size)

    def answer(self, group: Group) -> Iterator[dict]:
        """Every owed question of the group's pages, one record each."""
        return self.run(iter([group]))

    def run(self, groups: Iterator[Group]) -> Iterator[dict]:
        """Every owed question of every group, one record each, in the order they finish; each group released
        (its file closed when all of its groups are) once its records are out."""
        held: dict[int, list] = {}  # id(group) -> [group, questions still owed]
        try:
            for work, result in self._answers(groups, held):
                group, owed, texts = work.tag
                yield self._record(group, owed, texts, result)
                entry = held[id(group)]
                entry[1] -= 1
                if entry[1] == 0:
                    del held[id(group)]
                    group.release()
        finally:
            for group, _ in held.values():
                group.release()

    def _answers(self, groups: Iterator[Group], held: dict):
        """(PageWork, PageAnswer) of every group's pairs: one `answer_pages` over all groups, so a batch packs
        pairs across pages and files (a run's groups share its settings and events)."""
        first = next(groups, None)
        if first is None:
            return
        if self.halving is None:
            warn = first.events.warning
            self.halving = Halving(self.plan(first.settings).size, lambda n: warn(halving_warning(n)))

        def works() -> Iterator[PageWork]:
            for group in chain([first], groups):
                held[id(group)] = [group, sum(len(owed.questions) for owed in group.owed)]
                yield from self._works(group)

        yield from answer_pages(self.reader, works(), first.settings, events=first.events, batch=self.halving)

    def _works(self, group: Group) -> Iterator[PageWork]:
        """The group's pages as PageWork: encoded in one pass, each with its page text prompt and constraint."""
        reader, document, settings, events = self.reader, group.document, group.settings, group.events
        texts = PageTexts(document, settings.text)
        pages = [owed.page for owed in group.owed]
        references = [page_reference(reader, document, texts, page, settings, events) for page in pages]
        encoded = _encode_group(reader, group, references)
        for index, owed in enumerate(group.owed):
            fields = {"reference": references[index], "tag": (group, owed, texts)}
            if encoded is not None:
                fields["encoded"] = encoded[index]
            try:  # --extractive: each answer a span of this page's text, as ask reads it
                fields["constrain"] = page_constraint(reader, texts, owed.page, settings)
            except DocreadError as e:  # a page without text: its records are that error
                if encoded is not None:
                    encoded[index].release()
                fields.update(error=e, encoded=None)
            yield page_work(document, owed.page, owed.questions, settings, **fields)

    @staticmethod
    def _record(group: Group, owed, texts: PageTexts, result) -> dict:
        if result.answer is None:
            return group.failed(owed, result.question, result.error, degraded=result.degraded)
        found = evidence_fields(
            texts, owed.page, result.answer.answer, on_error=lambda e: group.events.warning(f"no evidence: {e.message}")
        )
        return BatchRecord.answered(
            owed.keys[result.question],
            group.document.sha256,
            result.answer,
            degraded=result.degraded,
            repaired=group.document.repaired,  # MuPDF may repair a file late, on loading a page
            view=str(group.settings.view),
            settings=group.digest,
            **found,
        ).to_json()


def _encode_group(reader: DocReader, group: Group, references: Sequence[Reference | None]) -> list[EncodedPage] | None:
    """The group's pages through the vision encoder in one pass, each planned for its own prompts (its page
    text, if any, before each of the run's questions) as `ask` plans it; None when the pass fails (CUDA
    out-of-memory, a page that does not render or fit): each page then encodes alone, with the fallback."""
    import torch

    settings, document = group.settings, group.document
    questions = [task_question(settings.task, q) for q in group.questions]
    prompts = [[with_reference(q, ref) for q in questions] for ref in references]
    try:
        plans = [
            reader.plan(
                owed.page.width,
                owed.page.height,
                page_prompts,
                max_slices=settings.max_slices,
                max_new_tokens=settings.max_new_tokens,
                view=settings.view,
            )[0]
            for owed, page_prompts in zip(group.owed, prompts)
        ]
        return reader.encode_pages(
            [page_source(document, owed.page) for owed in group.owed],
            prompts[0],
            max_slices=settings.max_slices,
            max_new_tokens=settings.max_new_tokens,
            plans=plans,
            view=settings.view,
        )
    except torch.cuda.OutOfMemoryError:
        release_memory()
        return None
    except DocreadError:  # a page of the group failed: each page alone finds out which
        return None
