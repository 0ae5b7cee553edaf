"""Measure `docread serve` on this machine: `docread ask` cold (a process that loads the model) vs the
same question through a warm server (`ask --server`), and requests/s, p50/p99 latency at 1, 4 and 8
concurrent OpenAI-SDK clients, for each `serve --max-batch` asked. Usage:
    python scripts/bench_serve.py MODEL [--requests N] [--clients 1,4,8] [--max-batch 1,8] [--no-cold]
Requests/s and p50/p99 under concurrent clients are also part of `docread bench throughput` (an in-process
server, beside batched reading and transformers' generate); this script keeps what needs separate processes:
the cold `docread ask` against `ask --server`, and a `docread serve` process with page text on."""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
from PIL import Image

QUESTION = "What is written here?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--clients", default="1,4,8", help="concurrent clients, comma-separated")
    parser.add_argument("--max-batch", default="8", help="serve --max-batch values, comma-separated")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold `docread ask` runs")
    args = parser.parse_args()
    image = os.path.join(tempfile.mkdtemp(), "page.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (672, 672, 3), dtype=np.uint8)).save(image)
    common = [image, QUESTION, "--max-new-tokens", str(args.max_new_tokens), "--json", "--quiet"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    docread = [sys.executable, "-m", "docread"]

    def timed(cmd) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)
        return time.perf_counter() - start

    cold = None
    if not args.no_cold:
        cold = statistics.median(
            timed([*docread, "ask", *common, "--model", args.model, "--device", "cpu"]) for _ in range(3)
        )
    for max_batch in args.max_batch.split(","):
        print(f"serve --max-batch {max_batch}")
        measure(args, docread, env, timed, common, image, cold, ["--max-batch", max_batch])


def measure(args, docread, env, timed, common, image, cold, options) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*docread, "serve", "--model", args.model, "--device", "cpu", "--port", str(port), "--quiet", *options],
        env=env,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        timed([*docread, "ask", *common, "--server", url])  # first request: encodes the page
        warm = statistics.median(timed([*docread, "ask", *common, "--server", url]) for _ in range(3))
        if cold is not None:
            print(f"ask cold {cold:.2f} s | ask --server warm {warm:.2f} s | ratio {cold / warm:.1f}x")
        with open(image, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        client = openai.OpenAI(base_url=url + "/v1", api_key="-", timeout=600, max_retries=0)
        for clients in map(int, args.clients.split(",")):

            def one(n: int) -> float:
                # a different question each time: the page is cached, the answer is decoded afresh
                messages = [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": f"{QUESTION} ({n})"},
                            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                        ],
                    }
                ]
                start = time.perf_counter()
                client.chat.completions.create(model="docread", messages=messages, max_tokens=args.max_new_tokens)
                return time.perf_counter() - start

            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                latencies = sorted(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            print(
                f"{clients} clients: {args.requests / wall:.2f} req/s, "
                f"p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
            )
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
