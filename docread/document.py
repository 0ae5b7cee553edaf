"""The document as one library call: `ask_document` and `ocr_document` read a file's pages, encode
each once for all its questions, answer, and keep every finished answer when a later page fails.

`ask`, `ocr`, `batch` (and any server) are thin loops over these, as whisper's CLI loops over
`transcribe()`. Nothing here prints: progress reaches the caller through an `Events` object.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from docread.errors import DocreadError, UsageError
from docread.events import Events
from docread.intake import Document, Limits, open_document
from docread.pagework import Encode, PageAnswer, PageWork, answer_page, answer_pages, page_work
from docread.reader import DocReader
from docread.results import Answer, DocumentAnswer, best_of
from docread.settings import AUTO_PAGES, OCR_MAX_NEW_TOKENS, OcrSource, Settings, Task, TextMode
from docread.text.evidence import PageTexts, TextCache, attach_evidence
from docread.text.ranking import choose_pages
from docread.text.spans import page_constraint
from docread.text.textprompt import page_reference

MAX_ASK_PAGES = 20  # pages `ask` reads when no --pages is given


def unique_questions(questions: Sequence[str]) -> list[str]:
    """Questions with surrounding and repeated whitespace removed, each asked once, in order."""
    unique = list(dict.fromkeys(" ".join(q.split()) for q in questions))
    if "" in unique:
        unique.remove("")
    if not unique:
        raise UsageError("no question given: ask at least one non-empty question", code="no_questions")
    return unique


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
        found: dict[tuple[str, int], Answer] = {}
        failures: dict[tuple[str, int], DocreadError] = {}
        texts = PageTexts(document, settings.text, text_cache)
        works = _ask_works(reader, document, selected, wanted, questions, texts, settings, events, constrain)
        one = stream and len(selected) == 1  # one page streams its answers live
        pairs = sum(map(len, wanted.values()))  # page x question pairs: every wanted page is selected
        read = answer_pages(reader, works, settings, events=events, stream=one, encode=encode, pairs=pairs)
        for work, result in read:
            into = found if result.answer is not None else failures
            into[result.question, work.page.number] = result.answer or result.error
        pages = [p.number for p in selected]  # each question's answers in page order, however they finished
        answers = {q: [found[q, n] for n in pages if (q, n) in found] for q in questions}
        errors = {q: [(n, failures[q, n]) for n in pages if (q, n) in failures] for q in questions}
        report_warnings(document, events)
        results = [best_of(document.name, q, answers[q], errors[q], document.repaired) for q in questions]
        for result in results:
            result.page_selection = [pick.to_json() for pick in picks[result.question]]
        attach_evidence(texts, selected, results, events)
        return results


def _ask_works(reader, document, selected, wanted, questions, texts, settings, events, constrain) -> Iterator[PageWork]:
    """Each selected page's work for `ask_document`, announced as its turn comes (`--extractive` on a page
    without text: a work that failed already)."""
    for index, page in enumerate(selected, start=1):
        events.page(page.number, index, len(selected))
        asked = [q for q in questions if page.number in wanted[q]]
        try:
            shape = page_constraint(reader, texts, page, settings, constrain, asked)
        except DocreadError as e:  # this page's error, the others go on
            yield page_work(document, page, asked, settings, error=e)
            continue
        reference = page_reference(reader, document, texts, page, settings, events)
        yield page_work(document, page, asked, settings, constrain=shape, reference=reference)


def ocr_document(
    reader: DocReader | Callable[[], DocReader] | None,
    source: str | Document,
    *,
    settings: Settings | None = None,
    limits: Limits | None = None,
    events: Events | None = None,
    stream: bool = False,
) -> Iterator[PageAnswer]:
    """Transcribe each selected page of a file (a path or a Document, as for `ask_document`), in order:
    one PageAnswer per page (an error for a page that fails; the others go on). With `stream`, each
    page's text streams through `events`. `settings.source` says where the text comes from (see
    `OcrSource`): the pages a text layer or OCR answers need no model, so `reader` may be a function
    that loads one, called at the first page that does (or None with `source=text`)."""
    from docread.views.prompt import OCR_QUESTION

    settings = settings or Settings(task=Task.ocr, max_new_tokens=OCR_MAX_NEW_TOKENS)
    events = events or Events()
    with _opened(source, settings=settings, limits=limits, events=events) as document:
        for index, page in enumerate(document.pages, start=1):
            events.page(page.number, index, len(document.pages))
            if settings.source != OcrSource.model and (found := _text_page(document, page, settings, events, stream)):
                events.answered(found)
                yield found
                continue
            if reader is None:
                raise UsageError(f"page {page.number} has no text layer: reading it takes a model (a reader)")
            if not hasattr(reader, "answer"):  # a function that loads the model
                reader = reader()
            yield from answer_page(reader, document, page, [OCR_QUESTION], settings, events=events, stream=stream)
            report_warnings(document, events)


def _text_page(document: Document, page, settings: Settings, events: Events, stream: bool) -> PageAnswer | None:
    """A page's transcription from its own text (`source` text: the layer, else OCR; auto: the layer
    alone), or None when the model is to read it."""
    from docread.text.pagetext import page_text
    from docread.views.prompt import OCR_QUESTION

    mode = TextMode.layer if settings.source == OcrSource.auto else TextMode.auto
    started = time.perf_counter()
    try:
        found = page_text(document, page, mode)
        if found.source == "none" and settings.source == OcrSource.text:
            raise DocreadError(
                "no_page_text",
                f"{document.name} page {page.number} has no text layer and OCR is not installed: "
                'pip install "docread[ocr]", or use --source model',
            )
    except DocreadError as e:
        events.failed(page.number, e)
        return PageAnswer(OCR_QUESTION, page.number, None, e, source=settings.source.value)
    if found.source == "none":
        return None
    if stream:
        events.question(OCR_QUESTION)
        events.chunk(found.text)
    timing = {"text": round((time.perf_counter() - started) * 1000, 2)}
    blank = dict.fromkeys(("score", "model", "rows", "cols", "tiles", "visual_tokens", "image_tokens"))
    blank |= dict.fromkeys(("prompt_tokens", "generated_tokens", "max_slices", "reduced_from", "stopped_by"))
    answer = Answer(document.name, page.number, OCR_QUESTION, found.text, **blank, timing_ms=timing, view=None)
    return PageAnswer(OCR_QUESTION, page.number, answer, source=found.source, confidence=found.confidence)
