"""Reading commands: `ask` (answer questions) and `ocr` (transcribe), thin loops over
`docread.document.ask_document` / `ocr_document`: validate, call, render."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Optional

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
from docread.cli.output import write_json, write_out
from docread.errors import EXIT_FAILED, EXIT_OK, DocreadError, UsageError
from docread.events import Events
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from docread.settings import OCR_MAX_NEW_TOKENS, ONLY_OCR, TASK_FIELDS, Settings, Task

app = typer.Typer()

# --highlight: the suffix picks the picture format
HIGHLIGHT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


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
@read_options(auto_pages=True, exclude=ONLY_OCR)
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
    highlight: Annotated[
        Optional[str],
        typer.Option(
            "--highlight",
            metavar="PATH",
            help="Write the best answer's page with its evidence boxed and the tile grid faintly (the first "
            "question's, when several are asked; with --server the file is opened here to draw it). The suffix "
            f"picks the format ({', '.join(HIGHLIGHT_FORMATS)}); a folder (or a path ending in /) gets one "
            "picture per page read.",
        ),
    ] = None,
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
    json_schema: Annotated[
        Optional[Path],
        typer.Option(
            "--json-schema",
            help="Answer with JSON valid under this JSON Schema file (constrained decoding; needs the "
            "structured extra; not with --server: use the server's response_format).",
        ),
    ] = None,
    *,
    settings: Settings,
):
    """Answer questions about a PDF or image. The selected pages (the first 20 unless --pages
    names them) are each read once for all questions; the best-scoring page's answer is reported
    (per-page answers are in --json). Several pages or questions decode together, in batches; one page's
    answers print live (one question: token by token). A page that fails is
    reported and the others still answer (exit 1)."""
    from docread.document import open_for_reading, unique_questions

    questions = unique_questions(questions)
    schema = _json_schema(json_schema, server)
    target = _highlight_target(highlight)
    if server and highlight is not None and file == "-":
        raise UsageError("--highlight with --server opens the file here again to draw it: give a path, not -")
    err = diagnostics(quiet)
    render = _Render(err, questions, live=not json_out)
    limits = make_limits(max_pixels, timeout)
    with _source(file, server, settings, limits, render) as source:
        reader = choose_reader(server, api_key, model, adapter, device, quant, offline, err)
        try:
            if schema is not None:
                results = _ask_json(reader, source, questions, schema, settings, limits, render, json_out)
            else:
                results = reader.ask(
                    source, questions, settings=settings, limits=limits, events=render, stream=not json_out
                )
        finally:
            render._stop_spinner()
        if target is not None:
            if server:
                with open_for_reading(file, settings=settings, limits=limits) as document:
                    _write_highlight(document, results, target, reader.image_size, err, settings.text)
            else:
                _write_highlight(source, results, target, reader.image_size, err)
    raise typer.Exit(_report(err, questions, [result.to_json() for result in results], json_out, verbose))


def _json_schema(path: Path | None, server: str | None) -> dict | None:
    """--json-schema's schema, read and checked before the model loads."""
    if path is None:
        return None
    if server:
        raise UsageError("--json-schema reads locally: with --server, send response_format to /v1/chat/completions")
    try:
        schema = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--json-schema {path}: cannot read it as JSON ({e})") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--json-schema {path}: a JSON Schema is a JSON object")
    return schema


def _ask_json(reader, source, questions, schema, settings, limits, render, json_out):
    """Each answer decoded under `schema`'s grammar; one that ran out of --max-new-tokens first is an error."""
    from docread.document import ask_document
    from docread.generate.grammar import json_grammar

    model = reader.model
    grammar = json_grammar(model.base.tokenizer, schema, model.eos_token_ids)
    results = ask_document(
        model,
        source,
        questions,
        settings=settings,
        limits=limits,
        events=render,
        stream=not json_out,
        constrain=grammar,
    )
    for result in results:
        try:
            json.loads(result.best.answer if result.best else "")
        except ValueError:
            render.warning(f"{result.question}: the JSON did not close within --max-new-tokens (it is cut): raise it")
    return results


@contextmanager
def _source(file: str, server: str | None, settings: Settings, limits, events):
    """What the reader reads: locally the file opened first (a bad one fails before the model loads);
    through a server the path, uploaded as it is."""
    from docread.document import open_for_reading

    if server:
        yield file
        return
    with open_for_reading(file, settings=settings, limits=limits, events=events) as document:
        yield document


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


@dataclass(frozen=True)
class _HighlightTarget:
    path: Path
    folder: bool  # one picture per page read, named page-N.png inside `path`


def _highlight_target(value: str | None) -> _HighlightTarget | None:
    """--highlight checked before any file opens or the model loads: a folder (one that exists, or a
    path ending in /) whose parent exists, or a file in an existing folder with a known picture suffix."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir() or value.endswith(("/", os.sep)):
        if not path.parent.is_dir():
            raise UsageError(f"--highlight {value}: the folder {path.parent} does not exist: create it first")
        if path.exists() and not path.is_dir():
            raise UsageError(f"--highlight {value}: {path} is a file, not a folder: name a folder or a picture file")
        return _HighlightTarget(path, folder=True)
    if not path.parent.is_dir():
        raise UsageError(f"--highlight {value}: the folder {path.parent} does not exist: create it or name another")
    if path.suffix.lower() not in HIGHLIGHT_FORMATS:
        raise UsageError(
            f"--highlight {value}: the suffix picks the format: use one of {', '.join(HIGHLIGHT_FORMATS)} "
            "(or end the path with / for a folder, one picture per page)"
        )
    return _HighlightTarget(path, folder=False)


def _write_highlight(document, results, target: _HighlightTarget, size: int | None, err, remote_text=None) -> None:
    """The first answered question's best page to `target` (a file), or each page it read (a folder).
    `remote_text`: the --text mode of a server's answers, whose other pages' evidence is found here."""
    from docread.text.evidence import PageTexts, evidence, highlight_answer

    result = next((r for r in results if r.best is not None), None)
    if result is None:
        err.warn(f"--highlight: no answer to highlight; {target.path} not written")
        return
    if not target.folder:
        picture = highlight_answer(document, result.best, size)
        picture.save(target.path, format=HIGHLIGHT_FORMATS[target.path.suffix.lower()])
        err.note(f"highlight: page {result.best.page}, {len(result.best.evidence)} evidence box(es) -> {target.path}")
        return
    target.path.mkdir(exist_ok=True)
    texts = PageTexts(document, remote_text) if remote_text is not None else None
    for answer in result.pages:
        if texts is not None and answer.page != result.best.page:  # a server sends the best page's evidence only
            page = next(p for p in document.pages if p.number == answer.page)
            try:
                answer = replace(answer, evidence=evidence(texts.get(page), answer.answer))
            except DocreadError:
                answer = replace(answer, evidence=[])
        path = target.path / f"page-{answer.page}.png"
        highlight_answer(document, answer, size).save(path, format="PNG")
        err.note(f"highlight: page {answer.page}, {len(answer.evidence)} evidence box(es) -> {path}")


def _summary(err, answer, pages_read: int, verbose: bool) -> None:
    score = "n/a" if answer.score is None else f"{answer.score:.3f}"
    of = f" (best of {pages_read})" if pages_read > 1 else ""
    if answer.grounded is None:
        found = "no page text checked"
    elif answer.grounded:
        found = f"found on the page ({answer.evidence[0]['match']})"
    else:
        found = "not found in the page text"
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
@read_options(
    only=TASK_FIELDS["ocr"],
    defaults={"max_new_tokens": OCR_MAX_NEW_TOKENS},
    fixed={"task": Task.ocr},
)
def ocr(
    file: Annotated[str, typer.Argument(help="A PDF or image; - reads stdin.")],
    model: Model = None,
    adapter: Adapter = None,
    quant: Quant = "auto",
    device: Device = "auto",
    offline: Offline = False,
    json_out: Json = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    server: Server = None,
    api_key: ApiKey = None,
    *,
    settings: Settings,
):
    """Transcribe the text of each page (streamed on a terminal; --json: one line per page, an error
    record for a page that fails while the others go on). --source text prints the PDF's own text layer
    (else OCR) and loads no model; auto loads one only for a page without a text layer."""
    from docread.document import ocr_document
    from docread.records import ocr_record
    from docread.settings import OcrSource

    err = diagnostics(quiet)
    render = _OcrRender(err, live=not json_out)
    failed = False
    limits = make_limits(max_pixels, timeout)
    with _source(file, server, settings, limits, render) as source:
        name = getattr(source, "name", file)
        if server:
            reader = choose_reader(server, api_key, model, adapter, device, quant, offline, err)
            results = reader.ocr(source, settings=settings, limits=limits, events=render, stream=not json_out)
        else:  # the model is loaded at the first page that needs it (none with --source text)
            load = None
            if settings.source != OcrSource.text:
                load = lambda: choose_reader(None, api_key, model, adapter, device, quant, offline, err).model  # noqa: E731
            results = ocr_document(load, source, settings=settings, limits=limits, events=render, stream=not json_out)
        try:
            for result in results:
                record = ocr_record(name, result)
                failed |= record["status"] != "ok"
                if json_out:
                    write_json(record)
                elif record["status"] == "ok" and record["stopped_by"] == "length":
                    err.warn(f"page {record['page']}: stopped at --max-new-tokens {settings.max_new_tokens}")
        finally:
            render._stop_spinner()
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


class _OcrRender(_Render):
    def __init__(self, err, *, live: bool):
        super().__init__(err, [], live=live)

    def page(self, number: int, index: int, total: int) -> None:
        if self.live and total > 1:
            self.err.note(f"── page {number} ──")
