"""`docread bench entitygrid`: generate the synthetic EntityGrid-QA benchmark, answer it, score it;
registered under `bench` (docread/cli/__init__.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.bench import Limit, Output, Resume, _answer_pending, _count
from docread.cli.options import (
    Adapter,
    Device,
    Json,
    MaxSlices,
    Model,
    Offline,
    Quant,
    View,
    load_reader,
    stderr_console,
)
from docread.errors import EXIT_FAILED, EXIT_OK

app = typer.Typer(help="EntityGrid-QA: does the model understand what tile borders cut through?", no_args_is_help=True)


# -- entitygrid -----------------------------------------------------------------------------
@app.command("generate", epilog="Example: docread bench entitygrid generate --out eg --n 1080 --seed 0")
def entitygrid_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write questions.jsonl and images/ into.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of questions (tasks take turns).")] = 1080,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, byte-identical output.")] = 0,
    size: Annotated[
        int, typer.Option("--size", min=24, help="S: canvases are 2S x 2S, so slicing gives 2 x 2 tiles.")
    ] = 336,
    offline: Offline = False,
):
    """Write a synthetic EntityGrid-QA benchmark: images and multiple-choice questions."""
    from docread.bench.entitygrid import generate

    err = stderr_console()
    questions = generate(out, n=n, seed=seed, size=size)
    if err.is_terminal:
        from rich.progress import track

        questions = track(questions, total=n, description="drawing", console=err)
    tasks: dict[str, int] = {}
    for question in questions:
        tasks[question.task] = tasks.get(question.task, 0) + 1
    split = ", ".join(f"{count} {task}" for task, count in tasks.items())
    sys.stdout.write(f"wrote {n} questions ({split}) and their {2 * size}x{2 * size} images to {out}\n")


@app.command("run", epilog="Example: docread bench entitygrid run eg -o eg-pred.jsonl --model llava-1.5-7b")
def entitygrid_run(
    directory: Annotated[Path, typer.Argument(help="A folder made by `generate`.")],
    output: Output,
    model: Model = None,
    adapter: Adapter = None,
    device: Device = "auto",
    quant: Quant = "auto",
    max_slices: MaxSlices = None,
    view: View = "hires",
    limit: Limit = None,
    resume: Resume = False,
    offline: Offline = False,
):
    """Ask every question as a multiple-choice prompt; write {id, prediction} lines."""
    from docread.bench.entitygrid import read_questions
    from docread.bench.runner import run_entitygrid

    err = stderr_console()
    questions = read_questions(directory)[:limit]
    failed = _answer_pending(
        questions,
        output,
        resume,
        err,
        lambda: load_reader(model, adapter, device, quant, offline, err),
        lambda reader, pending, log: run_entitygrid(reader, directory, pending, log, max_slices=max_slices, view=view),
    )
    err.print(
        f"{len(questions) - failed} of {len(questions)} questions answered in {output}; "
        f"score them with: docread bench entitygrid score {directory} {output}",
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _grid_table(result, title: str):
    from rich.table import Table

    from docread.bench.entitygrid import CELLS, CENTER_CELLS, TASKS

    table = Table(title=title, title_justify="left")
    for column in ("cell", "kind", *TASKS, "a_i"):
        table.add_column(column, justify="left" if column in ("cell", "kind") else "right")
    for cell in CELLS:
        key = str(cell)
        table.add_row(
            key,
            "center" if cell in CENTER_CELLS else "edge",
            *(_percent(result.per_task_cell[t][key]) for t in TASKS),
            _percent(result.per_cell[key]),
        )
    table.add_row(
        "all", "", *(_percent(result.per_task[t]) for t in TASKS), _percent(result.accuracy), end_section=True
    )
    summary = (
        f"accuracy {_percent(result.accuracy)} · center {_percent(result.accuracy_center)} · "
        f"edge {_percent(result.accuracy_edge)} · discrepancy {_percent(result.discrepancy)} points · "
        f"n={result.n} (accuracies in %)"
    )
    return table, summary


@app.command("score", epilog="Example: docread bench entitygrid score eg eg-pred.jsonl --heatmap eg.png")
def entitygrid_score(
    directory: Annotated[Path, typer.Argument(help="A folder made by `generate`.")],
    predictions: Annotated[Path, typer.Argument(help="The predictions of `run` (JSON Lines {id, prediction}).")],
    json_out: Json = False,
    heatmap: Annotated[Optional[Path], typer.Option("--heatmap", help="Write a 3x3 accuracy heat map (PNG).")] = None,
    offline: Offline = False,
):
    """Accuracy per cell, task, center and edge cells, and their discrepancy."""
    from rich.console import Console

    from docread.bench.datasets import read_predictions
    from docread.bench.entitygrid import read_questions, render_heatmap, score

    questions = read_questions(directory)
    read = read_predictions(predictions)
    result = score(questions, read.answers, unreadable=read.malformed)
    if heatmap is not None:
        render_heatmap(result, heatmap, title=f"EntityGrid-QA · {predictions.name}")
    problems = [
        text
        for count, text in (
            (result.missing, _count(result.missing, "question") + " without a prediction"),
            (result.malformed, _count(result.malformed, "malformed prediction")),
        )
        if count
    ]
    if problems:
        stderr_console().print(f"[yellow]{', '.join(problems)}: counted wrong[/]")
    if json_out:
        sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    else:
        table, summary = _grid_table(result, f"EntityGrid-QA: {predictions}")
        out = Console(highlight=False)
        out.print(table)
        out.print(summary, soft_wrap=True)
