"""`docread models`: the presets, whether their weights are here, fetching them, where they are."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from docread.cli.options import Json, Offline, stderr_console

app = typer.Typer(help="Model presets and their weights: list, pull, path.", no_args_is_help=True)
Name = Annotated[str, typer.Argument(help="A preset name (see `docread models list`) or a llava-hf hub id.")]


@app.command("list", epilog="Example: docread models list --json")
def list_models(json_out: Json = False, offline: Offline = False):
    """The presets in models/, their base checkpoints, and whether the weights are cached."""
    from docread.presets import DEFAULT_MODEL, list_presets
    from docread.weights import cached_folder

    rows = []
    for preset in list_presets():
        folder = cached_folder(preset.base)
        rows.append({"name": preset.name, "base": preset.base, "default": preset.name == DEFAULT_MODEL,
                     "cached": folder is not None, "path": str(folder) if folder else None,
                     "description": preset.description})
    if json_out:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("preset", "base checkpoint", "cached", "notes")
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        table.add_row(name, row["base"], "yes" if row["cached"] else "no", row["description"])
    Console(highlight=False).print(table)


@app.command(epilog="Example: docread models pull llava-1.6-vicuna-7b")
def pull(name: Name, offline: Offline = False):
    """Download a preset's weights (safetensors only) into the standard HF cache, for offline use."""
    from docread.presets import resolve_preset
    from docread.weights import resolve_weights

    preset = resolve_preset(name)
    err = stderr_console()
    with err.status(f"fetching {preset.base}…") if err.is_terminal else _null():
        folder = resolve_weights(preset.base, offline=offline or None)
    sys.stdout.write(f"{folder}\n")


@app.command(epilog="Example: ls $(docread models path llava-1.5-7b)")
def path(name: Name, offline: Offline = False):
    """Print the local folder holding a preset's weights (exit 1 if they are not here)."""
    from docread.errors import DocreadError
    from docread.presets import resolve_preset
    from docread.weights import cached_folder

    preset = resolve_preset(name)
    folder = cached_folder(preset.base)
    if folder is None:
        raise DocreadError("weights_missing", f"{preset.base} is not in the HF cache: run `docread models pull {name}`")
    sys.stdout.write(f"{folder}\n")


def _null():
    from contextlib import nullcontext

    return nullcontext()
