"""The client side of `docread bench throughput`'s serve rows, run in a process of its own (as load generators
are: vLLM's benchmark_serving, locust), so that the server measured does not share its GIL with its clients.

`python -m docread.bench.serveclients` reads one plan (JSON) on stdin, and writes JSON lines on stdout: a
`{"log": ...}` line before each pass, then `{"rows": [...]}`, or `{"error": ...}` and exit status 1. Only the
standard library is imported (`http.client`: no torch, no httpx), and each page's request body is built once
(bytes around the question); a request only splices in its own question.
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

REQUEST_S = 600.0  # a bound on one request (a real-shape model on a slow device)
PATH = "/v1/chat/completions"
QUESTION = "\x00question\x00"  # where a request's own question goes in its page's body


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of values, by nearest rank (p99 of 16 latencies is the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))]


def page_body(data_url: str, max_new_tokens: int, max_slices: int | None) -> tuple[bytes, bytes]:
    """A chat request about one page, as the bytes before and after its question's JSON string."""
    options = {"text": "off"}  # no page text or OCR: the model's work only, as the batched reading does
    if max_slices is not None:
        options["max_slices"] = max_slices
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": data_url}}]
    body = {
        "model": "docread",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_new_tokens,
        "docread": options,
    }
    head, tail = json.dumps(body).encode().split(json.dumps(QUESTION).encode())
    return head, tail


class Load:
    """What each pass sends: `requests` chat requests in turn over the pages, page i asked `questions[i]` and
    the request's number, so each is a question of its own."""

    def __init__(self, plan: dict):
        self.base = urllib.parse.urlsplit(plan["base"])
        self.bodies = [page_body(url, plan["max_new_tokens"], plan.get("max_slices")) for url in plan["pages"]]
        self.questions, self.requests = plan["questions"], plan["requests"]

    def body(self, n: int) -> bytes:
        head, tail = self.bodies[n % len(self.bodies)]
        question = self.questions[n % len(self.bodies)]
        return head + json.dumps(f"{question} ({n})").encode() + tail

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.base.hostname, self.base.port, timeout=REQUEST_S)

    def ask(self, connection: http.client.HTTPConnection, n: int) -> tuple[float, int]:
        """(seconds, completion tokens) of request n, on a kept-alive connection."""
        body = self.body(n)
        start = time.perf_counter()
        connection.request("POST", PATH, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read()
        seconds = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"the server answered {response.status}: {text[:300].decode(errors='replace')}")
        return seconds, int(json.loads(text)["usage"]["completion_tokens"])

    def one_pass(self, count: int) -> dict:
        """`count` client threads, each with its own connection, sending requests back to back until
        `requests` are answered."""
        local, opened = threading.local(), []

        def one(n: int) -> tuple[float, int]:
            if not hasattr(local, "connection"):
                local.connection = self.connect()
                opened.append(local.connection)
            return self.ask(local.connection, n)

        start = time.perf_counter()
        try:
            with ThreadPoolExecutor(count, thread_name_prefix="bench-client") as pool:
                done = list(pool.map(one, range(self.requests)))
        finally:
            for connection in opened:
                connection.close()
        wall = time.perf_counter() - start
        latencies = [seconds for seconds, _ in done]
        tokens = sum(t for _, t in done)
        return {
            "requests": self.requests,
            "requests_per_s": round(self.requests / wall, 3),
            "tokens_per_s": round(tokens / wall, 2),
            "p50_s": round(statistics.median(latencies), 4),
            "p99_s": round(percentile(latencies, 0.99), 4),
            "tokens": tokens,
            "elapsed_s": round(wall, 4),
        }


def run(plan: dict, say) -> list[dict]:
    """Every page asked once (the server caches it encoded), then `repeats` passes over the numbers of
    clients in turn (load drifting on a shared machine hits them all): one row per pass."""
    load = Load(plan)
    connection = load.connect()
    try:
        for n in range(len(load.bodies)):
            load.ask(connection, -1 - n)
    finally:
        connection.close()
    rows = []
    for repeat in range(plan["repeats"]):
        for count in plan["clients"]:
            say(f"{count} client(s), {load.requests} requests, pass {repeat + 1} of {plan['repeats']}")
            rows.append({"clients": count, **load.one_pass(count)})
    return rows


def main() -> int:
    def say(message: str) -> None:
        print(json.dumps({"log": message}), flush=True)

    try:
        rows = run(json.load(sys.stdin), say)
    except Exception as e:  # noqa: BLE001  any failure is one line for the benchmark to report
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps({"rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
