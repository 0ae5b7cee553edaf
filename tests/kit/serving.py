"""`docread serve`'s app (or another ASGI app) on a loopback uvicorn thread (port 0), and the helpers served answers
are checked with."""

from __future__ import annotations

import io
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
    """Any ASGI app (its lifespan run) on a loopback uvicorn thread (port 0): the benchmark's own
    `loopback`, which raises when the server does not start; yields its base URL, stops it."""
    from docread.bench.serveload import loopback

    with loopback(app) as url:
        yield url


def http():
    """The client tests send requests with: docread's own (`docread.remote.http_client`, one a process, its
    connections kept alive). `httpx.get`/`post` build a client, and its TLS context (about 50 ms), a call."""
    from docread.remote import http_client

    return http_client()
