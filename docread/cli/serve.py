"""`docread serve`: load the model once and answer over HTTP (OpenAI-compatible) until SIGTERM/Ctrl-C.
The app lives in `docread.serve`; this only parses options and runs uvicorn."""

from __future__ import annotations

from contextlib import contextmanager
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
    load_reader,
    make_limits,
)
from docread.errors import UsageError
from docread.generate.sizing import DEFAULT_MAX_BATCH
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S

app = typer.Typer()
DEFAULT_PORT = 8321
MISSING = "docread serve needs the serve extra: pip install 'docread[serve]'"


def require_serve_extra() -> None:
    """One clear line when FastAPI/uvicorn are not installed."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{MISSING} (missing: {', '.join(missing)})", code="missing_extra")


@app.command(
    epilog="Examples:\n\n  docread serve --model llava-1.6-vicuna-7b\n\n"
    "  DOCREAD_API_KEY=secret docread serve --host 0.0.0.0 --port 8321 --max-queue 8"
)
def serve(
    model: Model = None,
    adapter: Adapter = None,
    quant: Quant = "auto",
    device: Device = "auto",
    offline: Offline = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0 = any free one).")] = DEFAULT_PORT,
    api_key: Annotated[
        Optional[str],
        typer.Option("--api-key", envvar="DOCREAD_API_KEY", help="Require Authorization: Bearer KEY on /v1 requests."),
    ] = None,
    max_queue: Annotated[
        int,
        typer.Option(
            "--max-queue", min=0, max=10_000, help="Requests that may wait behind the running ones; more get 503."
        ),
    ] = 32,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch",
            min=1,
            max=256,
            help="Requests served at once, their answers decoded as one batch that new requests join at the "
            "next token (1 = one at a time).",
        ),
    ] = DEFAULT_MAX_BATCH,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.001, max=2048, help="Largest uploaded file, in MiB (413 above).")
    ] = 64,
    cache_pages: Annotated[
        int,
        typer.Option(
            "--cache-pages",
            min=0,
            max=4096,
            help="Encoded pages, and as many pages' text (OCR), kept across requests (0 = none).",
        ),
    ] = 8,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", min=0.1, help="Seconds one request may take, queue wait included.")
    ] = 600.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    quiet: Quiet = False,
):
    """Serve one warm model: OpenAI's /v1/chat/completions (images and PDFs as data: URLs),
    /v1/documents/ask and /ocr (ask and ocr --json over HTTP), /v1/models, /health. Up to --max-batch requests
    run at once (their answers decoded together, each the same as alone), the others wait in arrival order;
    SIGTERM finishes the ones in flight, then exits 0."""
    require_serve_extra()
    import uvicorn

    from docread.serve import create_app

    err = diagnostics(quiet)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err.warn(f"listening on {host} without --api-key: anyone who can reach it can use the model")
    reader = load_reader(model, adapter, device, quant, offline, err)
    api = create_app(
        reader,
        api_key=api_key,
        max_queue=max_queue,
        max_upload_mb=max_upload_mb,
        cache_pages=cache_pages,
        limits=make_limits(max_pixels, timeout),
        request_timeout=request_timeout,
        max_batch=max_batch,
    )

    def announce(bound: int) -> None:  # the port bound, not the one asked (0 = any free one)
        err.note(f"serving {reader.name} on http://{host}:{bound} (OpenAI base URL http://{host}:{bound}/v1)")

    config = uvicorn.Config(
        api, host=host, port=port, log_level="warning" if quiet else "info", timeout_graceful_shutdown=request_timeout
    )
    _server_class()(config, announce).run()


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but a SIGTERM/SIGINT that stopped it gracefully is a normal end (exit 0):
        uvicorn would raise the signal again once stopped. `announce(port)` once it listens, with the port bound."""

        def __init__(self, config, announce=None):
            super().__init__(config)
            self.announce = announce

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.announce is not None and self.servers and self.servers[0].sockets:
                self.announce(self.servers[0].sockets[0].getsockname()[1])

        @contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                getattr(self, "_captured_signals", []).clear()

    return Server
