"""`docread serve`'s app (or another ASGI app) on a loopback uvicorn thread (port 0), and the helpers served answers
are checked with."""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager

import numpy as np
from PIL import Image

KEY = "test-key"
VOLATILE = {"timing_ms"}  # wall-clock numbers: the only fields a served answer may differ in
START_S = 120.0  # a safety bound only: the wait ends when uvicorn says it started (or its thread ends)


def image_bytes(seed: int = 0, fmt: str = "PNG", size: int = 336) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


@contextmanager
def serving(reader, **options):
    """The app on a loopback uvicorn thread (port 0); yields its base URL and stops it, bounded."""
    from docread.serve import create_app

    with running(create_app(reader, **options)) as url:
        yield url


@contextmanager
def running(app):
    """Any ASGI app (its lifespan run) on a loopback uvicorn thread (port 0); yields its base URL, stops it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    started = threading.Event()
    startup = server.startup

    async def startup_then_signal(*args, **kwargs):
        try:
            await startup(*args, **kwargs)
        finally:
            started.set()  # started or failed: either way the wait below is over

    server.startup = startup_then_signal
    thread = threading.Thread(target=lambda: (server.run(), started.set()), daemon=True)
    thread.start()
    started.wait(START_S)
    assert server.started and thread.is_alive(), "the server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_S)
        assert not thread.is_alive()
