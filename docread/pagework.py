"""Pages' questions answered: a page encoded once for all its questions (with fewer tiles when it does not
fit GPU memory), and every page x question pair of the pages in hand decoded together in batches
(`answer_pages`), each pair's failure its own. `docread.document` (ask, ocr) and `batch`'s local engine
loop over these; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from docread.errors import DocreadError
from docread.events import Events
from docread.generate.sizing import Halving, halving_warning, is_out_of_memory, reader_plan, release_memory
from docread.intake import Document
from docread.reader import DocReader
from docread.results import Answer
from docread.settings import Settings, View
from docread.text.textprompt import Reference, blame_text, with_reference
from docread.views.encoded import EncodedPage, PageQuestion, PageSource

OOM_SLICES = (16, 9, 4, 0)  # tile budgets tried, in turn, when a page does not fit in GPU memory


# -- one page, several questions ------------------------------------------------------------------
def page_source(document: Document, page) -> PageSource:
    return PageSource(lambda w, h: document.render(page, w, h), page.width, page.height, document.name, page.number)


def encode_with_fallback(
    reader: DocReader, document: Document, page, prompts: Sequence[str], settings: Settings, *, below: int | None = None
) -> tuple[EncodedPage, bool]:
    """Encode a page and prefill its prefix; on CUDA out-of-memory free memory and retry with fewer
    tiles (16 -> 9 -> 4 -> 0), or only budgets under `below` when a larger one already failed.
    Returns the encoded page and whether it had to be degraded."""
    import torch

    requested = reader.preset.max_slices if settings.max_slices is None else settings.max_slices
    budgets = [requested] + [n for n in OOM_SLICES if n < requested]
    if settings.view != View.hires:  # the native view has one shape: nothing to degrade to
        budgets = budgets[:1]
    if below is not None:
        budgets = [n for n in budgets if n < below]
    for budget in budgets:
        try:
            (encoded,) = reader.encode_pages(
                [page_source(document, page)],
                prompts,
                max_slices=budget,
                max_new_tokens=settings.max_new_tokens,
                view=settings.view,
            )
            encoded.cache  # noqa: B018  prefill now, so an out-of-memory shows here
            return encoded, budget != requested
        except torch.cuda.OutOfMemoryError:
            release_memory()
    raise DocreadError(
        "out_of_memory",
        f"{document.name} page {page.number} does not fit in GPU memory even "
        "without tiles: free the GPU, or use --device cpu",
    )


def encode_group(
    reader: DocReader, document: Document, pages: Sequence, prompts: Sequence[str], settings: Settings
) -> list[EncodedPage] | None:
    """Several pages through the vision encoder in one pass; None on CUDA out-of-memory (the caller
    then encodes page by page, with the fallback)."""
    import torch

    try:
        return reader.encode_pages(
            [page_source(document, p) for p in pages],
            prompts,
            max_slices=settings.max_slices,
            max_new_tokens=settings.max_new_tokens,
            view=settings.view,
        )
    except torch.cuda.OutOfMemoryError:
        release_memory()
        return None


# How a page becomes an EncodedPage: `encode_with_fallback`'s signature. A server passes its own to keep
# encoded pages across requests (the page it returns must survive `release()` if it is to be reused).
Encode = Callable[[DocReader, Document, object, Sequence[str], Settings], tuple[EncodedPage, bool]]


@dataclass
class PageAnswer:
    """One question on one page: its Answer, or the error that kept the page from answering it."""

    question: str
    page: int
    answer: Answer | None
    error: DocreadError | None = None
    degraded: bool = False  # the page was re-encoded with fewer tiles to fit GPU memory
    source: str = "model"  # where an ocr page's text came from: model | layer | ocr (rapidocr)
    confidence: float | None = None  # OCR's mean character confidence (rapidocr), else None


@dataclass
class PageWork:
    """One page's questions to answer (`answer_pages`): the page, its prompts and constraints, its encoding
    (made when the page's turn comes, unless given) and `tag`, the caller's own (which record it owes)."""

    document: Document
    page: object  # a docread.intake Page
    questions: list[str]
    prompts: dict[str, str]  # question -> the prompt asked (task template, page text)
    constrain: object = None  # a generate.loop.Constraint for every question, or {question: Constraint}
    reference: Reference | None = None
    encoded: EncodedPage | None = None
    error: DocreadError | None = None  # the page failed: every question it still owes gets this
    degraded: bool = False
    tag: object = None
    left: int = 0  # questions not answered yet: the page's KV cache is freed at 0

    def shape(self, question: str):
        return self.constrain.get(question) if isinstance(self.constrain, Mapping) else self.constrain


def page_work(document: Document, page, questions: Sequence[str], settings: Settings, **fields) -> PageWork:
    """A PageWork whose prompts are `questions` in the task's template, after the page text `reference`."""
    from docread.views.prompt import task_question

    reference = fields.get("reference")
    prompts = {q: with_reference(task_question(settings.task, q), reference) for q in questions}
    return PageWork(document, page, list(questions), prompts, **fields)


def answer_page(
    reader: DocReader,
    document: Document,
    page,
    questions: Sequence[str],
    settings: Settings,
    *,
    encoded: EncodedPage | None = None,
    events: Events | None = None,
    stream: bool = False,
    reference: Reference | None = None,
    encode: Encode | None = None,
    constrain=None,
) -> Iterator[PageAnswer]:
    """Answer `questions` about one page (decoded together, see `answer_pages`), from `encoded` or a fresh
    encoding; a page that fails yields an error for each question it still owed. `reference`: page text put
    before each question (the plan counts it), see `docread.text.textprompt`."""
    work = page_work(document, page, questions, settings, reference=reference, encoded=encoded, constrain=constrain)
    pairs = len(work.questions)
    for _, result in answer_pages(reader, [work], settings, events=events, stream=stream, encode=encode, pairs=pairs):
        yield result


def answer_pages(
    reader: DocReader,
    works: Iterable[PageWork],
    settings: Settings,
    *,
    events: Events | None = None,
    stream: bool = False,
    encode: Encode | None = None,
    batch: Halving | None = None,
    pairs: int | None = None,
) -> Iterator[tuple[PageWork, PageAnswer]]:
    """Every question of every page, as (work, PageAnswer) in the order they finish: pages encoded in turn
    (`works` is read lazily), their page x question pairs decoded together in batches of `batch.size` (the
    reader's `auto` plan by default; a CUDA out-of-memory halves it). A pair decoded alone is today's
    `reader.answer`: with `stream` its tokens stream through `events`; a batched pair's answer comes whole.
    Alone, an out-of-memory re-encodes the page with fewer tiles; a question that overflows the context
    is its own error; each page's KV cache is freed once its questions are done. `pairs`: how many pairs `works`
    holds, when the caller knows: a single pair decodes alone whatever the batch size, so it is not planned."""
    events = events or Events()
    if batch is None:
        size = 1 if pairs is not None and pairs <= 1 else reader_plan(reader, settings.max_new_tokens).size
        batch = Halving(size, lambda n: events.warning(halving_warning(n)))
    decoder = _PairDecoder(reader, settings, events, stream)
    pending: list[tuple[PageWork, str]] = []
    for work in works:
        ready = _start(reader, work, settings, events, encode)
        for question in work.questions:
            if ready.get(question) is not True:  # the page failed, or this question overflows the context
                yield _finish(events, work, question, ready.get(question) or work.error)
        pending += [(work, q) for q in work.questions if ready.get(q) is True]
        while len(pending) >= batch.size:
            taken, pending = pending[: batch.size], pending[batch.size :]
            yield from _decoded(events, batch.run(taken, decoder.decode, decoder.alone))
    yield from _decoded(events, batch.run(pending, decoder.decode, decoder.alone))


def _start(reader: DocReader, work: PageWork, settings: Settings, events: Events, encode) -> dict:
    """The page encoded (unless it failed already); {question: True} for those that fit, else their error."""
    work.left = len(work.questions)
    if work.error is None and work.encoded is None:
        try:
            work.encoded, work.degraded = (encode or encode_with_fallback)(
                reader, work.document, work.page, list(work.prompts.values()), settings
            )
        except DocreadError as e:
            work.error = e
    if work.error is not None:
        work.error = blame_text(work.error, work.reference)  # an overflow the page text causes names --text-tokens
        events.failed(work.page.number, work.error)
        return {}
    _report_reduction(reader, work.encoded, work.page, work.degraded, events)
    ready: dict = {}
    for question in work.questions:
        try:
            reader.check_fits(work.encoded, work.prompts[question], settings.max_new_tokens)
            ready[question] = True
        except DocreadError as e:  # this question alone (a context overflow): the others go on
            ready[question] = e
    return ready


def _decoded(events: Events, results) -> Iterator[tuple[PageWork, PageAnswer]]:
    for (work, question), result in results:
        yield _finish(events, work, question, result)


def _finish(events: Events, work: PageWork, question: str, result: Answer | DocreadError) -> tuple:
    """The PageAnswer of one pair; the page's cache freed with its last question."""
    work.left -= 1
    if work.left <= 0 and work.encoded is not None:
        work.encoded.release()
    if isinstance(result, DocreadError):
        result = blame_text(result, work.reference)
        return work, _done(events, PageAnswer(question, work.page.number, None, result, work.degraded))
    result.question = question
    result.text_prompt = None if work.reference is None else work.reference.to_json()
    return work, _done(events, PageAnswer(question, work.page.number, result, None, work.degraded))


class _PairDecoder:
    """`Halving`'s decode and alone for (PageWork, question) pairs."""

    def __init__(self, reader: DocReader, settings: Settings, events: Events, stream: bool):
        self.reader, self.settings, self.events, self.stream = reader, settings, events, stream

    def decode(self, pairs: list) -> Iterator[tuple[int, Answer | DocreadError]]:
        failed = [i for i, (work, _) in enumerate(pairs) if work.error is not None]
        yield from ((i, pairs[i][0].error) for i in failed)  # a page that failed alone, meanwhile
        live = [i for i in range(len(pairs)) if i not in failed]
        if len(live) == 1:
            yield live[0], self._one(*pairs[live[0]])
            return
        settings, done = self.settings, set()
        requests = [
            PageQuestion(
                w.encoded, w.prompts[q], settings.max_new_tokens, settings.temperature, settings.seed, w.shape(q)
            )
            for w, q in (pairs[i] for i in live)
        ]
        try:
            for j, event in self.reader.stream_many(requests, fast=settings.fast):
                if isinstance(event, Answer):
                    done.add(live[j])
                    if self.stream:
                        self.events.question(pairs[live[j]][1])
                        self.events.chunk(event.answer)
                    yield live[j], event
        except DocreadError:  # one pair's own failure: each pair left finds out alone
            for i in (i for i in live if i not in done):
                yield i, self._one(*pairs[i])

    def _one(self, work: PageWork, question: str) -> Answer | DocreadError:
        if self.stream:
            self.events.question(question)
        try:
            return _answer(
                self.reader,
                work.encoded,
                work.prompts[question],
                self.settings,
                self.events.chunk if self.stream else None,
                work.shape(question),
            )
        except DocreadError as e:
            return e

    def alone(self, pair: tuple, error: BaseException) -> Answer | DocreadError:
        """One pair that ran out of memory by itself: its page re-encoded with fewer tiles, until it fits."""
        work, question = pair
        while True:
            if work.error is not None:
                return work.error
            below = work.encoded.page_plan.max_slices
            work.encoded.release()
            try:
                work.encoded, _ = encode_with_fallback(
                    self.reader, work.document, work.page, list(work.prompts.values()), self.settings, below=below
                )
            except DocreadError as e:  # no smaller budget fits: the page's questions get its error
                work.error = e
                self.events.failed(work.page.number, e)
                return e
            work.degraded = True
            try:
                return self._one(work, question)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                release_memory()


def _done(events: Events, result: PageAnswer) -> PageAnswer:
    events.answered(result)
    return result


def _answer(
    reader: DocReader, encoded: EncodedPage, prompt: str, settings: Settings, on_chunk, constrain=None
) -> Answer:
    stream = reader.answer(
        encoded,
        prompt,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
        fast=settings.fast,
        constrain=constrain,
    )
    for chunk in stream:
        if on_chunk is not None:
            on_chunk(chunk)
    return stream.answer


def _report_reduction(reader: DocReader, encoded: EncodedPage, page, degraded: bool, events: Events) -> None:
    plan = encoded.page_plan
    if plan.reduced or degraded:
        why = "GPU memory" if degraded else f"the model's {reader.context}-token context"
        events.warning(
            f"page {page.number}: --max-slices {plan.requested_slices} reduced to {plan.max_slices} to fit {why}"
        )
