"""Tokens/s of batched decoding (`generate.loop.decode_rows`) at batch 1, 4 and 8 on the tiny checkpoint
(as `docread bench speed --synthetic tiny` builds it): 8 page x question rows, mixed page sizes, each
decoding `--tokens` tokens (no EOS), plain and fast. Not a test: `python scripts/bench_batched.py`."""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import docread
from docread.generate.dynamic import crop_cache
from docread.generate.loop import Row, decode_rows, step_for
from docread.testing import build_tiny_llava

SIZES = [(700, 500), (300, 300), (1200, 420), (500, 800), (640, 640), (900, 300), (400, 600), (800, 800)]
QUESTIONS = ["What?", "What is the total amount due on this invoice?", "Who signed it", "Date of issue, please"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        path = build_tiny_llava(Path(workdir) / "tiny-llava-next", kind="llava_next", seed=0)
        reader = docread.load(str(path), device="cpu", quant="none")
        rng = np.random.default_rng(0)
        pages = []
        for w, h in SIZES:
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            pages.append(reader.encode(lambda w, h, im=image: im.resize((w, h)), w, h, QUESTIONS))
        requests = [(p, QUESTIONS[i % len(QUESTIONS)]) for i, p in enumerate(pages)]
        model = reader.hires.language_model, reader.hires.lm_head
        print(f"load average before: {os.getloadavg()}; cpus {os.cpu_count()}")
        for fast in (False, True):
            base = None
            for size in (1, 4, 8):
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    for at in range(0, len(requests), size):
                        chunk = requests[at : at + size]
                        rows = [Row(reader._suffix(p, q), args.tokens, p.cache) for p, q in chunk]
                        for _ in decode_rows(step_for(*model, static=fast), rows, eos_token_ids=[]):
                            pass
                        for p, _ in chunk:
                            crop_cache(p.cache, p.prefix_len)  # batch 1 grew the page's own cache
                    best = min(best, time.perf_counter() - start)
                rate = len(requests) * args.tokens / best
                base = base or rate
                print(
                    f"{'fast ' if fast else 'plain'} batch {size}: {rate:7.1f} tokens/s "
                    f"({best:.2f} s for {len(requests)} x {args.tokens} tokens, prefill included), {rate / base:.2f}x"
                )
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
