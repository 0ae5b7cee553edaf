"""`docread extract FILE... --field NAME[:TYPE] | --schema S.json`: typed fields, one JSON object per
document, a thin loop over `docread.extract.extract_document`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.options import (
    Adapter,
    ApiKey,
    Device,
    MaxPixels,
    Model,
    Offline,
    Quant,
    Quiet,
    Server,
    Timeout,
    choose_reader,
    diagnostics,
    make_limits,
    read_options,
)
from docread.cli.output import write_json
from docread.errors import EXIT_FAILED, EXIT_OK, DocreadError, UsageError
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from docread.settings import EXTRACT_DEFAULTS, TASK_FIELDS, Settings

app = typer.Typer()


@app.command(
    epilog="Examples:\n\n  docread extract invoice.pdf --field total:number --field due_date:date\n\n"
    "  docread extract invoices/*.pdf --schema invoice.schema.json -o fields.jsonl"
)
@read_options(only=TASK_FIELDS["extract"], defaults=EXTRACT_DEFAULTS)
def extract(
    files: Annotated[list[str], typer.Argument(metavar="FILE...", help="PDFs or images.")],
    field: Annotated[
        Optional[list[str]],
        typer.Option(
            "--field", "-f", help="NAME[:TYPE], TYPE one of string, number, integer, date, boolean; repeatable."
        ),
    ] = None,
    schema: Annotated[
        Optional[Path],
        typer.Option(
            "--schema",
            help="A JSON Schema object: one field per property, its description as the question; "
            "the values are validated against it. With nested objects or arrays the object is generated "
            "whole under the schema (needs the structured extra and a model loaded here).",
        ),
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON Lines file (default: stdout).")] = None,
    model: Model = None,
    adapter: Adapter = None,
    quant: Quant = "auto",
    device: Device = "auto",
    offline: Offline = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    server: Server = None,
    api_key: ApiKey = None,
    *,
    settings: Settings,
):
    """Typed fields out of each document: one JSON object per file, {"file", "fields": {NAME: {"value",
    "raw", "page", "score", "evidence", "error"}}}. An answer that does not parse as its type gives
    value null and an error (exit 1); a file that cannot be read is an error line and the others go on."""
    import json

    from docread.extract import (
        TYPE_PATTERNS,
        extract_document,
        failed_document,
        field_specs,
        is_nested,
        load_schema,
        schema_fields,
    )

    if bool(field) == bool(schema):
        raise UsageError("give --field NAME[:TYPE] (repeatable) or --schema SCHEMA.json, one of the two")
    loaded = load_schema(schema) if schema else None
    if loaded is not None:
        fields = [] if is_nested(loaded) else schema_fields(loaded)  # a nested schema is generated whole
    else:
        fields = field_specs(field)
    err = diagnostics(quiet)
    reader = choose_reader(server, api_key, model, adapter, device, quant, offline, err)
    if server and any(f.type in TYPE_PATTERNS for f in fields):
        err.warn(
            "--server: typed fields are answered as free text and parsed afterwards (a server takes no grammar); "
            "a model loaded here decodes each under its type's grammar"
        )
    failed = False
    sink = open(output, "w", encoding="utf-8") if output else None
    try:
        for file in files:
            try:
                record = extract_document(
                    reader,
                    file,
                    fields,
                    schema=loaded,
                    settings=settings,
                    limits=make_limits(max_pixels, timeout),
                )
            except DocreadError as e:  # the file's error record, as batch writes one; the others go on
                err.error(e.message)
                names = [f.name for f in fields] or list((loaded or {}).get("properties", {}))
                record = failed_document(file, names, e)
            failed |= record["error"] is not None or any(f["error"] for f in record["fields"].values())
            if sink is None:
                write_json(record)
            else:
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
    finally:
        if sink is not None:
            sink.close()
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
