"""Options and helpers shared by docread's commands, declared once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.model.weights import Quant as QuantChoice
from docread.settings import Task as TaskChoice
from docread.settings import TextMode as TextChoice
from docread.settings import TextPrompt as TextPromptChoice
from docread.settings import View as ViewChoice


def _check_pages(value: Optional[str]) -> Optional[str]:
    """A malformed --pages fails at once (exit 2), before any file is read or model loaded."""
    if value is None:
        return value
    from docread.errors import UsageError
    from docread.intake import validate_pages_spec

    try:
        validate_pages_spec(value)
    except UsageError as e:
        raise typer.BadParameter(e.message) from None
    return value


def _go_offline(value: bool) -> bool:
    """--offline: set before any Hugging Face library is imported, which reads it once."""
    if value:
        os.environ["HF_HUB_OFFLINE"] = "1"
    return value


# -- shared options, declared once ---------------------------------------------------------
Pages = Annotated[
    Optional[str],
    typer.Option("--pages", "-p", callback=_check_pages, help="Pages to read: 1,3-5,-1 (1-based; -1 = last)."),
]
MaxSlices = Annotated[
    Optional[int],
    typer.Option(
        "--max-slices",
        "-n",
        min=0,
        max=64,
        help="Most tiles per page besides the global view (default: the model's, 16; 0 = global view only).",
    ),
]
Dpi = Annotated[float, typer.Option("--dpi", min=10, max=1200, help="Nominal PDF resolution the grid is planned at.")]
Password = Annotated[
    Optional[str], typer.Option("--password", help="Password of encrypted PDFs.", envvar="DOCREAD_PASSWORD")
]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout (JSON).")]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        envvar="DOCREAD_MODEL",
        help="Preset name (see models/), llava-hf hub id, or local llava-hf directory.",
    ),
]
MaxPixels = Annotated[
    int, typer.Option("--max-pixels", min=1, help="Refuse pages larger than this many pixels (decompression bombs).")
]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds one file may take to open and render.")]


def stderr_console(quiet: bool = False):
    """A Rich console on stderr: colour only on a terminal (and never with NO_COLOR), no hard wrapping."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, quiet=quiet, soft_wrap=True)


def diagnostics(quiet: bool = False):
    """A command's stderr: notes and warnings (none with --quiet), errors (always), user text never markup."""
    from docread.cli.output import Diagnostics

    return Diagnostics(quiet)


def make_limits(max_pixels: int, timeout: float):
    from docread.intake import Limits

    return Limits(max_pixels=max_pixels, timeout_s=timeout)


def load_reader(model, adapter, device, quant, offline, err):
    from docread.loading import load

    with err.status(f"loading {model or 'the default model'}…"):
        return load(model, adapter=adapter, device=device, quant=quant, offline=offline or None)


# -- model and generation options (ask, ocr, batch, bench) ----------------------------------
Adapter = Annotated[
    Optional[Path], typer.Option("--adapter", help="Trained HiRes parts: a .safetensors file or a folder.")
]
Quant = Annotated[QuantChoice, typer.Option("--quant", help="auto = 4-bit NF4 on CUDA, none on a CPU.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", min=1, max=4096, help="Longest answer, in tokens.")]
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, max=5.0, help="0 = greedy (default).")]
Seed = Annotated[
    Optional[int], typer.Option("--seed", min=0, max=2**64 - 1, help="Sampling seed (with --temperature > 0).")
]  # torch.manual_seed's range
Offline = Annotated[
    bool, typer.Option("--offline", callback=_go_offline, help="Never touch the network (as HF_HUB_OFFLINE=1).")
]
Task = Annotated[TaskChoice, typer.Option("--task", "-t", help="Prompt preset: qa (document QA), chart, ocr.")]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress, notes or warnings on stderr; errors still show.")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr: grid, tokens, timings.")]
View = Annotated[
    ViewChoice,
    typer.Option(
        "--view",
        help="hires = docread's tiles (up to 16 + a global view); native = exactly the base checkpoint's own "
        "image handling (LLaVA-NeXT's AnyRes, LLaVA-1.5's single view), proven equal to transformers.",
    ),
]
Fast = Annotated[bool, typer.Option("--fast", help="Compiled decoder with a static KV cache (CUDA; same answers).")]


# -- a warm server instead of a local model (ask --server) ----------------------------------------
Server = Annotated[
    Optional[str],
    typer.Option(
        "--server",
        envvar="DOCREAD_SERVER",
        help="URL of a `docread serve` (http://127.0.0.1:8321): the file is uploaded, no model loads here.",
    ),
]
ApiKey = Annotated[
    Optional[str], typer.Option("--api-key", envvar="DOCREAD_API_KEY", help="The server's API key (with --server).")
]


# -- page text (evidence, locate, --pages auto) ------------------------------------------------
TextOption = Annotated[
    TextChoice,
    typer.Option(
        "--text",
        help="Page text for evidence and locate: auto = the PDF's text layer, else OCR when the ocr extra is "
        "installed; layer; ocr; off.",
    ),
]


def _check_ask_pages(value: Optional[str]) -> Optional[str]:
    """--pages as `ask` takes it: a page list, or `auto` (ranked by the question)."""
    from docread.settings import AUTO_PAGES

    return value if value == AUTO_PAGES else _check_pages(value)


AskPages = Annotated[
    Optional[str],
    typer.Option(
        "--pages",
        "-p",
        callback=_check_ask_pages,
        help="Pages to read: 1,3-5,-1 (1-based; -1 = last), or auto: the --top-pages pages whose text "
        "best matches each question (BM25; pages without text are read as without --pages).",
    ),
]
TopPages = Annotated[
    int, typer.Option("--top-pages", min=1, max=100, help="Pages read per question with --pages auto.")
]
TextPromptOption = Annotated[
    TextPromptChoice,
    typer.Option(
        "--text-prompt",
        help="Give the model the page's text after the image: auto = a PDF's own text layer in the "
        "hires view; on = any page text (layer or OCR), any view; off = the image alone.",
    ),
]
TextTokens = Annotated[
    int,
    typer.Option(
        "--text-tokens",
        min=1,
        max=8192,
        help="Most tokens of page text in a prompt (a longer text is cut, and records say so).",
    ),
]
