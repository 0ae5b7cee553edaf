"""`docread batch`: files x pages x questions into JSON Lines, resumable, with a progress bar."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from docread.cli.options import (Adapter, Device, Dpi, Fast, MaxNewTokens, MaxPixels, MaxSlices, Model, Offline, Pages,
                                 Password, Quant, Quiet, Seed, Task, Temperature, Timeout, check_choices, load_reader,
                                 make_limits, stderr_console)
from docread.errors import EXIT_FAILED, EXIT_OK, DocreadError

app = typer.Typer()


def read_questions(path: Path) -> list[str]:
    """One question per line; blank lines and `#` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DocreadError("unreadable", f"--question-file {path}: cannot be read ({e})", exit_code=2) from None
    questions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not questions:
        raise DocreadError("no_questions", f"--question-file {path} holds no questions (one per line; # comments)",
                           exit_code=2)
    return questions


@app.command(epilog="Examples:\n\n  docread batch scans/ --question-file q.txt -o answers.jsonl\n\n"
                    "  docread batch scans/ -Q q.txt -o answers.jsonl --resume   # after an interruption")
def batch(
    paths: Annotated[list[str], typer.Argument(help="PDFs, images or folders (walked recursively).")],
    question_file: Annotated[Path, typer.Option("--question-file", "-Q", help="One question per line; # comments.")],
    output: Annotated[str, typer.Option("--output", "-o", help="JSON Lines output file; - for stdout.")],
    resume: Annotated[bool, typer.Option("--resume", help="Skip the records OUTPUT already holds.")] = False,
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
    quiet: Quiet = False,
    max_pixels: MaxPixels = 178_956_970,
    timeout: Timeout = 60.0,
):
    """Answer every question about every page of every file: one JSON line per (file, page, question).

    The model loads once; each page is encoded once for all its questions. Ctrl-C stops after the
    current record; --resume then continues where it stopped. Exit 1 if any record failed."""
    from docread.batch import Settings, record_log, run_batch
    from docread.intake import expand_paths

    check_choices(quant, task)
    questions = read_questions(question_file)
    files = expand_paths(paths)
    err = stderr_console(quiet)
    settings = Settings(task=task, max_slices=max_slices, max_new_tokens=max_new_tokens, temperature=temperature,
                        seed=seed, dpi=dpi, fast=fast)
    sink = record_log(output, resume=resume)
    if sink.done:
        err.print(f"[dim]resuming: {len(sink.done)} records already in {escape(output)}[/]")
    reader = load_reader(model, adapter, device, quant, offline, err)
    stop = _StopAfterRecord(err)
    with _progress(err) as progress:
        pages_seen: set[tuple[str, object]] = set()
        reported: set[tuple] = set()
        counts = {"ok": 0, "error": 0}
        task_id = None
        if progress is not None:
            task_id = progress.add_task("counting pages", total=_count_pages(files, pages, password, dpi), records=0)

        def on_record(record: dict) -> None:
            if progress is not None:
                pages_seen.add((record["file"], record["page"]))
                progress.update(task_id, completed=len(pages_seen), records=progress.tasks[0].fields["records"] + 1,
                                description=f"{Path(record['file']).name} p{record['page'] or '-'}")
            counts[record["status"]] += 1
            where = (record["file"], record["page"], record["error"]["message"] if record["error"] else None)
            if record["status"] == "error" and where not in reported:  # once per page, not per question
                reported.add(where)
                err.print(f"[red]error[/] {escape(record['error']['message'])}")

        try:
            failed = run_batch(reader, files, questions, sink, settings=settings, pages=pages, password=password,
                               limits=make_limits(max_pixels, timeout), on_record=on_record,
                               should_stop=stop.requested)
        finally:
            sink.close()
            stop.restore()
    err.print(f"[dim]{counts['ok']} answers, {counts['error']} errors → {escape(output)}[/]")
    if stop.requested():
        err.print("[yellow]stopped; continue with --resume[/]")
        raise typer.Exit(130)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


class _StopAfterRecord:
    """First Ctrl-C: finish the current record, then stop. Second: stop now."""

    def __init__(self, err):
        self.err = err
        self.count = 0
        self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        self.err.print("[yellow]stopping after the current record (Ctrl-C again to stop now)[/]")

    def requested(self) -> bool:
        return self.count > 0

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self.previous)


def _count_pages(files, pages, password, dpi) -> int:
    """Pages the run will read (a file that fails to open counts as one), for the progress bar's ETA."""
    from docread.intake import open_document

    total = 0
    for file in files:
        try:
            with open_document(file, pages=pages, password=password, dpi=dpi) as document:
                total += len(document.pages)
        except DocreadError:
            total += 1
    return total


def _progress(err):
    """A rich progress bar with ETA and pages/min on a terminal's stderr; None elsewhere."""
    from contextlib import nullcontext

    if not err.is_terminal or err.quiet:
        return nullcontext(None)
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class PagesPerMinute(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed * 60:.1f} pages/min" if task.speed else "– pages/min")

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("pages · {task.fields[records]} answers"), PagesPerMinute(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=err)
