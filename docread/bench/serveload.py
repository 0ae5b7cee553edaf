"""`docread bench throughput`'s serve half: an app on a loopback uvicorn thread (port 0, bounded start and
stop), and concurrent clients sending it chat requests from a process of their own (`bench.serveclients`, so
they do not share the server's GIL): requests/s and p50/p99 latency per number of clients.

The app comes from the caller (`app_factory(max_batch)`, the CLI passes `docread.serve.create_app`): the
benchmarks rank below the server (docs/layout.md), so they measure it without importing it.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from docread.errors import DocreadError

START_S = 120.0  # a bound on the server's start and stop: the waits end on uvicorn's own events
REQUESTS_PER_CLIENT = 8  # the default requests of a pass: this many per client at the most clients (or --pages)


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
        why = "the benchmark's in-process server did not start (see uvicorn's message above)"
        raise DocreadError("bench_serve", why)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_S)


def default_requests(pages: int, clients) -> int:
    """Requests a pass sends when `--requests` is not given: `--pages`, or REQUESTS_PER_CLIENT for each of the
    most clients, the larger, so that a pass at the most clients is mostly steady state (the first wave's
    requests arrive together, the last's leave a batch that empties)."""
    return max(pages, REQUESTS_PER_CLIENT * max(clients, default=1))


def _plan(base: str, load: ServeLoad, clients: Sequence[int], repeats: int) -> dict:
    """What the client process sends (`serveclients.run`): each page as its data URL, encoded once here."""
    urls = ["data:image/png;base64," + base64.b64encode(page).decode() for page in load.pages]
    return {
        "base": base,
        "pages": urls,
        "questions": list(load.questions),
        "requests": load.requests,
        "max_new_tokens": load.max_new_tokens,
        "max_slices": load.max_slices,
        "clients": list(clients),
        "repeats": repeats,
    }


def _bound_s(load: ServeLoad, clients: Sequence[int], repeats: int) -> float:
    """How long the client process may take: its start, and every request's bound for each wave of requests
    (the warm-up's one at a time, then each pass's requests `count` at a time)."""
    waves = len(load.pages) + repeats * sum(math.ceil(load.requests / count) for count in clients)
    from docread.bench.serveclients import REQUEST_S  # not at import: the CLI reads this module's defaults

    return START_S + REQUEST_S * waves


def run_clients(plan: dict, bound_s: float, log: Callable[[str], None]) -> list[dict]:
    """`python -m docread.bench.serveclients` on `plan`: its rows, its progress to `log`. Killed after
    `bound_s`; any failure is one DocreadError line."""
    import docread

    env = dict(os.environ)  # the same docread as this process, wherever it was imported from
    root = str(Path(docread.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-P", "-m", "docread.bench.serveclients"],  # -P: not the working directory's docread
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        killed = threading.Event()
        timer = threading.Timer(bound_s, lambda: (killed.set(), process.kill()))
        timer.start()
        outcome = None
        try:
            process.stdin.write(json.dumps(plan).encode())
            process.stdin.close()
            for line in process.stdout:
                message = json.loads(line)
                if "log" in message:
                    log(message["log"])
                else:
                    outcome = message
        except (OSError, ValueError) as e:  # a broken pipe, a line that is not JSON: the process failed
            outcome = outcome or {"error": str(e)}
        finally:
            timer.cancel()
            process.kill()  # a no-op once it has exited
            code = process.wait()
            process.stdout.close()
        if killed.is_set() and outcome is None:
            raise DocreadError("bench_serve", f"the benchmark's client process took over {bound_s:g} s: killed")
        if outcome is None or "rows" not in outcome:
            stderr.seek(0)
            said = stderr.read().decode(errors="replace").strip().splitlines() or ["no message"]
            why = (outcome or {}).get("error") or said[-1]
            raise DocreadError("bench_serve", f"the benchmark's client process failed (exit {code}): {why}")
        return outcome["rows"]


def measure(
    app_factory: Callable[[int], object],
    load: ServeLoad,
    clients: Sequence[int],
    *,
    max_batch: int,
    repeats: int = 1,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict]:
    """One row per number of clients, from one server at `max_batch` on a loopback thread here, driven by a
    client process of its own (`docread.bench.serveclients`): the pass with the most requests/s of `repeats`,
    the numbers of clients taking turns. Every page is asked once first (encoded into the server's page
    cache): the rows time answering, not first sight."""
    best: dict[int, dict] = {}
    with loopback(app_factory(max_batch)) as base:
        plan = _plan(base, load, clients, repeats)
        bound_s = _bound_s(load, clients, repeats)
        rows = run_clients(plan, bound_s, lambda message: log(f"serve --max-batch {max_batch}: {message}"))
    for row in rows:
        row = {"clients": row["clients"], "max_batch": max_batch, **row}
        count = row["clients"]
        if count not in best or row["requests_per_s"] > best[count]["requests_per_s"]:
            best[count] = row
    return [best[count] for count in clients]


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
