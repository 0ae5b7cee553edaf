"""The document as one library call: `ask_document` and `ocr_document` read a file's pages, encode
each once for all its questions, answer, and keep every finished answer when a later page fails.

`ask`, `ocr`, `batch` (and any server) are thin loops over these, as whisper's CLI loops over
`transcribe()`. Nothing here prints: progress reaches the caller through an `Events` object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from docread.errors import DocreadError, UsageError
from docread.events import Events
from docread.intake import Document, Limits, open_document
from docread.reader import DocReader
from docread.results import Answer, DocumentAnswer, best_of
from docread.settings import AUTO_PAGES, OCR_MAX_NEW_TOKENS, Settings, Task, View
from docread.text.evidence import PageTexts, TextCache, attach_evidence
from docread.text.ranking import choose_pages
from docread.text.textprompt import Reference, blame_text, page_reference, with_reference
from docread.views.encoded import EncodedPage, PageSource

OOM_SLICES = (16, 9, 4, 0)  # tile budgets tried, in turn, when a page does not fit in GPU memory
MAX_ASK_PAGES = 20  # pages `ask` reads when no --pages is given


def unique_questions(questions: Sequence[str]) -> list[str]:
    """Questions with surrounding and repeated whitespace removed, each asked once, in order."""
    unique = list(dict.fromkeys(" ".join(q.split()) for q in questions))
    if "" in unique:
        unique.remove("")
    if not unique:
        raise UsageError("no question given: ask at least one non-empty question", code="no_questions")
    return unique


# -- one page, several questions ------------------------------------------------------------------
def page_source(document: Document, page) -> PageSource:
    return PageSource(lambda w, h: document.render(page, w, h), page.width, page.height, document.name, page.number)


def free_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
            free_gpu_memory()
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
        free_gpu_memory()
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
    """Answer `questions` about one page, in order, from `encoded` or a fresh encoding. CUDA
    out-of-memory while answering re-encodes the page with fewer tiles; a page that fails yields
    an error for each question it still owed. The page's KV cache is freed at the end. `reference`:
    page text put before each question (the plan counts it), see `docread.text.textprompt`."""
    import torch

    from docread.views.prompt import task_question

    events = events or Events()
    prompts = {q: with_reference(task_question(settings.task, q), reference) for q in questions}
    degraded = False
    pending = list(questions)
    try:
        if encoded is None:
            encoded, degraded = (encode or encode_with_fallback)(
                reader, document, page, list(prompts.values()), settings
            )
        _report_reduction(reader, encoded, page, degraded, events)
        while pending:
            question = pending[0]
            if stream:
                events.question(question)
            try:
                shape = constrain.get(question) if isinstance(constrain, Mapping) else constrain
                answer = _answer(reader, encoded, prompts[question], settings, events.chunk if stream else None, shape)
            except torch.cuda.OutOfMemoryError:
                encoded.release()
                free_gpu_memory()
                encoded, _ = encode_with_fallback(
                    reader, document, page, list(prompts.values()), settings, below=encoded.page_plan.max_slices
                )
                degraded = True
                continue
            except DocreadError as e:  # this question alone (a context overflow): the others go on
                e = blame_text(e, reference)
                pending.pop(0)
                yield _done(events, PageAnswer(question, page.number, None, e, degraded))
                continue
            pending.pop(0)
            answer.question = question
            answer.text_prompt = None if reference is None else reference.to_json()
            yield _done(events, PageAnswer(question, page.number, answer, None, degraded))
    except DocreadError as e:  # the page failed: the questions it still owed get its error
        e = blame_text(e, reference)
        events.failed(page.number, e)
        for question in pending:
            yield _done(events, PageAnswer(question, page.number, None, e, degraded))
    finally:
        if encoded is not None:
            encoded.release()


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


# -- a whole document -------------------------------------------------------------------------------
def open_for_reading(
    file: str, *, settings: Settings | None = None, limits: Limits | None = None, events: Events | None = None
) -> Document:
    """Open a file for a read (its pages, password and dpi from `settings`; `--pages auto` opens every page
    for ranking), its warnings (a repaired PDF...) reported through `events`."""
    settings = settings or Settings()
    pages = None if settings.pages == AUTO_PAGES else settings.pages
    document = open_document(file, pages=pages, password=settings.password, dpi=settings.dpi, limits=limits)
    report_warnings(document, events or Events())
    return document


def report_warnings(document: Document, events: Events) -> None:
    """The document's warnings not reported yet (MuPDF may repair a file late, on loading a page)."""
    for warning in document.warnings[document.warnings_shown :]:
        events.warning(warning)
    document.warnings_shown = len(document.warnings)


@contextmanager
def _opened(source: str | Document, **options) -> Iterator[Document]:
    """`source` itself when the caller opened it (and will close it), else the file opened here."""
    if isinstance(source, Document):
        yield source
        return
    with open_for_reading(source, **options) as document:
        yield document


def ask_document(
    reader: DocReader,
    source: str | Document,
    questions: Sequence[str],
    *,
    settings: Settings | None = None,
    limits: Limits | None = None,
    max_pages: int | None = MAX_ASK_PAGES,
    events: Events | None = None,
    stream: bool = False,
    encode: Encode | None = None,
    text_cache: TextCache | None = None,
    constrain=None,
) -> list[DocumentAnswer]:
    """Answer each question about a PDF or image (a path, `-` for stdin, or a Document the caller
    opened, e.g. to fail on a bad file before loading the model): every selected page (the first
    `max_pages` unless `settings.pages` names them; `"auto"`: each question's `top_pages` by BM25 of the
    question against the page text, see `docread.text.ranking`) is encoded once and asked its questions; each
    question's best-scoring page wins. A page that fails is recorded and the others go on. With `stream`, a
    single-page read streams each answer through `events`. A file that cannot be opened raises.
    `encode` replaces `encode_with_fallback` (a server's cache of encoded pages), `text_cache` keeps page texts
    across calls (a server's: OCR once per page); `constrain` (a
    `generate.loop.Constraint`, reset by an empty answer) shapes every answer's tokens, or, as a mapping
    from question to Constraint, each question's own (extract's typed fields)."""
    settings = settings or Settings()
    events = events or Events()
    questions = unique_questions(questions)
    with _opened(source, settings=settings, limits=limits, events=events) as document:
        picks = choose_pages(
            document,
            questions,
            pages=settings.pages,
            max_pages=max_pages,
            top=settings.top_pages,
            text=settings.text,
            warn=events.warning,
            kept=text_cache,
        )
        wanted = {q: {pick.page for pick in picks[q]} for q in questions}
        selected = [p for p in document.pages if any(p.number in w for w in wanted.values())]
        answers: dict[str, list[Answer]] = {q: [] for q in questions}
        errors: dict[str, list] = {q: [] for q in questions}
        texts = PageTexts(document, settings.text, text_cache)
        for index, page in enumerate(selected, start=1):
            events.page(page.number, index, len(selected))
            asked = [q for q in questions if page.number in wanted[q]]
            try:
                shape = page_constraint(reader, texts, page, settings, constrain, asked)
            except DocreadError as e:  # --extractive on a page without text: this page's error, the others go on
                events.failed(page.number, e)
                for q in asked:
                    errors[q].append((page.number, e))
                continue
            for result in answer_page(
                reader,
                document,
                page,
                asked,
                settings,
                events=events,
                stream=stream and len(selected) == 1,
                encode=encode,
                constrain=shape,
                reference=page_reference(reader, document, texts, page, settings, events),
            ):
                if result.answer is not None:
                    answers[result.question].append(result.answer)
                else:
                    errors[result.question].append((page.number, result.error))
        report_warnings(document, events)
        results = [best_of(document.name, q, answers[q], errors[q], document.repaired) for q in questions]
        for result in results:
            result.page_selection = [pick.to_json() for pick in picks[result.question]]
        attach_evidence(texts, selected, results, events)
        return results


def page_constraint(reader: DocReader, texts: PageTexts, page, settings: Settings, constrain=None, questions=()):
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
            "(a scan: install the ocr extra; or --text auto|ocr)",
        )
    span = Extractive(reader.base.tokenizer, text, reader.eos_token_ids)
    if isinstance(constrain, Mapping):  # per question (extract): a typed field keeps its grammar, text is a span
        return {q: constrain.get(q) or span for q in questions}
    return span if constrain is None else Chain(constrain, span)


def ocr_document(
    reader: DocReader,
    source: str | Document,
    *,
    settings: Settings | None = None,
    limits: Limits | None = None,
    events: Events | None = None,
    stream: bool = False,
) -> Iterator[PageAnswer]:
    """Transcribe each selected page of a file (a path or a Document, as for `ask_document`), in order:
    one PageAnswer per page (an error for a page that fails; the others go on). With `stream`, each
    page's text streams through `events`."""
    from docread.views.prompt import OCR_QUESTION

    settings = settings or Settings(task=Task.ocr, max_new_tokens=OCR_MAX_NEW_TOKENS)
    events = events or Events()
    with _opened(source, settings=settings, limits=limits, events=events) as document:
        for index, page in enumerate(document.pages, start=1):
            events.page(page.number, index, len(document.pages))
            yield from answer_page(reader, document, page, [OCR_QUESTION], settings, events=events, stream=stream)
            report_warnings(document, events)
