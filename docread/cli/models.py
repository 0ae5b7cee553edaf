"""`docread models`: the presets, whether their weights are here, fetching them, where they are; the
quantized copies docread keeps in its cache, and clearing them."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from docread.cli.options import Json, Offline, stderr_console

app = typer.Typer(
    help="Model presets and their weights: list, pull, path; quantized copies: clear.", no_args_is_help=True
)
Name = Annotated[str, typer.Argument(help="A preset name (see `docread models list`) or a llava-hf hub id.")]


@app.command("list", epilog="Example: docread models list --json")
def list_models(json_out: Json = False, offline: Offline = False):
    """The presets in models/, their base checkpoints, whether the weights are cached, and the quantized
    copies in docread's cache (4-bit bases saved after their first load)."""
    from docread.model import qcache
    from docread.model.presets import DEFAULT_MODEL, list_presets
    from docread.model.weights import cached_folder

    rows = []
    for preset in list_presets():
        folder = cached_folder(preset.base)
        rows.append(
            {
                "kind": "preset",
                "name": preset.name,
                "base": preset.base,
                "default": preset.name == DEFAULT_MODEL,
                "cached": folder is not None,
                "path": str(folder) if folder else None,
                "description": preset.description,
            }
        )
    copies = [
        {"kind": "quantized", "name": e.name, "base": e.base, "key": e.key, "size": e.size, "path": str(e.path)}
        for e in qcache.entries()
    ]
    if json_out:
        for row in rows + copies:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("preset", "base checkpoint", "cached", "notes")
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        table.add_row(name, row["base"], "yes" if row["cached"] else "no", row["description"])
    console = Console(highlight=False)
    console.print(table)
    if copies:
        cached = Table(
            "quantized copy", "base", "size", "key", title=f"quantized copies in {qcache.root()}", title_justify="left"
        )
        for row in copies:
            cached.add_row(row["name"], row["base"], f"{row['size'] / 2**20:,.1f} MiB", row["key"])
        console.print(cached)


@app.command(epilog="Example: docread models pull llava-1.6-vicuna-7b")
def pull(name: Name, offline: Offline = False):
    """Download a preset's weights (safetensors only) into the standard HF cache, for offline use."""
    from docread.model.presets import resolve_preset
    from docread.model.weights import resolve_weights

    preset = resolve_preset(name)
    err = stderr_console()
    with err.status(f"fetching {preset.base}…") if err.is_terminal else _null():
        folder = resolve_weights(preset.base, offline=offline or None)
    sys.stdout.write(f"{folder}\n")


@app.command(epilog="Example: ls $(docread models path llava-1.5-7b)")
def path(name: Name, offline: Offline = False):
    """Print the local folder holding a preset's weights (exit 1 if they are not here)."""
    from docread.errors import DocreadError
    from docread.model.presets import resolve_preset
    from docread.model.weights import cached_folder

    preset = resolve_preset(name)
    folder = cached_folder(preset.base)
    if folder is None:
        raise DocreadError("weights_missing", f"{preset.base} is not in the HF cache: run `docread models pull {name}`")
    sys.stdout.write(f"{folder}\n")


@app.command(epilog="Examples: docread models clear; docread models clear llava-v1.6-vicuna-7b-hf-4bit-")
def clear(
    name: Annotated[
        Optional[str],
        typer.Argument(
            help="A quantized copy's name (or its start), as `docread models list` shows it; none: all of them."
        ),
    ] = None,
    offline: Offline = False,
):
    """Remove quantized copies from docread's cache (the next 4-bit load of their base rebuilds one)."""
    from docread.errors import DocreadError
    from docread.model import qcache

    removed = qcache.clear(name)
    if name is not None and not removed:
        raise DocreadError("not_found", f"no quantized copy named {name!r}: see `docread models list`")
    for entry in removed:
        sys.stdout.write(f"removed {entry}\n")
    if not removed:
        stderr_console().print("no quantized copies to remove")


def _null():
    from contextlib import nullcontext

    return nullcontext()
