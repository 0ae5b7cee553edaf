"""Options and helpers shared by docread's commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def make_limits(max_pixels: int, timeout: float):
    from docread.intake import Limits

    return Limits(max_pixels=max_pixels, timeout_s=timeout)


def load_reader(model, adapter, device, quant, offline, err):
    from docread.api import load

    if err.is_terminal:
        with err.status(f"loading {model or 'the default model'}…"):
            return load(model, adapter=adapter, device=device, quant=quant, offline=offline or None)
    return load(model, adapter=adapter, device=device, quant=quant, offline=offline or None)
