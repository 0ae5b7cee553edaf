"""Tokens/s of batched decoding (`generate.loop.decode_rows`) at batch 1, 4 and 8 on the tiny checkpoint
(as `docread bench speed --synthetic tiny` builds it): 8 page x question rows, mixed page sizes, each
decoding `--tokens` tokens (no EOS), plain and fast. Not a test: `python scripts/bench_batched.py`."""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import docread
from docread.generate.dynamic import crop_cache
from docread.generate.loop import Row, decode_rows, step_for
from docread.testing import build_tiny_llava

SIZES = [(700, 500), (300, 300), (1200, 420), (500, 800), (640, 640), (900, 300), (400, 600), (800, 800)]
QUESTIONS = ["What?", "What is the total amount due on this invoice?", "Who signed it", "Date of issue, please"]


def run(reader, requests, size: int, fast: bool, new_tokens: int) -> list[float]:
    """[wall s, CPU s, prefill s, decode s] for every request, `size` rows a batch."""
    model = reader.hires.language_model, reader.hires.lm_head
    wall, cpu, prefill, decode = time.perf_counter(), time.process_time(), 0.0, 0.0
    for at in range(0, len(requests), size):
        chunk = requests[at : at + size]
        rows = [Row(reader._suffix(p, q), new_tokens, p.cache) for p, q in chunk]
        for _ in decode_rows(step_for(*model, static=fast), rows, eos_token_ids=[]):
            pass
        prefill += rows[0].stats.prefill_ms / 1000
        decode += max(r.stats.decode_ms for r in rows) / 1000
        for p, _ in chunk:
            crop_cache(p.cache, p.prefix_len)  # batch 1 grew the page's own cache
    return [time.perf_counter() - wall, time.process_time() - cpu, prefill, decode]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (1 is steadier on a loaded machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        path = build_tiny_llava(Path(workdir) / "tiny-llava-next", kind="llava_next", seed=0)
        reader = docread.load(str(path), device="cpu", quant="none")
        rng = np.random.default_rng(0)
        pages = []
        for w, h in SIZES:
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            pages.append(reader.encode(lambda w, h, im=image: im.resize((w, h)), w, h, QUESTIONS))
        requests = [(p, QUESTIONS[i % len(QUESTIONS)]) for i, p in enumerate(pages)]
        print(f"prefix lengths {[p.prefix_len for p in pages]}")
        print(f"load average before {os.getloadavg()}, cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}")
        sizes, best = (1, 4, 8), {}
        for _ in range(args.repeats):  # round robin: a burst of load elsewhere spreads over every size
            for fast in (False, True):
                for size in sizes:
                    figures = run(reader, requests, size, fast, args.tokens)
                    key = (fast, size)
                    best[key] = [min(a, b) for a, b in zip(best.get(key, figures), figures)]
        tokens = len(requests) * args.tokens
        for fast in (False, True):
            wall1, cpu1, _, decode1 = best[(fast, 1)]
            for size in sizes:
                wall, cpu, prefill, decode = best[(fast, size)]
                print(
                    f"{'fast ' if fast else 'plain'} batch {size}: {tokens / wall:6.1f} tokens/s wall "
                    f"({wall1 / wall:.2f}x), {tokens / cpu:6.1f} per CPU-second ({cpu1 / cpu:.2f}x); "
                    f"decode only {tokens / decode:6.1f} tokens/s ({decode1 / decode:.2f}x), prefill {prefill:.2f} s"
                )
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
