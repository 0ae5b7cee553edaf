"""`docread batch`: files x pages x questions into JSON Lines, resumable, with a progress bar."""

from __future__ import annotations

import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.options import (
    Adapter,
    ApiKey,
    Device,
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
from docread.errors import EXIT_FAILED, EXIT_OK, DocreadError, UsageError
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from docread.settings import ONLY_OCR, Settings

app = typer.Typer()


MAX_QUESTION_FILE = 16 * 1024 * 1024  # bytes: a question file is text, never a data dump


class Engine(StrEnum):
    """Where `batch` runs."""

    local = "local"  # this process, one model
    ray = "ray"  # a Ray cluster: an actor pool of readers (docread.batch.raydata)


def read_questions(path: Path) -> list[str]:
    """One question per line; blank lines and `#` comments skipped, a UTF-8 BOM ignored, a repeated
    question asked once."""
    from docread.document import unique_questions

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_QUESTION_FILE + 1)
        if len(data) > MAX_QUESTION_FILE:
            raise UsageError(f"--question-file {path} is over {MAX_QUESTION_FILE >> 20} MiB: one question per line")
        lines = data.decode("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(
            f"--question-file {path}: cannot be read ({e}); save it as UTF-8 text", code="unreadable"
        ) from None
    questions = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not questions:
        raise UsageError(f"--question-file {path} holds no questions (one per line; # comments)", code="no_questions")
    return unique_questions(questions)


@app.command(
    epilog="Examples:\n\n  docread batch scans/ --question-file q.txt -o answers.jsonl\n\n"
    "  docread batch scans/ -Q q.txt -o answers.jsonl --resume   # after an interruption\n\n"
    "  docread batch scans/ -Q q.txt -o answers.jsonl --engine ray --workers 8 --gpus-per-worker 1"
)
@read_options(exclude=("top_pages", *ONLY_OCR))  # --pages auto ranks pages by a question: batch reads every page asked
def batch(
    paths: Annotated[list[str], typer.Argument(help="PDFs, images or folders (walked recursively).")],
    question_file: Annotated[
        Path,
        typer.Option(
            "--question-file", "-Q", help="One question per line; # comments; a repeated question is asked once."
        ),
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="JSON Lines output file; - for stdout.")],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Skip the answers OUTPUT already holds for these settings; append the rest, failed ones retried.",
        ),
    ] = False,
    model: Model = None,
    adapter: Adapter = None,
    quant: Quant = "auto",
    device: Device = "auto",
    offline: Offline = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="local = this process; ray = a Ray cluster, one model per worker: records arrive in "
            "completion order (up to 4 pages of a file at a time), each (file, page, question) exactly once.",
        ),
    ] = Engine.local,
    ray_address: Annotated[
        Optional[str],
        typer.Option(
            "--ray-address",
            help="With --engine ray: join this cluster (auto = the one `ray start` runs here); "
            "default: start a local Ray.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="With --engine ray: reader actors.")] = 1,
    gpus_per_worker: Annotated[
        float, typer.Option("--gpus-per-worker", min=0.0, help="With --engine ray: GPUs per reader (0 = CPU readers).")
    ] = 0.0,
    batch_size: Annotated[
        str,
        typer.Option(
            "--batch-size",
            help="Page x question pairs decoded at once, packed across files: auto = as many as free memory "
            "holds (KV per sequence from the model's config; at most 16 on a CPU, 64 on a GPU), or a number. A "
            "CUDA out-of-memory halves it and retries the same pairs. With --engine ray: per reader. With "
            "--server the server batches what arrives (serve --max-batch): only auto.",
        ),
    ] = "auto",
    verbose: Verbose = False,
    server: Server = None,
    api_key: ApiKey = None,
    *,
    settings: Settings,
):
    """Answer every question about every page of every file: one JSON line per (file, page, question).

    The model loads once; each page is encoded once for all its questions, with its text in the prompt as
    `ask` does (--text-prompt). A file or page that fails becomes error records and the run goes on
    (exit 1). Ctrl-C stops after the current record (twice: at once); --resume then continues where it
    stopped and retries the failed records, appending: OUTPUT is never rewritten, a key's last record is its
    current one, and each record's `settings` tells runs with other settings apart."""
    from docread.batch.core import record_log, run_batch
    from docread.generate.sizing import AUTO, parse_batch_size
    from docread.intake import expand_paths

    batch_size = parse_batch_size(batch_size)
    if server and batch_size != AUTO:
        raise UsageError(
            f"--batch-size {batch_size} decodes here: with --server the server batches the requests it gets "
            "(docread serve --max-batch); leave --batch-size out"
        )

    if engine is Engine.ray:
        from docread.batch.raydata import require_ray

        if server:
            raise UsageError("--server and --engine ray: choose one")
        require_ray()
    elif ray_address is not None or workers != 1 or gpus_per_worker:
        raise UsageError("--ray-address, --workers and --gpus-per-worker need --engine ray")
    questions = read_questions(question_file)
    files = expand_paths(paths)
    err = diagnostics(quiet)
    limits = make_limits(max_pixels, timeout)
    runner = None
    if engine is Engine.ray:  # its checks (CPUs, stdin) before the log opens: a refusal leaves no file
        from docread.batch.raydata import RayEngine, refuse_stdin

        refuse_stdin(files)
        runner = RayEngine(
            model=model,
            adapter=adapter,
            device=device,
            quant=quant,
            offline=offline or None,
            limits=limits,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            address=ray_address,
            batch_size=batch_size,
        )
        if verbose:
            err.note(
                f"batch {batch_size} per Ray reader"
                + (" (sized from each reader's free memory)" * (batch_size == AUTO))
            )
    sink = record_log(output, resume=resume)
    counts = {"ok": 0, "error": 0}
    stop = _StopAfterRecord(err)
    interrupted = False
    try:
        if runner is None:  # the one choice, as ask makes it: the server's model (refusing --adapter, another
            # --model) or one here
            from docread.batch.local import LocalEngine
            from docread.batch.remote import RemoteEngine

            reader = choose_reader(server, api_key, model, adapter, device, quant, offline, err)
            runner = RemoteEngine(reader, limits=limits) if server else LocalEngine(reader.model, batch_size)
            if verbose and not server:
                err.note(runner.plan(settings).line())
        with _progress(err) as progress:
            run_batch(
                runner,
                files,
                questions,
                sink,
                settings=settings,
                limits=limits,
                on_record=_Reporter(err, progress, files, settings, counts),
                should_stop=stop.requested,
                on_resume=err.note,
            )
    except KeyboardInterrupt:  # the second Ctrl-C: every record written so far is complete
        interrupted = True
    finally:
        sink.close()
        stop.restore()
    err.note(summary(counts["ok"], counts["error"], output))
    if interrupted or stop.requested():
        err.warn("stopped; continue with --resume")
        raise typer.Exit(130)
    raise typer.Exit(EXIT_FAILED if counts["error"] else EXIT_OK)


class _Reporter:
    """Each record as it is written: the progress bar, and one error line per failed page (errors show
    even with --quiet)."""

    def __init__(self, err, progress, files, settings: Settings, counts):
        self.err, self.progress, self.counts = err, progress, counts
        self.pages_seen: set[tuple] = set()
        self.reported: set[tuple] = set()
        self.records = 0
        self.task = None
        if progress is not None:
            self.task = progress.add_task("counting pages", total=_count_pages(files, settings), records=0)

    def __call__(self, record: dict) -> None:
        self.counts[record["status"]] += 1
        self.records += 1
        if self.progress is not None:
            from docread.cli.output import one_line

            self.pages_seen.add((record["file"], record["page"]))
            self.progress.update(
                self.task,
                completed=len(self.pages_seen),
                records=self.records,
                description=one_line(f"{Path(record['file']).name} p{record['page'] or '-'}"),
            )
        if record["status"] == "error":
            where = (record["file"], record["page"], record["error"]["message"])
            if where not in self.reported:  # once per page, not per question
                self.reported.add(where)
                message = record["error"]["message"]
                if record["file"] not in message:
                    message = (
                        f"{record['file']}" + (f" page {record['page']}" if record["page"] else "") + f": {message}"
                    )
                self.err.error(message)


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
        self.err.warn("stopping after the current record (Ctrl-C again to stop now)")

    def requested(self) -> bool:
        return self.count > 0

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self.previous)


def _count_pages(files, settings: Settings) -> int:
    """Pages the run will read (a file that fails to open counts as one), for the progress bar's ETA."""
    from docread.intake import open_document

    total = 0
    for file in files:
        if file == "-":  # stdin can be read once: by the run itself
            total += 1
            continue
        try:
            with open_document(file, pages=settings.pages, password=settings.password, dpi=settings.dpi) as document:
                total += len(document.pages)
        except DocreadError:
            total += 1
    return total


def _progress(err):
    """A rich progress bar with ETA and pages/min on a terminal's stderr; None elsewhere."""
    from contextlib import nullcontext

    if not err.is_terminal or err.quiet:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class PagesPerMinute(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed * 60:.1f} pages/min" if task.speed else "– pages/min")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pages · {task.fields[records]} answers"),
        PagesPerMinute(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err.console,
    )


def summary(answers: int, errors: int, output) -> str:
    """The run's last line: "2 answers, 1 error → out.jsonl"."""
    return f"{answers} answer{'s' * (answers != 1)}, {errors} error{'s' * (errors != 1)} → {output}"
