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


def second_joins_mid_batch(monkeypatch, joined: list | None = None, safety_s: float = 120.0):
    """Patches the batcher (`serve --max-batch`) so that, once a first request has taken its first decode step,
    the batch waits until a second request has been submitted: the second then joins a running batch. Returns
    the event set at that step (send the second once it is set); `joined` collects the rows that joined the
    batch while it was not empty."""
    import threading

    from docread.serve.batcher import Batcher

    decoding, sent = threading.Event(), threading.Event()
    arrivals, submit = Batcher._arrivals, Batcher.submit

    def held_arrivals(self, free, empty):
        if not empty and not decoding.is_set():  # the first request has taken a step: send the second
            decoding.set()
            assert sent.wait(safety_s)
        rows = arrivals(self, free, empty)
        if joined is not None and not empty:
            joined.extend(rows)
        return rows

    def noted_submit(self, job):
        submit(self, job)
        if decoding.is_set():
            sent.set()

    monkeypatch.setattr(Batcher, "_arrivals", held_arrivals)
    monkeypatch.setattr(Batcher, "submit", noted_submit)
    return decoding
