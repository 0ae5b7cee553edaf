"""The local batch engine: a loaded `DocReader` answers each group in this process. A group's pages go
through the vision encoder in one pass, then each page's owed questions through `docread.document.answer_page`
(the per-page call `ask` makes, with the same page-text prompt: `--text-prompt`, `--text-tokens`, `--text`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from docread.batch.engine import Engine, Group
from docread.document import answer_page, free_gpu_memory, page_source
from docread.errors import DocreadError
from docread.reader import DocReader
from docread.records import BatchRecord
from docread.text.evidence import PageTexts, evidence_fields
from docread.text.spans import page_constraint
from docread.text.textprompt import Reference, page_reference, with_reference
from docread.views.encoded import EncodedPage
from docread.views.prompt import task_question


class LocalEngine(Engine):
    """Answers with `reader`, one group at a time."""

    def __init__(self, reader: DocReader):
        self.reader = reader
        self.model, self.adapter = reader.name, reader.adapter

    def answer(self, group: Group) -> Iterator[dict]:
        """Every owed question of the group's pages, one record each, in page order."""
        reader, document, settings, events = self.reader, group.document, group.settings, group.events
        texts = PageTexts(document, settings.text)
        pages = [owed.page for owed in group.owed]
        references = [page_reference(reader, document, texts, page, settings, events) for page in pages]
        encoded = _encode_group(reader, group, references)
        for index, owed in enumerate(group.owed):
            try:  # --extractive: each answer a span of this page's text, as ask reads it
                shape = page_constraint(reader, texts, owed.page, settings)
            except DocreadError as e:  # a page without text: its records are that error
                if encoded is not None:
                    encoded[index].release()
                events.failed(owed.page.number, e)
                yield from (group.failed(owed, question, e) for question in owed.questions)
                continue
            for result in answer_page(
                reader,
                document,
                owed.page,
                owed.questions,
                settings,
                events=events,
                encoded=encoded[index] if encoded is not None else None,
                reference=references[index],
                constrain=shape,
            ):
                if result.answer is None:
                    yield group.failed(owed, result.question, result.error, degraded=result.degraded)
                    continue
                found = evidence_fields(
                    texts,
                    owed.page,
                    result.answer.answer,
                    on_error=lambda e: events.warning(f"no evidence: {e.message}"),
                )
                yield BatchRecord.answered(
                    owed.keys[result.question],
                    document.sha256,
                    result.answer,
                    degraded=result.degraded,
                    repaired=document.repaired,  # MuPDF may repair a file late, on loading a page
                    view=str(settings.view),
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
        free_gpu_memory()
        return None
    except DocreadError:  # a page of the group failed: each page alone finds out which
        return None
