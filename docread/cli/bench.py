"""`docread bench`: quality benchmarks (EntityGrid-QA, document-QA metrics) and speed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from docread.bench.registry import NAMES as _NAMES  # pure Python tables: cheap at start-up
from docread.cli.options import (
    Adapter,
    Device,
    Json,
    MaxNewTokens,
    MaxSlices,
    Model,
    Offline,
    Quant,
    View,
    load_reader,
    stderr_console,
)
from docread.errors import EXIT_FAILED, EXIT_OK, UsageError

app = typer.Typer(help="Benchmarks: EntityGrid-QA, document-QA metrics, speed, throughput.", no_args_is_help=True)

# -- options of the benchmark runs -----------------------------------------------------------
Output = Annotated[Path, typer.Option("--output", "-o", help="Predictions file (JSON Lines), appended as it goes.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="Ask only the first N questions.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run: skip ids already in the output.")]
Split = Annotated[
    Optional[str],
    typer.Option("--split", help="Which split to score (default: the published one; the README lists each dataset's)."),
]
McParser = Annotated[
    str,
    typer.Option(
        "--mc-parser",
        help="How a generated multiple-choice answer is read: llava (LLaVA's eval_science_qa.py) | "
        "vlmevalkit (VLMEvalKit's can_infer: (B), Option C, the option's text).",
    ),
]


def _answer_pending(items, output: Path, resume: bool, err, load, run) -> int:
    """Ask the items (questions with an `id`) that `output` does not hold yet: `run(reader, pending,
    log)` yields records; the model is loaded only if something is left. Returns how many failed."""
    from docread.bench.runner import prediction_log

    with prediction_log(output, resume=resume) as log:
        pending = [item for item in items if item.id not in log.done]
        if log.done:
            err.print(
                f"[dim]resuming: {len(items) - len(pending)} questions already answered in {escape(str(output))}[/]"
            )
        if not pending:
            return 0
        _, failed = _drive(run(load(), pending, log), len(pending), err, "asking")
        return failed


def _drive(records: Iterator[dict], total: int, err, what: str) -> tuple[int, int]:
    """Consume a run's records with a progress bar on a terminal; (answered, failed)."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    answered = failed = 0
    progress = (
        Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err)
        if err.is_terminal
        else nullcontext()
    )
    with progress:
        task = progress.add_task(what, total=total) if err.is_terminal else None
        for record in records:
            if "error" in record:
                failed += 1
                err.print(
                    f"[red]error[/] question {escape(str(record['id']))}: {escape(record['error']['message'])}",
                    soft_wrap=True,
                )
            else:
                answered += 1
            if task is not None:
                progress.advance(task)
    return answered, failed


def _count(n: int, noun: str) -> str:
    """'1 question', '2 questions'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# -- standard metrics and public benchmarks ---------------------------------------------------
_HEADLINE = ("metric", "score", "n", "missing", "malformed", "extra", "dataset", "split", "predictions", "failed")


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _render_result(result: dict, json_out: bool, **extra) -> None:
    """One line with the headline score and the counts, then the benchmark's breakdown, if any."""
    if json_out:
        sys.stdout.write(json.dumps({**extra, **result}, ensure_ascii=False) + "\n")
        return
    where = f"{extra['dataset']} ({result['split']}) " if extra.get("dataset") else ""
    headline = (
        f"{where}{result['metric']} {_figure(result['score'])} over {_count(result['n'], 'question')} "
        f"({result['missing']} missing, {result['malformed']} malformed)"
    )
    lines = [headline]
    for key, value in result.items():
        if key in _HEADLINE:
            continue
        if isinstance(value, dict):  # per split / per category
            for name, figures in value.items():
                shown = (
                    " · ".join(f"{k} {_figure(v)}" for k, v in figures.items())
                    if isinstance(figures, dict)
                    else _figure(figures)
                )
                lines.append(f"  {key.removeprefix('per_')} {name}: {shown}")
        else:
            lines.append(f"  {key} {_figure(value)}")
    sys.stdout.write("\n".join(lines) + "\n")


def _check_dataset(dataset: str):
    from docread.bench.registry import DATASETS

    if dataset not in DATASETS:
        raise UsageError(f"--dataset {dataset!r}: choose {', '.join(DATASETS)}")
    return DATASETS[dataset]


@app.command(
    "score",
    epilog="Examples: docread bench score --metric anls val_v1.0.json predictions.jsonl; "
    "docread bench score --dataset pope coco/ pope-pred.jsonl",
)
def score_command(
    gold: Annotated[
        Path,
        typer.Argument(
            help="Gold answers: an official annotation file or JSON Lines {id, answers}; "
            "with --dataset, that benchmark's release file."
        ),
    ],
    predictions: Annotated[Path, typer.Argument(help="JSON Lines {id, prediction} or an official result list.")],
    metric: Annotated[Optional[str], typer.Option("--metric", help="anls | relaxed | vqa | exact.")] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option(
            "--dataset", help=f"{_NAMES}: score as that benchmark does (its metric, its answer parsing, its breakdown)."
        ),
    ] = None,
    split: Split = None,
    mc_parser: McParser = "llava",
    json_out: Json = False,
    offline: Offline = False,
):
    """Score predictions with a metric (ANLS, relaxed accuracy, VQA accuracy, exact match) or as a benchmark."""
    from docread.bench.datasets import read_gold, read_predictions
    from docread.bench.metrics import METRICS, evaluate

    if (metric is None) == (dataset is None):
        raise UsageError("give either --metric (any gold file) or --dataset (a benchmark's release file)")
    if metric is not None and metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: choose {', '.join(METRICS)}")
    if metric is not None and split is not None:
        raise UsageError("--split goes with --dataset: with --metric, the gold file is what is scored")
    benchmark = _check_dataset(dataset) if dataset is not None else None
    _check_mc_parser(mc_parser)
    read = read_predictions(predictions)
    if benchmark is None:
        _render_result(evaluate(metric, read_gold(gold), read.answers, malformed=read.malformed).to_json(), json_out)
        return
    from docread.bench.registry import read as read_release
    from docread.bench.registry import resolve_split, score

    split = resolve_split(dataset, gold, split)
    samples = [s for s in read_release(dataset, gold, split) if s.answers]
    if not samples:
        raise UsageError(f"{gold} has no gold answers (a test split?): nothing to score")
    result = score(dataset, samples, read.answers, malformed=read.malformed, split=split, mc_parser=mc_parser)
    _render_result(result, json_out, dataset=dataset)


MC_MODES = ("generate", "likelihood")


def _check_mc_parser(mc_parser: str) -> None:
    from docread.bench.choice import MC_PARSERS

    if mc_parser not in MC_PARSERS:
        raise UsageError(f"--mc-parser {mc_parser!r}: choose {', '.join(MC_PARSERS)}")


@app.command(
    "run",
    epilog="Example: docread bench run --dataset docvqa --annotations val_v1.0.json "
    "--images docvqa/ -o docvqa-pred.jsonl",
)
def run_command(
    dataset: Annotated[str, typer.Option("--dataset", help=f"{_NAMES}.")],
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            help="The benchmark's released annotation file (see the README for which file of each release).",
        ),
    ],
    output: Output,
    images: Annotated[
        Optional[Path],
        typer.Option("--images", help="Folder holding the dataset's images (not for mmbench: its TSV holds them)."),
    ] = None,
    mc: Annotated[
        str,
        typer.Option(
            "--mc",
            help="Multiple choice (ai2d, scienceqa, mmbench): generate = LLaVA's "
            "letter prompt, the letter parsed as LLaVA's eval scripts do; likelihood = the "
            "option letter the model finds likeliest. generate | likelihood.",
        ),
    ] = "generate",
    mc_parser: McParser = "llava",
    split: Split = None,
    model: Model = None,
    adapter: Adapter = None,
    device: Device = "auto",
    quant: Quant = "auto",
    max_slices: MaxSlices = None,
    view: View = "hires",
    max_new_tokens: MaxNewTokens = 32,
    limit: Limit = None,
    resume: Resume = False,
    offline: Offline = False,
    json_out: Json = False,
):
    """Answer a public benchmark's questions with LLaVA's prompts, then score them as the benchmark does."""
    from functools import partial

    from docread.bench.datasets import read_predictions
    from docread.bench.registry import CHOICE, first_questions, prompt, resolve_split, score
    from docread.bench.registry import read as read_release
    from docread.bench.runner import run_likelihood, run_open

    benchmark = _check_dataset(dataset)
    if mc not in MC_MODES:
        raise UsageError(f"--mc {mc!r}: choose {', '.join(MC_MODES)}")
    _check_mc_parser(mc_parser)
    split = resolve_split(dataset, annotations, split)
    if not benchmark.inline_images and images is None:
        raise UsageError(f"--images: {dataset} needs the folder holding its images ({benchmark.files})")
    if images is not None and not images.is_dir():
        raise UsageError(f"--images {images}: not a folder")
    err = stderr_console()
    samples = first_questions(read_release(dataset, annotations, split), limit)
    ask = partial(prompt, benchmark)

    def run(reader, pending, log):
        if benchmark.kind == CHOICE and mc == "likelihood":
            return run_likelihood(reader, images, pending, log, prompt=ask, max_slices=max_slices, view=view)
        return run_open(
            reader, images, pending, log, prompt=ask, max_slices=max_slices, max_new_tokens=max_new_tokens, view=view
        )

    failed = _answer_pending(
        samples, output, resume, err, lambda: load_reader(model, adapter, device, quant, offline, err), run
    )
    scored = [s for s in samples if s.answers]
    if not scored:
        err.print(f"{annotations} has no gold answers (a test split?): predictions written to {output}, not scored")
    else:
        read = read_predictions(output)
        ids = {s.id for s in scored}
        answers = {key: value for key, value in read.answers.items() if key in ids}
        _render_result(
            score(dataset, scored, answers, malformed=read.malformed, split=split, mc_parser=mc_parser),
            json_out,
            dataset=dataset,
            predictions=str(output),
            failed=failed,
        )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
