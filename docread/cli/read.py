"""Reading commands: `inspect` (how a page is sliced) and `ask` (answer questions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.options import (Dpi, Json, MaxPixels, MaxSlices, Model, Pages, Password, Timeout, load_reader,
                                  make_limits, stderr_console)
from docread.errors import EXIT_FAILED, EXIT_OK, UsageError

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
@app.command(epilog='Example: docread ask invoice.pdf "What is the total amount?" --json')
def ask(
    file: Annotated[str, typer.Argument(help="A PDF or image; - reads stdin.")],
    question: Annotated[str, typer.Argument(help="The question to ask about the page.")],
    model: Model = None,
    adapter: Annotated[Optional[Path], typer.Option("--adapter", help="Trained HiRes parts: a .safetensors file or a folder.")] = None,
    pages: Pages = None,
    max_slices: MaxSlices = None,
    dpi: Dpi = 200.0,
    password: Password = None,
    quant: Annotated[str, typer.Option("--quant", help="auto (4-bit NF4 on CUDA, none on CPU) | none | 8bit | 4bit.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = "auto",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=4096, help="Longest answer, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=5.0, help="0 = greedy (default).")] = 0.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (with --temperature > 0).")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network (as HF_HUB_OFFLINE=1).")] = False,
    json_out: Json = False,
):
    """Answer a question about a page of a PDF or image, streaming the answer."""
    if quant not in ("auto", "none", "8bit", "4bit"):
        raise UsageError(f"--quant {quant!r}: choose auto, none, 8bit or 4bit")
    from docread.intake import open_document

    err = stderr_console()
    with open_document(file, pages=pages, password=password, dpi=dpi) as document:
        selected = document.pages[0]
        if len(document.pages) > 1 or (pages is None and document.page_count > 1):
            err.print(f"[dim]asking page {selected.number} of {document.page_count}; choose another with --pages[/]")
        reader = load_reader(model, adapter, device, quant, offline, err)
        stream = reader.stream_image(lambda w, h: document.render(selected, w, h), selected.width, selected.height,
                                     question, file=file, page=selected.number, max_slices=max_slices,
                                     max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        plan = stream.page_plan
        if plan.reduced:
            err.print(f"[yellow]page {selected.number}: --max-slices {plan.requested_slices} reduced to "
                      f"{plan.max_slices} so the page fits the model's {reader.context}-token context[/]")
        live = not json_out
        for chunk in stream:
            if live:
                sys.stdout.write(chunk)
                sys.stdout.flush()
    answer = stream.answer
    if json_out:
        sys.stdout.write(json.dumps(answer.to_json(), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("\n")
        score = "n/a" if answer.score is None else f"{answer.score:.3f}"
        err.print(f"[dim]page {answer.page} · score {score} · {answer.rows}x{answer.cols} tiles · "
                  f"{answer.visual_tokens} visual tokens · {sum(answer.timing_ms.values()) / 1000:.1f} s[/]")


