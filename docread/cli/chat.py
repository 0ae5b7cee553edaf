"""`docread chat`: questions typed one after another about a document, answers streamed; a thin loop
over `docread.chat.ChatSession` (line editing and history by the stdlib readline, where there is one)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from docread.cli.options import (
    Adapter,
    ApiKey,
    Device,
    Json,
    MaxPixels,
    Model,
    Offline,
    Quant,
    Quiet,
    Server,
    Timeout,
    Verbose,
    choose_reader,
    diagnostics,
    make_limits,
    read_options,
)
from docread.cli.output import safe_text, write_json, write_out
from docread.errors import EXIT_OK, DocreadError
from docread.events import Events
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from docread.settings import ONLY_OCR, Settings

app = typer.Typer()

HELP = """\
Type a question about the page and press Enter; the answer streams below it. It is one conversation:
earlier questions and answers go into each prompt (the oldest dropped when the context is full).
  /page N   talk about page N (it is encoded once, at its first question; the conversation goes on)
  /reset    forget the earlier questions and answers (/clear too)
  /pages    list the pages and their sizes
  /json     print each answer's JSON record too (again: stop)
  /help     this help
  /quit     leave (Ctrl-D too; Ctrl-C clears the line, twice leaves)"""


class _Render(Events):
    def __init__(self, err):
        self.err = err

    def warning(self, message: str) -> None:
        self.err.warn(message)

    def failed(self, number: int, error) -> None:
        self.err.error(error.message if f"page {number}" in error.message else f"page {number}: {error.message}")


@app.command(epilog="Examples:\n\n  docread chat report.pdf\n\n  docread chat scan.png --server http://127.0.0.1:8321")
@read_options(exclude=("pages", "top_pages", *ONLY_OCR))  # chat reads one page at a time: --page and /page N
def chat(
    file: Annotated[str, typer.Argument(help="A PDF or image.")],
    page: Annotated[int, typer.Option("--page", min=1, help="The page to start on (/page N switches).")] = 1,
    model: Model = None,
    adapter: Adapter = None,
    quant: Quant = "auto",
    device: Device = "auto",
    offline: Offline = False,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    server: Server = None,
    api_key: ApiKey = None,
    *,
    settings: Settings,
):
    """Talk about a document: ask question after question about one page at a time, answers streamed.
    Each page is encoded once, at its first question; later questions pay only their answer. It is one
    conversation: earlier questions and answers go into each prompt (the oldest dropped to fit)."""
    from docread.chat import ChatSession, open_chat_document

    err = diagnostics(quiet)
    document, data = open_chat_document(  # a bad file fails here, before the model loads
        file, settings=settings, limits=make_limits(max_pixels, timeout)
    )
    with document:
        reader = choose_reader(server, api_key, model, adapter, device, quant, offline, err)
        session = ChatSession(document, reader=reader, data=data, settings=settings, events=_Render(err))
        session.set_page(page)
        err.note(f"{document.name}: {document.page_count} page(s), on page {page}; /help for commands")
        _loop(session, err, _Screen(json_out), verbose)
    raise typer.Exit(EXIT_OK)


class _Screen:
    """Where the chat writes. Normally answers and command output go to stdout; with --json, stdout holds
    the JSON Lines records alone (one per answered question) and the rest goes to stderr (answers stream
    there only on a terminal)."""

    def __init__(self, json_out: bool):
        self.json_out = json_out  # --json: stdout is JSON Lines only
        self.show_json = False  # /json: records shown after the answers too

    def text(self, text: str) -> None:
        """Command output (/help, /pages, a fresh line)."""
        if not self.json_out:
            write_out(text)
        else:
            sys.stderr.write(safe_text(text) if sys.stderr.isatty() else text)
            sys.stderr.flush()

    def chunk(self, text: str) -> None:
        """A piece of an answer as it streams."""
        if not self.json_out:
            write_out(text)
        elif sys.stderr.isatty():
            self.text(text)

    def record(self, record: dict) -> None:
        if self.json_out or self.show_json:
            write_json(record)

    def prompt(self, page: int) -> str:
        """The line read after `pN> ` (on a terminal); the prompt never goes to a piped stdout."""
        if not sys.stdin.isatty():
            return input("")
        if sys.stdout.isatty():
            return input(f"p{page}> ")
        self.text(f"p{page}> ")
        return input("")


def _loop(session, err, screen: _Screen, verbose: bool) -> None:
    """Read, answer, repeat: until /quit, end of input, or Ctrl-C twice at the prompt."""
    _line_editing()
    interactive = sys.stdin.isatty()
    interrupts = 0
    while True:
        try:
            line = screen.prompt(session.page)
        except EOFError:
            if interactive:
                screen.text("\n")
            return
        except KeyboardInterrupt:
            interrupts += 1
            screen.text("\n")
            if interrupts > 1:
                return
            err.note("(Ctrl-C again or /quit to leave)")
            continue
        interrupts = 0
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if _command(session, err, screen, line) == "quit":
                return
            continue
        _answer(session, err, screen, line, verbose)


def _answer(session, err, screen: _Screen, question: str, verbose: bool) -> None:
    started = False
    try:
        for chunk in session.ask(question):
            started = True
            screen.chunk(chunk)
        if started:
            screen.chunk("\n")
    except KeyboardInterrupt:
        screen.text("\n")
        err.warn("answer stopped")
        return
    except DocreadError as e:
        if started:
            screen.chunk("\n")
        err.error(e.message)
        return
    record = session.last
    if record is None:
        return
    screen.record(record)
    if record["status"] == "ok":
        from dataclasses import fields

        from docread.cli.read import _summary
        from docread.results import Answer

        _summary(err, Answer(**{f.name: record[f.name] for f in fields(Answer)}), 1, verbose)


def _command(session, err, screen: _Screen, line: str) -> str | None:
    name, _, arg = line.partition(" ")
    if name in ("/quit", "/exit", "/q"):
        return "quit"
    if name == "/help":
        screen.text(HELP + "\n")
    elif name == "/pages":
        for page in session.pages():
            mark = "*" if page.number == session.page else " "
            screen.text(f"{mark} page {page.number}: {page.width}x{page.height} px\n")
    elif name == "/page":
        try:
            number = int(arg.strip())
            page = session.set_page(number)
        except ValueError:
            err.error(f"/page N: N is a page number, not {arg.strip()!r}")
        except DocreadError as e:
            err.error(e.message)
        else:
            err.note(f"page {page.number} ({page.width}x{page.height} px)")
    elif name in ("/reset", "/clear"):
        forgotten = session.reset()
        err.note(f"{forgotten} earlier turn{'' if forgotten == 1 else 's'} forgotten")
    elif name == "/json":
        if screen.json_out:
            err.note("--json: every answer's record is on stdout already")
        else:
            screen.show_json = not screen.show_json
            err.note(f"JSON records {'on' if screen.show_json else 'off'}")
    else:
        err.error(f"{name}: unknown command; /help lists them")
    return None


def _line_editing() -> None:
    """The stdlib readline, where there is one: arrow keys edit the line, up and down walk this session's
    questions (nothing is written to disk: the questions are about your document)."""
    try:
        import readline  # noqa: F401  importing it is what turns it on for input()
    except ImportError:
        pass
