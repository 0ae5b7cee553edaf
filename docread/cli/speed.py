"""`docread bench speed` (docread against transformers' LLaVA-NeXT, stage by stage) and `docread bench load`
(cold start, phase by phase); registered under `bench`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Optional

import typer
from rich.markup import escape

from docread.cli.options import Device, Dpi, Json, MaxSlices, Model, Offline, Quant, View, stderr_console
from docread.intake.limits import DEFAULT_DPI

app = typer.Typer()

Synthetic = Annotated[
    Optional[str],
    typer.Option(
        "--synthetic",
        help="Random weights, no download: tiny (CPU-sized) "
        "or real (CLIP-L/14-336 + Vicuna-7B shapes, built in memory; 4-bit on CUDA).",
    ),
]
PageCount = Annotated[int, typer.Option("--pages", min=1, max=64, help="Synthetic letter-size PDF pages to read.")]
Questions = Annotated[
    int,
    typer.Option(
        "--questions",
        min=1,
        max=32,
        help="Questions per page: the first is timed from the file, the rest reuse the encoded page.",
    ),
]
Repeats = Annotated[int, typer.Option("--repeats", min=1, max=100, help="Timed runs after one warm-up (medians).")]
MaxNewTokens = Annotated[
    int, typer.Option("--max-new-tokens", min=2, max=1024, help="Tokens decoded per answer (EOS ignored).")
]
Threads = Annotated[
    int,
    typer.Option(
        "--threads",
        min=0,
        max=1024,
        help="torch CPU threads (0 = torch's default). Small models decode fastest on one.",
    ),
]

ROWS = (  # (label, key in stages_ms or in the side, unit)
    ("render", "render", "ms"),
    ("slice + normalise", "slice_normalise", "ms"),
    ("vision (all views)", "vision", "ms"),
    ("  of which SRA", "vision_sra", "ms"),
    ("  of which sampler", "vision_sampler", "ms"),
    ("prefill", "prefill", "ms"),
    ("time to first token", "ttft", "ms"),
    ("further question, first token", "followup_ttft", "ms"),
    ("decode", "decode_ms_per_token", "ms/token"),
    ("intake per view", "intake_ms_per_view", "ms"),
    ("peak memory", "peak_memory_mb", "MiB"),
    ("views (global + tiles)", "views", ""),
    ("visual tokens", "visual_tokens", ""),
    ("pixels seen", "pixels", ""),
    ("effective dpi", "effective_dpi", ""),
)


@app.command("speed", epilog="Example: docread bench speed --synthetic tiny --pages 2 --questions 3 --json")
def speed(
    model: Model = None,
    synthetic: Synthetic = None,
    pages: PageCount = 2,
    questions: Questions = 3,
    repeats: Repeats = 3,
    max_new_tokens: MaxNewTokens = 32,
    max_slices: MaxSlices = None,
    dpi: Dpi = DEFAULT_DPI,
    threads: Threads = 1,
    device: Device = "auto",
    quant: Quant = "auto",
    view: View = "hires",
    json_out: Json = False,
    offline: Offline = False,
):
    """Time docread and transformers' LLaVA-NeXT side by side on the same pages and weights."""
    from docread.bench.speed import SpeedOptions, run_speed

    options = SpeedOptions(
        model=model,
        synthetic=synthetic,
        pages=pages,
        questions=questions,
        repeats=repeats,
        max_new_tokens=max_new_tokens,
        max_slices=max_slices,
        dpi=dpi,
        threads=threads,
        device=device,
        quant=quant,
        view=view,
    )
    err = stderr_console()
    with stdout_to_stderr():
        result = run_speed(options, log=lambda message: err.print(f"[dim]{message}…[/]"))
    if json_out:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        render_table(result)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr while the benchmark runs, so stdout carries only the result.

    Native code writes to fd 1 behind Python's back: the tokenizers BPE trainer that builds the
    synthetic model's tokenizer prints its progress there (three blank lines when not on a
    terminal), which broke `--json | jq`. Redirecting the descriptor catches any such library.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def render_table(result: dict) -> None:
    """The side-by-side table on stdout, with the machine, the fast path and start-up beneath."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"docread bench speed · {result['model']} · {result['device_name']} · {result['dtype']} · "
        f"quant {result['quantization']} · {result['threads']} thread(s)"
    )
    for column in ("stage", "docread", "LLaVA-NeXT (transformers)", "docread / baseline"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    ours, theirs = result["docread"], result["baseline"]
    for label, key, unit in ROWS:
        a, b = _figure(ours, key), _figure(theirs, key)
        table.add_row(label + (f" ({unit})" if unit else ""), _fmt(a), _fmt(b), _fmt(result["ratios"].get(key), 3))
    fast, startup, versions = ours["fast"], result["startup"], result["versions"]
    out = Console(highlight=False)
    out.print(table)
    out.print(
        f"grid: docread {ours['grid']} tiles, baseline {theirs['grid']}; decode: docread "
        f"{_fmt(ours['decode_tokens_per_s'])} tok/s, fast {_fmt(fast['tokens_per_s'])} tok/s "
        f"({'compiled' if fast['compiled'] else 'static cache, not compiled'}; x{fast['speedup_vs_plain']} "
        f"over plain, same tokens: {fast['same_tokens']}), baseline {_fmt(theirs['decode_tokens_per_s'])} tok/s",
        soft_wrap=True,
    )
    out.print(
        f"intake (render + slice + normalise) per view: {result['intake_speedup']}x faster than "
        f"LlavaNextImageProcessorPil; `docread --help` {startup['docread_help_ms']} ms vs `import torch` "
        f"{startup['import_torch_ms']} ms ({startup['ratio']})",
        soft_wrap=True,
    )
    out.print(
        f"[dim]{result['date']} · torch {versions['torch']} · transformers {versions['transformers']} · "
        f"bitsandbytes {versions['bitsandbytes']} · peak memory as {ours['memory']} · medians of "
        f"{result['repeats']} after a warm-up[/]",
        soft_wrap=True,
    )


def _figure(side: dict, key: str):
    return side["stages_ms"][key] if key in side["stages_ms"] else side.get(key)


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or (isinstance(value, float) and value >= 1000):
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


LOAD_ROWS = (
    ("interpreter start", "interpreter_s"),
    ("import torch", "import_torch_s"),
    ("import transformers + docread", "import_transformers_s"),
    ("import bitsandbytes", "import_bitsandbytes_s"),
    ("read weights", "read_weights_s"),
    ("quantize", "quantize_s"),
    ("move to device", "to_device_s"),
    ("write quantized copy", "save_s"),
    ("tokenizer + docread modules", "wire_up_s"),
    ("ready (since process start)", "ready_s"),
    ("first token", "first_token_s"),
    ("total", "total_s"),
)


@app.command("load", epilog="Example: docread bench load --model ./llava-real --quant 4bit --json")
def load_command(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="A preset, hub id or local llava-hf folder (for real shapes "
            "without a download: python -m docread.testing write-real DIR).",
        ),
    ],
    device: Device = "auto",
    quant: Quant = "auto",
    runs: Annotated[
        int,
        typer.Option(
            "--runs",
            min=1,
            max=10,
            help="Loads, each in a fresh process; the first rebuilds docread's quantized copy, the others read it.",
        ),
    ] = 2,
    json_out: Json = False,
    offline: Offline = False,
):
    """Cold start, phase by phase: imports, reading, quantizing, moving, first token (seconds from process start)."""
    from docread.bench.load import run_load_bench

    err = stderr_console()
    result = run_load_bench(
        model, device=device, quant=quant, runs=runs, log=lambda message: err.print(f"[dim]{escape(message)}[/]")
    )
    if json_out:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "phase",
        *(f"{r['run']} (s)" for r in result["runs"]),
        title=f"load {result['model']} · {result['device']} · {result['quant']}",
        title_justify="left",
    )
    for label, key in LOAD_ROWS:
        table.add_row(label, *(_seconds(r.get(key)) for r in result["runs"]))
    table.add_row("quantized copy", *(str(r.get("qcache")) for r in result["runs"]))
    Console(highlight=False).print(table)
    if result["cached_vs_first"] is not None:
        sys.stdout.write(
            f"cached load / first load: {result['cached_vs_first']:.2f}x to ready "
            f"({result['cached_vs_first_without_save']:.2f}x without writing the copy), "
            f"{result['cached_vs_first_to_first_token']:.2f}x to the first token\n"
        )


def _seconds(value) -> str:
    return "–" if value is None else f"{value:.2f}"
