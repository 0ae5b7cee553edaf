"""`docread bench throughput`: pages/s and tokens/s of batched reading at several batch sizes, `serve` under
concurrent clients, and transformers' `generate` on a padded batch; registered under `bench`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.markup import escape

from docread.bench.serveload import REQUESTS_PER_CLIENT
from docread.cli.options import Device, Json, MaxSlices, Model, Offline, Quant, stderr_console
from docread.cli.speed import Synthetic, Threads, stdout_to_stderr
from docread.generate.sizing import DEFAULT_MAX_BATCH

app = typer.Typer()

EPILOG = (
    "Example: docread bench throughput --synthetic tiny --json. Every answer decodes exactly --max-new-tokens "
    "tokens on every side (docread's EOS list is emptied; the peer's generate gets min_new_tokens), so tokens/s "
    "compare like with like. Figures are the best of --repeats passes after a warm-up."
)


@app.command("throughput", epilog=EPILOG)
def throughput(
    model: Model = None,
    synthetic: Synthetic = None,
    pages: Annotated[
        int, typer.Option("--pages", min=1, max=256, help="Synthetic letter-size PDF pages, one question each.")
    ] = 16,
    batch_sizes: Annotated[
        str,
        typer.Option(
            "--batch-sizes",
            help="Answers decoded together, comma-separated; auto: as many as half the free memory holds "
            "(KV per row from the model's config).",
        ),
    ] = "1,4,8,16,auto",
    clients: Annotated[
        str, typer.Option("--clients", help="Concurrent `serve` clients, comma-separated; none: serve not measured.")
    ] = "1,4,8,16",
    max_batch: Annotated[
        int,
        typer.Option("--max-batch", min=1, max=256, help="serve --max-batch (also measured at 1: one at a time)."),
    ] = DEFAULT_MAX_BATCH,
    requests: Annotated[
        Optional[int],
        typer.Option(
            "--requests",
            min=1,
            help=f"serve requests at each number of clients (default: --pages or {REQUESTS_PER_CLIENT} per client "
            "at the most clients, the larger).",
        ),
    ] = None,
    peer_batch: Annotated[
        int,
        typer.Option("--peer-batch", min=0, max=256, help="Pages per transformers generate call (0: no peer)."),
    ] = 8,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=2, max=1024, help="Tokens decoded per answer (EOS ignored).")
    ] = 16,
    fast: Annotated[
        bool, typer.Option("--fast/--no-fast", help="Also batch in the static cache (ask --fast's decoder).")
    ] = True,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, max=20, help="Timed passes after a warm-up; the best of them is kept.")
    ] = 1,
    max_slices: MaxSlices = None,
    threads: Threads = 1,
    device: Device = "auto",
    quant: Quant = "auto",
    json_out: Json = False,
    offline: Offline = False,
):
    """Many pages at once: batched reading, serve under concurrent clients, and transformers' generate."""
    from docread.bench.throughput import ThroughputOptions, parse_sizes, run_throughput

    options = ThroughputOptions(
        model=model,
        synthetic=synthetic,
        pages=pages,
        batch_sizes=parse_sizes(batch_sizes, "--batch-sizes", auto=True),
        clients=() if clients.strip() == "none" else parse_sizes(clients, "--clients", auto=False),
        max_batch=max_batch,
        requests=requests,
        peer_batch=peer_batch,
        max_new_tokens=max_new_tokens,
        max_slices=max_slices,
        fast=fast,
        repeats=repeats,
        threads=threads,
        device=device,
        quant=quant,
    )
    err = stderr_console()
    with stdout_to_stderr():
        result = run_throughput(options, serve_app=_serve_app, log=lambda m: err.print(f"[dim]{escape(m)}…[/]"))
    if json_out:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        render(result)


def _serve_app(reader, **options):
    from docread.serve import create_app

    return create_app(reader, **options)


def render(result: dict) -> None:
    """The batch, serve and peer tables on stdout, the ratios and the machine beneath. tok/s: file to
    answer; decode tok/s: answering pages already encoded; each by the wall clock and per CPU-second."""
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    title = (
        f"docread bench throughput · {result['model']} · {result['device_name']} · {result['dtype']} · "
        f"quant {result['quantization']} · {result['max_new_tokens']} new tokens an answer"
    )
    table = Table(title=title, title_justify="left")
    for column in ("reading", "batch", "pages/s", "tok/s", "per CPU-s", "decode tok/s", "per CPU-s"):
        table.add_column(column, justify="left" if column == "reading" else "right", no_wrap=column == "reading")
    for row in result["batch"] + result["batch_fast"]:
        size = f"{row['batch_size']}" + (" auto" if row["asked"] == "auto" else "")
        keys = ("pages_per_s", "tokens_per_s", "tokens_per_cpu_s", "decode_tokens_per_s", "decode_tokens_per_cpu_s")
        table.add_row("docread --fast" if row["fast"] else "docread", size, *_cells(row, *keys))
    if result["peer"] is not None:
        peer = result["peer"]
        cells = _cells(peer, "pages_per_s", "tokens_per_s", "tokens_per_cpu_s")
        table.add_row("generate (peer)", str(peer["batch_size"]), *cells, "—", "—")
    out.print(table)
    if result["serve"]:
        serve = Table(title=f"docread serve · {result['serve'][0]['requests']} requests a row", title_justify="left")
        for column in ("--max-batch", "clients", "requests/s", "p50 s", "p99 s", "tokens/s"):
            serve.add_column(column, justify="right")
        for row in result["serve"] + result["serve_one_at_a_time"]:
            serve.add_row(
                str(row["max_batch"]),
                str(row["clients"]),
                *_cells(row, "requests_per_s", "p50_s", "p99_s", "tokens_per_s"),
            )
        out.print(serve)
    elif result.get("serve_skipped"):
        out.print(f"serve not measured: {result['serve_skipped']}")
    shown = " · ".join(f"{k} {v}" for k, v in result["ratios"].items() if v is not None)
    if shown:  # a ratio needs both of its rows (batch 1 and 8, one client and 8, the peer)
        out.print(f"ratios: {shown}", soft_wrap=True)
    auto = result["auto"]
    if auto is not None:
        out.print(
            f"auto: {auto['batch_size']} rows ({auto['kv_bytes_per_row'] / 2**20:.1f} MiB of KV a row, "
            f"{auto['free_bytes'] / 2**30:.1f} GiB free, {auto['share']:.0%} of it for KV)",
            soft_wrap=True,
        )
    load = result["load_average"]
    out.print(
        f"[dim]{result['date']} · {result['cpu_count']} CPUs, {result['threads']} torch thread(s) · "
        f"load average {load['before'][0]} before, {load['after'][0]} after · best of {result['repeats']}[/]",
        soft_wrap=True,
    )


def _num(value) -> str:
    return (
        "—" if value is None else f"{value:,.0f}" if value >= 1000 else f"{value:.3g}" if value < 1 else f"{value:.2f}"
    )


def _cells(row: dict, *keys: str) -> list[str]:
    return [_num(row[key]) for key in keys]
