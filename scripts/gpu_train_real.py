"""Stage-2 training at the real shapes (CLIP-L/14-336 + Vicuna-7B, random weights, the LLM in 4-bit, built in
memory as `bench speed --synthetic real` builds it) for a few steps: seconds per step and peak GPU memory, as
one JSON line on stdout. `.ci/gpu` runs it on CUDA; `--shapes tiny --device cpu` checks the script anywhere.

    python scripts/gpu_train_real.py --steps 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = ("What is the total?", "Which line holds the date?", "What is the invoice number?", "Who is it for?")


def write_data(folder: Path, count: int = 4) -> Path:
    """`count` noise pages (letter-shaped, so they are cut into tiles) with one LLaVA conversation each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (1100, 850, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        records.append(
            {
                "id": f"s{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": f"<image>\n{QUESTIONS[i % len(QUESTIONS)]}"},
                    {"from": "gpt", "value": f"The answer is {i}.00 dollars."},
                ],
            }
        )
    (folder / "train.json").write_text(json.dumps(records))
    return folder / "train.json"


def measure(steps: int, shapes: str, device: str, batch_size: int, max_slices: int | None, quant: str = "4bit") -> dict:
    import torch

    import docread
    from docread.testing import TEXT, VISION, build_reader
    from docread.train import TrainConfig, start
    from docread.train import steps as run_steps

    cuda = device.startswith("cuda")
    overrides = {} if shapes == "real" else dict(vision=VISION, text=TEXT, vocab_size=512)
    start_s = time.perf_counter()
    reader = build_reader(device=device, quant=quant, **overrides)
    build_s = time.perf_counter() - start_s
    model_mb = torch.cuda.memory_allocated() / 2**20 if cuda else None
    docread.load = lambda *args, **kwargs: reader  # train's prepare() loads through docread.load: the in-memory model
    with tempfile.TemporaryDirectory(prefix="docread-train-real-") as folder:
        data = write_data(Path(folder))
        config = TrainConfig(
            model=reader.name,
            data=data,
            output=Path(folder) / "out",
            stage=2,
            max_steps=steps,
            batch_size=batch_size,
            max_slices=max_slices,
            device=device,
            quant=quant,
            log_every=1,
        )
        run = start(config)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times, losses, last = [], [], time.perf_counter()
        for event in run_steps(run):
            if hasattr(event, "loss"):
                if cuda:
                    torch.cuda.synchronize()
                now = time.perf_counter()
                times.append(round(now - last, 3))
                losses.append(event.loss)
                last = now
    timed = times[1:] or times  # the first step also warms up kernels and allocator
    return {
        "script": "gpu_train_real",
        "shapes": shapes,
        "device": device,
        "quant": quant,
        "stage": 2,
        "steps": steps,
        "batch_size": batch_size,
        "max_slices": max_slices,
        "build_s": round(build_s, 2),
        "step_s": times,
        "s_per_step": round(sum(timed) / len(timed), 3),
        "losses": losses,
        "model_mb": round(model_mb, 1) if model_mb is not None else None,
        "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        "trainable_params": sum(p.numel() for p in run.trainable),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--shapes", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-slices", type=int, default=None, help="tile budget (default: the model's, 16)")
    parser.add_argument("--quant", choices=("4bit", "none"), default="4bit", help="the LLM's weights (none: bf16 LoRA)")
    args = parser.parse_args(argv)
    result = measure(args.steps, args.shapes, args.device, args.batch_size, args.max_slices, args.quant)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
