"""`docread inspect`: how each page of each file would be sliced, as a table or JSON Lines; no model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.options import (
    Json,
    MaxPixels,
    Model,
    Offline,
    Timeout,
    diagnostics,
    make_limits,
    read_options,
)
from docread.cli.output import write_json
from docread.errors import EXIT_FAILED, EXIT_OK
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from docread.settings import TASK_FIELDS, Settings

app = typer.Typer()


@app.command(epilog="Example: docread inspect invoice.pdf --pages 1-2 --preview grid.png")
@read_options(only=TASK_FIELDS["inspect"])
def inspect(
    paths: Annotated[list[str], typer.Argument(help="PDFs, images or folders (walked recursively); - reads stdin.")],
    model: Model = None,
    json_out: Json = False,
    preview: Annotated[
        Optional[Path], typer.Option("--preview", help="Write the tile-grid picture: a .png for one page, or a folder.")
    ] = None,
    offline: Offline = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    *,
    settings: Settings,
):
    """Show how each page is sliced: size, tile grid, visual tokens. Loads no model. Every file gets a
    record (an error record when it cannot be read); exit 1 if any failed."""
    from docread.inspection import inspect_paths
    from docread.model.presets import resolve_preset

    preset = resolve_preset(model)
    records = inspect_paths(
        paths,
        preset=preset,
        pages=settings.pages,
        max_slices=settings.max_slices,
        dpi=settings.dpi,
        password=settings.password,
        limits=make_limits(max_pixels, timeout),
        preview=preview,
        on_warning=diagnostics().warn,
        view=settings.view,
    )
    if json_out:
        failed = False
        for record in records:
            failed |= "error" in record
            write_json(record)
    else:
        title = (
            f"native view of {preset.name}"
            if settings.view == "native"
            else f"slicing for {preset.name} (S={preset.size}, k={preset.k})"
        )
        failed = _render_table(records, title)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _render_table(records: Iterator[dict], title: str) -> bool:
    """Page records as a table on stdout, errors as lines on stderr as they come; True when any failed."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from docread.cli.output import safe_text

    err = diagnostics()
    table = Table(title=title, title_justify="left")
    for column, justify in [
        ("file", "left"),
        ("page", "right"),
        ("rendered", "right"),
        ("grid", "right"),
        ("tiles", "right"),
        ("visual tokens", "right"),
        ("dpi", "right"),
    ]:
        table.add_column(column, justify=justify, overflow="fold")
    failed = False
    for r in records:
        if "error" in r:
            failed = True
            message = r["error"]["message"]
            if r["file"] is not None and str(r["file"]) not in message:  # most messages name their file already
                message = f"{r['file']}" + (f" page {r['page']}" if r.get("page") else "") + f": {message}"
            err.error(message)
            continue
        table.add_row(
            Text(safe_text(r["file"])),
            str(r["page"]),
            f"{r['width']}x{r['height']}",
            f"{r['rows']}x{r['cols']}",
            str(r["tiles"]),
            f"{r['visual_tokens']} (+{r['separator_tokens']} sep)",
            "" if r["dpi"] is None else f"{r['dpi']:g}",
        )
    if table.row_count:
        Console(highlight=False).print(table)
    return failed
