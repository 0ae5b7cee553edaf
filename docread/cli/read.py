"""Reading commands: `inspect` (how a page is sliced), `ask` (answer questions), `ocr` (transcribe)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from docread.cli.options import (Adapter, Device, Dpi, Fast, Json, MaxNewTokens, MaxPixels, MaxSlices, Model, Offline,
                                  Pages, Password, Quant, Quiet, Seed, Task, Temperature, Timeout, Verbose,
                                  check_choices, load_reader, make_limits, stderr_console)
from docread.errors import EXIT_FAILED, EXIT_OK

app = typer.Typer()


# -- inspect --------------------------------------------------------------------------------
@app.command(epilog="Example: docread inspect invoice.pdf --pages 1-2 --preview grid.png")
def inspect(
    paths: Annotated[list[str], typer.Argument(help="PDFs, images or folders (walked recursively); - reads stdin.")],
    pages: Pages = None,
    max_slices: MaxSlices = None,
    dpi: Dpi = 200.0,
    model: Model = None,
    password: Password = None,
    json_out: Json = False,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="Write the tile-grid picture: a .png for one page, or a folder.")] = None,
    max_pixels: MaxPixels = 178_956_970,
    timeout: Timeout = 60.0,
):
    """Show how each page is sliced: size, tile grid, visual tokens. Loads no model."""
    from docread.inspection import inspect_paths, render_table

    from docread.presets import resolve_preset

    preset = resolve_preset(model)
    records = inspect_paths(paths, preset=preset, pages=pages, max_slices=max_slices, dpi=dpi, password=password,
                            limits=make_limits(max_pixels, timeout), preview=preview)
    failed = False
    if json_out:
        for record in records:
            failed |= "error" in record
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()
    else:
        failed = render_table(records, preset)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


# -- ask ------------------------------------------------------------------------------------
MAX_ASK_PAGES = 20  # pages asked by default; more with --pages


@app.command(epilog='Examples:\n\n  docread ask invoice.pdf "What is the total amount?"\n\n'
                    '  docread ask report.pdf "Who signed it?" "When?" --pages 1-3 --json | jq .answer')
def ask(
    file: Annotated[str, typer.Argument(help="A PDF or image; - reads stdin.")],
    questions: Annotated[list[str], typer.Argument(metavar="QUESTION...", help="One or more questions about the document.")],
    model: Model = None,
    adapter: Adapter = None,
    pages: Pages = None,
    task: Task = "qa",
    max_slices: MaxSlices = None,
    dpi: Dpi = 200.0,
    password: Password = None,
    quant: Quant = "auto",
    device: Device = "auto",
    max_new_tokens: MaxNewTokens = 256,
    temperature: Temperature = 0.0,
    seed: Seed = None,
    fast: Fast = False,
    offline: Offline = False,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
    max_pixels: MaxPixels = 178_956_970,
    timeout: Timeout = 60.0,
):
    """Answer questions about a PDF or image. Every selected page is read; the best-scoring page's
    answer is reported (per-page answers are in --json). One page streams its answer live."""
    from docread.batch import Settings

    check_choices(quant, task)
    settings = Settings(task=task, max_slices=max_slices, max_new_tokens=max_new_tokens, temperature=temperature,
                        seed=seed, dpi=dpi, fast=fast)
    err = stderr_console(quiet)
    results = _read_document(file, questions, settings, pages=pages, password=password,
                             limits=make_limits(max_pixels, timeout), err=err, json_out=json_out, verbose=verbose,
                             model_options=(model, adapter, device, quant, offline))
    for question, result in results:
        if json_out:
            record = result.to_json()
            record["question"] = question
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        elif len(result.pages) > 1:  # several pages: the best one's answer, once all are read
            if len(questions) > 1:
                err.print(f"[bold]{escape(question)}[/]")
            sys.stdout.write(result.best.answer + "\n")
        if not json_out:
            _summary(err, result.best, len(result.pages), verbose)
        sys.stdout.flush()


def _read_document(file, questions, settings, *, pages, password, limits, err, json_out, verbose, model_options):
    """Encode each selected page once, answer every question on it; (question, DocumentAnswer) pairs."""
    from docread.batch import answer_all, best_of, encode_with_fallback
    from docread.intake import open_document
    from docread.prompt import task_question

    prompts = [task_question(settings.task, q) for q in questions]
    with open_document(file, pages=pages, password=password, dpi=settings.dpi, limits=limits) as document:
        selected = document.pages
        if pages is None and len(selected) > MAX_ASK_PAGES:
            err.print(f"[yellow]reading the first {MAX_ASK_PAGES} of {len(selected)} pages; choose others with --pages[/]")
            selected = selected[:MAX_ASK_PAGES]
        reader = load_reader(*model_options, err)
        live = len(selected) == 1 and not json_out
        answers: dict[str, list] = {q: [] for q in questions}
        for number, page in enumerate(selected, start=1):
            with _status(err, f"reading page {page.number} ({number}/{len(selected)})", enabled=not live):
                encoded, degraded = encode_with_fallback(reader, document, page, prompts, settings)
            plan = encoded.page_plan
            if plan.reduced or degraded:
                why = "GPU memory" if degraded else f"the model's {reader.context}-token context"
                err.print(f"[yellow]page {page.number}: --max-slices {plan.requested_slices} reduced to "
                          f"{plan.max_slices} to fit {why}[/]")
            for question, prompt in zip(questions, prompts):
                if live and len(questions) > 1:
                    err.print(f"[bold]{escape(question)}[/]")
                write = _writer() if live else None
                with _status(err, f"page {page.number}: {question[:40]}", enabled=not live):
                    (answer,) = answer_all(reader, encoded, [prompt], settings, on_chunk=write)
                if live:
                    sys.stdout.write("\n")
                answer.question = question
                answers[question].append(answer)
    return [(q, best_of(answers[q])) for q in questions]


def _writer():
    def write(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    return write


def _status(err, text: str, *, enabled: bool):
    """A spinner on a terminal's stderr; nothing elsewhere."""
    from contextlib import nullcontext

    return err.status(text) if enabled and err.is_terminal else nullcontext()


def _summary(err, answer, pages_read: int, verbose: bool) -> None:
    score = "n/a" if answer.score is None else f"{answer.score:.3f}"
    of = f" (best of {pages_read})" if pages_read > 1 else ""
    line = f"page {answer.page}{of} · score {score} · {answer.rows}x{answer.cols} tiles · {answer.visual_tokens} visual tokens"
    if verbose:
        timing = " ".join(f"{k} {v:.0f}ms" for k, v in answer.timing_ms.items())
        line += f" · {answer.generated_tokens} tokens · {timing}"
    err.print(f"[dim]{line}[/]")


# -- ocr --------------------------------------------------------------------------------------
@app.command(epilog="Examples:\n\n  docread ocr scan.png\n\n  docread ocr report.pdf --pages 1-3 --json > text.jsonl")
def ocr(
    file: Annotated[str, typer.Argument(help="A PDF or image; - reads stdin.")],
    model: Model = None,
    adapter: Adapter = None,
    pages: Pages = None,
    max_slices: MaxSlices = None,
    dpi: Dpi = 200.0,
    password: Password = None,
    quant: Quant = "auto",
    device: Device = "auto",
    max_new_tokens: MaxNewTokens = 1024,
    fast: Fast = False,
    offline: Offline = False,
    json_out: Json = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = 178_956_970,
    timeout: Timeout = 60.0,
):
    """Transcribe the text of each page (streamed on a terminal; --json: one line per page)."""
    from docread.batch import Settings, answer_all, encode_with_fallback
    from docread.intake import open_document
    from docread.prompt import OCR_QUESTION, task_question

    check_choices(quant, "ocr")
    settings = Settings(task="ocr", max_slices=max_slices, max_new_tokens=max_new_tokens, dpi=dpi, fast=fast)
    err = stderr_console(quiet)
    prompt = task_question("ocr", OCR_QUESTION)
    with open_document(file, pages=pages, password=password, dpi=dpi, limits=make_limits(max_pixels, timeout)) as document:
        reader = load_reader(model, adapter, device, quant, offline, err)
        for page in document.pages:
            if not json_out and len(document.pages) > 1:
                err.print(f"[dim]── page {page.number} ──[/]")
            encoded, _ = encode_with_fallback(reader, document, page, [prompt], settings)
            (answer,) = answer_all(reader, encoded, [prompt], settings, on_chunk=None if json_out else _writer())
            if json_out:
                record = {"file": file, "page": page.number, "text": answer.answer, "score": answer.score,
                          "model": answer.model, "rows": answer.rows, "cols": answer.cols,
                          "stopped_by": answer.stopped_by, "timing_ms": answer.timing_ms}
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                sys.stdout.write("\n")
            sys.stdout.flush()
            if answer.stopped_by == "length":
                err.print(f"[yellow]page {page.number}: stopped at --max-new-tokens {max_new_tokens}[/]")
