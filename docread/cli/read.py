"""Reading commands: `ask` (answer questions) and `ocr` (transcribe), thin loops over
`docread.document.ask_document` / `ocr_document`: validate, call, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.options import (
    Adapter,
    ApiKey,
    AskPages,
    Device,
    Dpi,
    Fast,
    Json,
    MaxNewTokens,
    MaxPixels,
    MaxSlices,
    Model,
    Offline,
    Pages,
    Password,
    Quant,
    Quiet,
    Seed,
    Server,
    Task,
    Temperature,
    TextOption,
    TextPromptOption,
    TextTokens,
    Timeout,
    TopPages,
    Verbose,
    View,
    diagnostics,
    load_reader,
    make_limits,
)
from docread.cli.output import write_json, write_out
from docread.errors import EXIT_FAILED, EXIT_OK
from docread.events import Events
from docread.intake.limits import DEFAULT_DPI, DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from docread.settings import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEXT_TOKENS, DEFAULT_TOP_PAGES, OCR_MAX_NEW_TOKENS

app = typer.Typer()


class _Render(Events):
    """A read as the terminal shows it: a spinner per page, streamed answers on stdout (one page),
    warnings and page errors on stderr as they happen."""

    def __init__(self, err, questions: list[str], *, live: bool):
        self.err, self.questions, self.live = err, questions, live
        self.status = None
        self.open_answer = False

    def warning(self, message: str) -> None:
        self.err.warn(message)

    def page(self, number: int, index: int, total: int) -> None:
        if total > 1 or not self.live:
            self._spin(f"reading page {number} ({index}/{total})")

    def question(self, question: str) -> None:
        self._stop_spinner()
        if len(self.questions) > 1:
            self.err.heading(question)
        self.open_answer = True

    def chunk(self, text: str) -> None:
        write_out(text)

    def answered(self, result) -> None:
        if self.open_answer:
            write_out("\n")
            self.open_answer = False

    def failed(self, number: int, error) -> None:
        self._stop_spinner()
        named = f"page {number}" in error.message
        self.err.error(error.message if named else f"page {number}: {error.message}")

    def _spin(self, text: str) -> None:
        if self.status is None:
            self.status = self.err.status(text)
            self.status.__enter__()
        elif hasattr(self.status, "update"):
            self.status.update(text)

    def _stop_spinner(self) -> None:
        if self.status is not None:
            self.status.__exit__(None, None, None)
            self.status = None


# -- ask ------------------------------------------------------------------------------------
@app.command(
    epilog='Examples:\n\n  docread ask invoice.pdf "What is the total amount?"\n\n'
    '  docread ask report.pdf "Who signed it?" "When?" --pages 1-3 --json | jq .answer'
)
def ask(
    file: Annotated[str, typer.Argument(help="A PDF or image; - reads stdin.")],
    questions: Annotated[
        list[str],
        typer.Argument(
            metavar="QUESTION...", help="One or more questions about the document (a repeated question is asked once)."
        ),
    ],
    model: Model = None,
    adapter: Adapter = None,
    pages: AskPages = None,
    top_pages: TopPages = DEFAULT_TOP_PAGES,
    task: Task = "qa",
    max_slices: MaxSlices = None,
    view: View = "hires",
    text: TextOption = "auto",
    text_prompt: TextPromptOption = "auto",
    text_tokens: TextTokens = DEFAULT_TEXT_TOKENS,
    highlight: Annotated[
        Optional[Path],
        typer.Option(
            "--highlight",
            help="Write the best answer's page as a .png with its evidence boxed and the tile grid "
            "faintly (the first question's, when several are asked).",
        ),
    ] = None,
    dpi: Dpi = DEFAULT_DPI,
    password: Password = None,
    quant: Quant = "auto",
    device: Device = "auto",
    max_new_tokens: MaxNewTokens = DEFAULT_MAX_NEW_TOKENS,
    temperature: Temperature = 0.0,
    seed: Seed = None,
    fast: Fast = False,
    offline: Offline = False,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    server: Server = None,
    api_key: ApiKey = None,
):
    """Answer questions about a PDF or image. The selected pages (the first 20 unless --pages
    names them) are each read once for all questions; the best-scoring page's answer is reported
    (per-page answers are in --json). One page streams its answer live. A page that fails is
    reported and the others still answer (exit 1)."""
    from docread.document import ask_document, open_for_reading, unique_questions
    from docread.settings import Settings

    questions = unique_questions(questions)
    settings = Settings(
        pages=pages,
        top_pages=top_pages,
        password=password,
        task=task,
        max_slices=max_slices,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        dpi=dpi,
        fast=fast,
        view=view,
        text=text,
        text_prompt=text_prompt,
        text_tokens=text_tokens,
    )
    err = diagnostics(quiet)
    render = _Render(err, questions, live=not json_out)
    if server:
        options = {
            "pages": pages,
            "task": task,
            "max_slices": max_slices,
            "view": view,
            "dpi": dpi,
            "password": password,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        records = _ask_server(
            server, api_key, file, questions, options, render, json_out, make_limits(max_pixels, timeout)
        )
        raise typer.Exit(_report(err, questions, records, json_out, verbose))
    # the file first: a bad one fails before the model loads
    with open_for_reading(
        file,
        settings=settings,
        limits=make_limits(max_pixels, timeout),
        events=render,
    ) as document:
        reader = load_reader(model, adapter, device, quant, offline, err)
        try:
            results = ask_document(
                reader,
                document,
                questions,
                settings=settings,
                events=render,
                stream=not json_out,
            )
        finally:
            render._stop_spinner()
        if highlight is not None:
            _write_highlight(document, results, highlight, reader, err)
    raise typer.Exit(_report(err, questions, [result.to_json() for result in results], json_out, verbose))


def _report(err, questions: list[str], records: list[dict], json_out: bool, verbose: bool) -> int:
    """ask's output once every page is read (ask --json's records, local or from a server); its exit code."""
    from dataclasses import fields

    from docread.results import Answer

    failed = False
    for record in records:
        failed |= bool(record["errors"])
        if json_out:
            write_json(record)
            continue
        if record["status"] != "ok":
            continue  # its page errors are already on stderr
        best = Answer(**{f.name: record[f.name] for f in fields(Answer)})
        if len(record["pages"]) > 1:  # several pages: the best one's answer, once all are read
            if len(questions) > 1:
                err.heading(record["question"])
            write_out(best.answer + "\n")
        _summary(err, best, len(record["pages"]), verbose)
    return EXIT_FAILED if failed else EXIT_OK


def _ask_server(
    server: str, api_key, file: str, questions: list[str], options: dict, render: _Render, json_out: bool, limits
) -> list[dict]:
    """ask through `docread serve`: the server's events replayed into ask's own renderer, so the output is
    the local one; returns ask --json's records."""
    from docread.remote import ask_events

    return list(_replay(ask_events(server, file, questions, options, api_key=api_key, limits=limits), render, json_out))


def _replay(lines, render: _Render, json_out: bool):
    """A server's NDJSON lines: its events replayed into `render` (as a local read shows them), its
    records yielded."""
    from docread.errors import DocreadError

    try:
        for line in lines:
            event = line.get("event")
            if event is None:
                yield line
            elif event == "warning":
                render.warning(line["message"])
            elif event == "page":
                render.page(line["number"], line["index"], line["total"])
            elif event in ("question", "chunk") and json_out:
                continue  # a local --json read does not stream
            elif event == "question":
                render.question(line["question"])
            elif event == "chunk":
                render.chunk(line["text"])
            elif event == "answered":
                render.answered(None)
            elif event == "failed":
                render.failed(line["number"], DocreadError(line["error"]["code"], line["error"]["message"]))
    finally:
        render._stop_spinner()


def _write_highlight(document, results, path: Path, reader, err) -> None:
    from docread.text.evidence import highlight_answer

    answered = next((r.best for r in results if r.best is not None), None)
    if answered is None:
        err.warn(f"--highlight: no answer to highlight; {path} not written")
        return
    highlight_answer(document, answered, reader.preset.size).save(path, format="PNG")
    err.note(f"highlight: page {answered.page}, {len(answered.evidence)} evidence box(es) -> {path}")


def _summary(err, answer, pages_read: int, verbose: bool) -> None:
    score = "n/a" if answer.score is None else f"{answer.score:.3f}"
    of = f" (best of {pages_read})" if pages_read > 1 else ""
    found = f"found on the page ({answer.evidence[0]['match']})" if answer.grounded else "not found in the page text"
    line = (
        f"page {answer.page}{of} · score {score} · {answer.rows}x{answer.cols} tiles · "
        f"{answer.visual_tokens} visual tokens · {found}"
    )
    if verbose:
        timing = " ".join(f"{k} {v:.0f}ms" for k, v in answer.timing_ms.items())
        line += f" · {answer.generated_tokens} tokens · {timing}"
    err.note(line)


# -- ocr --------------------------------------------------------------------------------------
@app.command(epilog="Examples:\n\n  docread ocr scan.png\n\n  docread ocr report.pdf --pages 1-3 --json > text.jsonl")
def ocr(
    file: Annotated[str, typer.Argument(help="A PDF or image; - reads stdin.")],
    model: Model = None,
    adapter: Adapter = None,
    pages: Pages = None,
    max_slices: MaxSlices = None,
    view: View = "hires",
    dpi: Dpi = DEFAULT_DPI,
    password: Password = None,
    quant: Quant = "auto",
    device: Device = "auto",
    max_new_tokens: MaxNewTokens = OCR_MAX_NEW_TOKENS,
    fast: Fast = False,
    offline: Offline = False,
    json_out: Json = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    server: Server = None,
    api_key: ApiKey = None,
):
    """Transcribe the text of each page (streamed on a terminal; --json: one line per page, an error
    record for a page that fails while the others go on)."""
    from docread.document import ocr_document, open_for_reading
    from docread.serve.ocr import ocr_record
    from docread.settings import Settings

    settings = Settings(
        pages=pages,
        password=password,
        task="ocr",
        max_slices=max_slices,
        max_new_tokens=max_new_tokens,
        dpi=dpi,
        fast=fast,
        view=view,
    )
    err = diagnostics(quiet)
    render = _OcrRender(err, live=not json_out)
    failed = False
    limits = make_limits(max_pixels, timeout)

    def report(record: dict) -> None:
        nonlocal failed
        failed |= record["status"] != "ok"
        if json_out:
            write_json(record)
        elif record["status"] == "ok" and record["stopped_by"] == "length":
            err.warn(f"page {record['page']}: stopped at --max-new-tokens {max_new_tokens}")

    if server:
        from docread.remote import document_events

        options = {"pages": pages, "max_slices": max_slices, "view": view, "dpi": dpi, "password": password}
        options["max_new_tokens"] = max_new_tokens
        lines = document_events(server, "ocr", file, options, api_key=api_key, limits=limits)
        for record in _replay(lines, render, json_out):
            report(record)
        raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
    with open_for_reading(file, settings=settings, limits=limits, events=render) as document:
        reader = load_reader(model, adapter, device, quant, offline, err)
        for result in ocr_document(reader, document, settings=settings, events=render, stream=not json_out):
            report(ocr_record(document.name, result))
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


class _OcrRender(_Render):
    def __init__(self, err, *, live: bool):
        super().__init__(err, [], live=live)

    def page(self, number: int, index: int, total: int) -> None:
        if self.live and total > 1:
            self.err.note(f"── page {number} ──")
