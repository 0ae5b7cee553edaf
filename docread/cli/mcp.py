"""`docread mcp`: serve docread's tools to MCP clients (stdio by default, streamable HTTP with --http). The
server lives in `docread.mcp`; this only parses options and runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.options import (
    Adapter,
    Device,
    MaxPixels,
    Model,
    Offline,
    Quant,
    Quiet,
    Timeout,
    diagnostics,
    make_limits,
)
from docread.errors import UsageError
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S

app = typer.Typer()
DEFAULT_PORT = 8322
MISSING = "docread mcp needs the mcp extra: pip install 'docread[mcp]'"


def require_mcp_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("mcp") is None or importlib.util.find_spec("mcp.server.mcpserver") is None:
        raise UsageError(f"{MISSING} (mcp 2 or later)", code="missing_extra")


@app.command(
    epilog="Examples:\n\n  docread mcp --root ~/Documents\n\n"
    "  DOCREAD_API_KEY=secret docread mcp --http --port 8322 --root ./papers"
)
def mcp(
    root: Annotated[
        Optional[Path],
        typer.Option(
            "--root",
            help="Folder whose files tools may read (symlinks followed, never outside it); without it, only "
            "documents sent as base64 content.",
        ),
    ] = None,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")] = False,
    host: Annotated[str, typer.Option("--host", help="Loopback address to listen on with --http.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port with --http (0 = any free one).")
    ] = DEFAULT_PORT,
    api_key: Annotated[
        Optional[str],
        typer.Option("--api-key", envvar="DOCREAD_API_KEY", help="With --http, require Authorization: Bearer KEY."),
    ] = None,
    model: Model = None,
    adapter: Adapter = None,
    quant: Quant = "auto",
    device: Device = "auto",
    offline: Offline = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    quiet: Quiet = False,
):
    """Serve docread to MCP clients: tools ask_document, ocr, extract, locate, inspect, with JSON-schema'd
    inputs (every read option) and outputs. The model loads once, on the first tool that needs it."""
    require_mcp_extra()
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise UsageError(f"--host {host}: docread mcp listens on loopback only (127.0.0.1, localhost or ::1)")
    if root is not None and not root.expanduser().is_dir():
        raise UsageError(f"--root {root}: not a folder")
    from docread.mcp.inputs import Documents
    from docread.mcp.server import build_server, serve_http
    from docread.mcp.tools import Work

    err = diagnostics(quiet)
    limits = make_limits(max_pixels, timeout)

    def load():
        from docread.reading import open_reader

        err.note(f"loading {model or 'the default model'}…")
        adapter_name = str(adapter) if adapter else None
        return open_reader(model=model, adapter=adapter_name, device=device, quant=quant, offline=offline)

    work = Work(Documents(root.expanduser() if root else None, limits.max_bytes), limits, load)
    server = build_server(work)
    if not http:
        server.run("stdio")
        return
    serve_http(server, host, port, api_key, lambda url: err.note(f"serving MCP on {url}"))
