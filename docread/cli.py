"""The `docread` command line: each command validates, calls the library, renders.

Answers and JSON go to stdout; progress and diagnostics to stderr. Known failures are
one `error:` line and an exit code (0 ok, 1 something failed, 2 usage); `--debug`
shows tracebacks. torch and transformers load only inside commands that run a model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from docread import __version__
from docread.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DocreadError, UsageError

app = typer.Typer(
    name="docread",
    help="Ask questions of PDFs and images, locally, with HiRes-LLaVA.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- shared options, declared once ---------------------------------------------------------
Pages = Annotated[Optional[str], typer.Option("--pages", "-p", help="Pages to read: 1,3-5,-1 (1-based; -1 = last).")]
MaxSlices = Annotated[Optional[int], typer.Option("--max-slices", "-n", min=0, max=64,
                      help="Most tiles per page besides the global view (default: the model's, 16; 0 = global view only).")]
Dpi = Annotated[float, typer.Option("--dpi", min=10, max=1200, help="Nominal PDF resolution the grid is planned at.")]
Password = Annotated[Optional[str], typer.Option("--password", help="Password of encrypted PDFs.", envvar="DOCREAD_PASSWORD")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout (JSON).")]
Model = Annotated[Optional[str], typer.Option("--model", "-m", envvar="DOCREAD_MODEL",
                  help="Preset name (see models/), llava-hf hub id, or local llava-hf directory.")]
MaxPixels = Annotated[int, typer.Option("--max-pixels", min=1, help="Refuse pages larger than this many pixels (decompression bombs).")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds one file may take to open and render.")]


def _version(value: bool):
    if value:
        typer.echo(f"docread {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", envvar="DOCREAD_DEBUG", help="Show tracebacks of unexpected errors.")] = False,
):
    """Ask questions of PDFs and images, locally, with HiRes-LLaVA."""
    if debug:
        os.environ["DOCREAD_DEBUG"] = "1"


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _limits(max_pixels: int, timeout: float):
    from docread.intake import Limits

    return Limits(max_pixels=max_pixels, timeout_s=timeout)


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
                            limits=_limits(max_pixels, timeout), preview=preview)
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

    err = _stderr()
    with open_document(file, pages=pages, password=password, dpi=dpi) as document:
        selected = document.pages[0]
        if len(document.pages) > 1 or (pages is None and document.page_count > 1):
            err.print(f"[dim]asking page {selected.number} of {document.page_count}; choose another with --pages[/]")
        reader = _load(model, adapter, device, quant, offline, err)
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


def _load(model, adapter, device, quant, offline, err):
    from docread.api import load

    if err.is_terminal:
        with err.status(f"loading {model or 'the default model'}…"):
            return load(model, adapter=adapter, device=device, quant=quant, offline=offline or None)
    return load(model, adapter=adapter, device=device, quant=quant, offline=offline or None)


def main() -> None:
    """Console entry point: run the app, turning known errors into one line and an exit code."""
    try:
        app()
    except DocreadError as e:
        if os.environ.get("DOCREAD_DEBUG"):
            raise
        sys.stderr.write(f"error: {e.message}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:  # `docread ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)


__all__ = ["app", "main", "EXIT_USAGE"]
