"""A conversation over one document: `ChatSession` answers question after question about one page at a
time, the page encoded once and kept for every later question (locally, in a one-page
`docread.pagecache.PageCache`; with a server, in the server's own page cache).

`docread chat` only reads lines and renders; this holds the document, the page and the reader (local or
remote, `docread.reading`). Answers stream as `ask(question)` is iterated; its ask --json record is `last` after.
It is one conversation about the document: earlier turns (on any page) go into each prompt after the
image, the oldest dropped, with a warning, when the context is full; `reset()` forgets them.
"""

from __future__ import annotations

import dataclasses
import queue
import signal
import threading
from collections.abc import Iterator

from docread.document import ask_document
from docread.errors import DocreadError, UsageError
from docread.events import Events
from docread.intake import Document, Limits, Page, open_bytes
from docread.pagecache import PageCache
from docread.reader import DocReader
from docread.reading import LocalReader, Reader, Upload
from docread.settings import DEFAULT_MAX_NEW_TOKENS, Settings
from docread.views.encoded import EncodedPage
from docread.views.prompt import task_question, with_turns


def open_chat_document(
    file: str, *, settings: Settings | None = None, limits: Limits | None = None
) -> tuple[Document, bytes]:
    """The file read once (intake's bounds) and opened: a bad file fails here, before any model loads.
    The bytes are what a server is sent."""
    from docread.remote import read_file

    if file == "-":
        raise UsageError("chat reads its questions from the terminal: give the document as a file path")
    data = read_file(file, limits)
    settings = settings or Settings()
    return open_bytes(data, file, password=settings.password, dpi=settings.dpi, limits=limits), data


class _Stop(Exception):
    """The caller stopped iterating an answer (Ctrl-C): the decode ends at its next piece."""


class _Relay(Events):
    """A read's events from the reading thread to the caller's, in order, through a queue."""

    def __init__(self, out: queue.Queue):
        self.out, self.stopped = out, False

    def warning(self, message: str) -> None:
        self.out.put(("warning", message))

    def chunk(self, text: str) -> None:
        if self.stopped:
            raise _Stop
        self.out.put(("chunk", text))

    def failed(self, number: int, error: DocreadError) -> None:
        self.out.put(("failed", (number, error)))


class ChatSession:
    """Questions about one page of `document` at a time, answered by `reader` (a `docread.reading.Reader`:
    a loaded model, or a `docread serve` — then `data`, the file's bytes, is uploaded with each question).
    `events` gets warnings and page failures; answers stream from `ask`."""

    def __init__(
        self,
        document: Document,
        *,
        reader: Reader | DocReader,
        data: bytes | None = None,
        settings: Settings | None = None,
        events: Events | None = None,
    ):
        self.reader = reader if isinstance(reader, Reader) else LocalReader(reader)
        self.remote = not isinstance(self.reader, LocalReader)
        if self.remote and data is None:
            raise ValueError("ChatSession: a server needs the file's bytes (data)")
        self.document, self.data = document, data
        self.settings = settings or Settings()
        self.events = events or Events()
        self.cache = PageCache(1)  # the page being talked about, encoded once (a server keeps its own)
        self.page = document.pages[0].number
        self.last: dict | None = None  # the last answer's ask --json record
        self.turns: list[tuple[str, str]] = []  # the conversation so far: (question, answer), oldest first
        self._told_server = False  # the server answers alone: said once

    def pages(self) -> list[Page]:
        """The document's pages (number, and nominal width x height in pixels)."""
        return list(self.document.pages)

    def set_page(self, number: int) -> Page:
        """Talk about page `number` from now on (encoded at its first question, then kept)."""
        for page in self.document.pages:
            if page.number == number:
                self.page = number
                return page
        raise UsageError(
            f"page {number}: {self.document.name} has {self.document.page_count} page(s), 1-{self.document.page_count}",
            code="bad_page",
        )

    def reset(self) -> int:
        """Forget the conversation's earlier turns (the kept page stays encoded); how many were forgotten."""
        forgotten, self.turns = len(self.turns), []
        return forgotten

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer to `question` about the current page; afterwards `last` holds its record (as
        `ask --json` writes it). A page that cannot be read is reported through `events` (the record
        then has status "error"). Stop iterating to stop the answer."""
        self.last = None
        question = " ".join(question.split())
        if not question:
            raise UsageError("no question given", code="no_questions")
        yield from self._stream(question)
        if self.last is not None and self.last.get("status") == "ok":  # an answer stopped early is no turn
            self.turns.append((question, self.last["answer"]))

    def _stream(self, question: str) -> Iterator[str]:
        """The read runs on a thread that never takes SIGINT; its events come back through a queue, so the
        answer streams here and Ctrl-C (stopping the iteration) ends the decode at its next piece."""
        page = self.set_page(self.page)
        one_page = dataclasses.replace(self.document, pages=[page])  # the same open file, one page selected
        out: queue.Queue = queue.Queue()
        relay = _Relay(out)

        def run() -> None:
            try:
                out.put(("done", self._read(one_page, question, relay)))
            except BaseException as e:  # noqa: BLE001  re-raised on the caller's thread
                out.put(("error", e))

        thread = threading.Thread(target=_without_interrupts(run), name="docread-chat", daemon=True)
        thread.start()
        try:
            while True:
                kind, value = out.get()
                if kind == "chunk":
                    yield value
                elif kind == "warning":
                    self.events.warning(value)
                elif kind == "failed":
                    self.events.failed(*value)
                elif kind == "done":
                    self.last = value.to_json()
                    return
                elif isinstance(value, _Stop):
                    return
                else:
                    raise value
        finally:
            relay.stopped = True
            thread.join()
            self.document.warnings_shown = one_page.warnings_shown

    def _read(self, one_page: Document, question: str, relay: Events):
        """The question asked of the page: here with the conversation in the prompt and the page kept
        encoded; through a server, the file uploaded again (the server keeps the page encoded)."""
        settings = self.settings.replace(pages=str(one_page.pages[0].number))
        if self.remote:
            if self.turns and not self._told_server:
                relay.warning("--server: the server answers each question alone; earlier turns are not sent")
                self._told_server = True
            upload = Upload(self.document.name, self.data)
            (result,) = self.reader.ask(upload, [question], settings=settings, events=relay, stream=True)
            return result
        (result,) = ask_document(
            _InConversation(self, relay),
            one_page,
            [question],
            settings=settings,
            events=relay,
            stream=True,
            encode=self.cache.encode,
            text_cache=self.cache.texts,
        )
        return result


class _InConversation:
    """The session's reader with the conversation in each prompt: the earlier turns go into the text after
    the image (so the kept page's KV prefix is reused), before the page-text reference and the question.
    When the page, the turns, the reference, the question and --max-new-tokens would overflow the context,
    the oldest turns are dropped for good, with a warning. Everything else is the reader's own."""

    def __init__(self, session: ChatSession, events: Events):
        self.session, self.events, self.reader = session, events, session.reader.model

    def __getattr__(self, name: str):
        return getattr(self.reader, name)

    def answer(self, encoded: EncodedPage, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **options):
        text = self.fit(encoded, prompt, max_new_tokens)
        return self.reader.answer(encoded, text, max_new_tokens=max_new_tokens, **options)

    def fit(self, encoded: EncodedPage, prompt: str, max_new_tokens: int) -> str:
        """`prompt` with as many of the latest turns as fit (all of them, when the context allows)."""
        reader, session = self.reader, self.session
        turns = [(task_question(session.settings.task, q), a) for q, a in session.turns]
        template, eos = reader.template.template, reader.base.tokenizer.eos_token or ""
        for dropped in range(len(turns) + 1):
            text = with_turns(template, turns[dropped:], prompt, eos)
            if reader.context_needed(encoded, text, max_new_tokens) <= reader.context:
                break
        else:
            return prompt  # the question alone does not fit: the reader says so, the turns stay
        if dropped:
            del session.turns[:dropped]
            some = f"{dropped} earlier turn{'s' if dropped > 1 else ''}"
            self.events.warning(f"chat: {some} dropped to fit the {reader.context}-token context")
        return text


def _without_interrupts(target):
    """`target` on a thread that never takes SIGINT (nor do the threads it starts, torch's among them), so
    Ctrl-C always reaches the main thread, where the prompt and the streamed answer are."""

    def run():
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        target()

    return run
