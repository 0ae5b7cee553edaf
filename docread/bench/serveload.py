"""`docread bench throughput`'s serve half: an app on a loopback uvicorn thread (port 0, bounded start and
stop), and concurrent clients sending it chat requests: requests/s and p50/p99 latency per number of clients.

The app comes from the caller (`app_factory(max_batch)`, the CLI passes `docread.serve.create_app`): the
benchmarks rank below the server (docs/layout.md), so they measure it without importing it.
"""

from __future__ import annotations

import base64
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from docread.errors import DocreadError

START_S = 120.0  # a bound on the server's start and stop: the waits end on uvicorn's own events
REQUEST_S = 600.0  # a bound on one request (a real-shape model on a slow device)


@dataclass(frozen=True)
class ServeLoad:
    """What every number of clients sends: `requests` chat requests in turn over `pages` (PNG bytes), page i
    with `questions[i]` and the request's number, so each is a question of its own (the page is encoded once
    and cached; every answer is decoded afresh)."""

    pages: Sequence[bytes]
    questions: Sequence[str]
    requests: int
    max_new_tokens: int
    max_slices: int | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of values, by nearest rank (p99 of 16 latencies is the largest)."""
    import math

    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))]


@contextmanager
def loopback(app) -> Iterator[str]:
    """`app` served by uvicorn on 127.0.0.1 (a free port) in a thread of this process; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    started = threading.Event()
    startup = server.startup

    async def startup_then_signal(*args, **kwargs):
        try:
            await startup(*args, **kwargs)
        finally:
            started.set()  # started or failed: the wait below is over either way

    server.startup = startup_then_signal
    thread = threading.Thread(target=lambda: (server.run(), started.set()), name="bench-serve", daemon=True)
    thread.start()
    started.wait(START_S)
    if not (server.started and thread.is_alive()):
        raise DocreadError("the benchmark's in-process server did not start (see uvicorn's message above)")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_S)


def _body(load: ServeLoad, n: int) -> dict:
    index = n % len(load.pages)
    page, question = load.pages[index], load.questions[index]
    url = "data:image/png;base64," + base64.b64encode(page).decode()
    options = {"text": "off"}  # no page text or OCR: the model's work only, as the batched reading does
    if load.max_slices is not None:
        options["max_slices"] = load.max_slices
    return {
        "model": "docread",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"{question} ({n})"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        "max_tokens": load.max_new_tokens,
        "docread": options,
    }


def _ask(client, base: str, body: dict) -> tuple[float, int]:
    """(seconds, completion tokens) of one request."""
    start = time.perf_counter()
    response = client.post(base + "/v1/chat/completions", json=body, timeout=REQUEST_S)
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise DocreadError(f"the benchmark's server answered {response.status_code}: {response.text[:300]}")
    return seconds, int(response.json()["usage"]["completion_tokens"])


def measure(
    app_factory: Callable[[int], object],
    load: ServeLoad,
    clients: Sequence[int],
    *,
    max_batch: int,
    repeats: int = 1,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict]:
    """One row per number of clients, from one server at `max_batch`: the pass with the most requests/s of
    `repeats`, the numbers of clients taking turns (load drifting on a shared machine hits them all). Every
    page is asked once first (encoded into the server's page cache): the rows time answering, not first sight."""
    import httpx

    best: dict[int, dict] = {}
    with loopback(app_factory(max_batch)) as base:
        with httpx.Client() as warm:
            for n in range(len(load.pages)):
                _ask(warm, base, _body(load, -1 - n))
        for repeat in range(repeats):
            for count in clients:
                log(f"serve --max-batch {max_batch}: {count} client(s), {load.requests} requests, pass {repeat + 1}")
                row = {"clients": count, "max_batch": max_batch, **_clients(base, load, count)}
                if count not in best or row["requests_per_s"] > best[count]["requests_per_s"]:
                    best[count] = row
    return [best[count] for count in clients]


def _clients(base: str, load: ServeLoad, count: int) -> dict:
    """`count` client threads, each with its own connection, sending requests back to back until
    `load.requests` are answered."""
    import httpx

    local, opened = threading.local(), []

    def one(n: int) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client()
            opened.append(local.client)
        return _ask(local.client, base, _body(load, n))

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(count, thread_name_prefix="bench-client") as pool:
            done = list(pool.map(one, range(load.requests)))
    finally:
        for client in opened:
            client.close()
    wall = time.perf_counter() - start
    latencies = [seconds for seconds, _ in done]
    tokens = sum(t for _, t in done)
    return {
        "requests": load.requests,
        "requests_per_s": round(load.requests / wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(percentile(latencies, 0.99), 4),
        "tokens": tokens,
        "elapsed_s": round(wall, 4),
    }


def page_images(document, pages) -> list[bytes]:
    """Each page rendered at its nominal size, as PNG bytes: what serve's clients upload."""
    import io

    images = []
    for page in pages:
        buffer = io.BytesIO()
        document.render(page, page.width, page.height).save(buffer, "PNG", compress_level=1)  # quick to write
        images.append(buffer.getvalue())
    return images


def measure_serve(
    reader,
    app_factory: Callable | None,
    images: list[bytes],
    clients: Sequence[int],
    *,
    requests: int,
    max_batch: int,
    questions: Sequence[str],
    max_new_tokens: int,
    max_slices: int | None,
    repeats: int,
    log: Callable[[str], None],
) -> dict:
    """serve's rows at `max_batch` (`serve`) and at 1 (`serve_one_at_a_time`), or why there are none.
    `app_factory(reader, max_batch=, cache_pages=)` makes the app (`docread.serve.create_app`)."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if app_factory is None or not clients or missing:
        reason = f"the serve extra is missing ({', '.join(missing)})" if missing else "no clients asked"
        log(f"serve not measured: {reason}")
        return {"serve": [], "serve_one_at_a_time": [], "serve_skipped": reason}
    load = ServeLoad(images, questions, requests, max_new_tokens, max_slices)

    def app(batch: int):
        return app_factory(reader, max_batch=batch, cache_pages=len(images))

    return {
        key: measure(app, load, clients, max_batch=batch, repeats=repeats, log=log)
        for key, batch in (("serve", max_batch), ("serve_one_at_a_time", 1))
    }
