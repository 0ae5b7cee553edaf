"""`docread bench load`: a cold start measured in seconds, phase by phase, each in a fresh process.

A child process (`python -m docread.bench.load --child ...`) times, from the moment its parent started
it: the interpreter's start, `import torch`, `import transformers`, reading the weights, quantizing them
(time inside bitsandbytes' quantize_4bit), moving them to the device, writing docread's quantized copy,
the rest of `docread.load` (tokenizer, docread's modules wired around the base), and the first token of
a 1-token answer on a small synthetic page. The parent runs it `runs` times: first with the quantized
copy rebuilt (as on a first load), then reading that copy. Returns one dict (the `--json` object).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

T0_ENV = "DOCREAD_BENCH_T0"  # wall-clock time (time.time()) at which the parent started the child
PAGE_SIDE = 336  # the synthetic page: one CLIP view, the smallest page docread reads
QUESTION = "What is written here?"
CHILD_TIMEOUT_S = 3600  # a 7B load from a slow disk on a CPU takes minutes, not hours


def run_load_bench(
    model: str, *, device: str = "auto", quant: str = "auto", runs: int = 2, log=lambda message: None
) -> dict:
    """Load `model` `runs` times, each in a fresh process; the first rebuilds docread's quantized copy."""
    import datetime
    import platform

    check_model(model)
    results = []
    for number in range(runs):
        what = "first" if number == 0 else "cached"
        log(f"run {number + 1} of {runs} ({what}): loading {model} in a fresh process")
        results.append({"run": what, **_child(model, device, quant, refresh=number == 0)})
    first, last = results[0], results[-1]
    cached = results[1:]
    ready = statistics.median(r["ready_s"] for r in cached) if cached else None  # several: the median
    total = statistics.median(r["total_s"] for r in cached) if cached else None
    return {
        "benchmark": "load",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": model,
        "device": last.get("device"),
        "quant": last.get("quant"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "device_name": last.get("device_name"),
        },
        "versions": last.get("versions"),
        "runs": results,
        "cached_vs_first": _ratio(ready, first["ready_s"]),
        "cached_vs_first_without_save": _ratio(ready, first["ready_s"] - first["save_s"]),
        "cached_vs_first_to_first_token": _ratio(total, first["total_s"]),
    }


def check_model(model: str) -> None:
    """Fail here, at once and without torch, when `model` is not to be had: no such preset or folder, a folder
    that is no llava-hf model, or (offline) a hub id not in the HF cache. A hub id that may be downloaded
    is left to the first child."""
    from docread.model.presets import resolve_preset
    from docread.model.weights import cached_folder, offline_requested, resolve_weights

    base = resolve_preset(model).base
    if offline_requested() or cached_folder(base) is not None:
        resolve_weights(base)  # a folder, the HF cache or offline: touches no network


def _ratio(a: float | None, b: float) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _child(model: str, device: str, quant: str, *, refresh: bool) -> dict:
    from docread.errors import DocreadError

    env = dict(os.environ, **{T0_ENV: repr(time.time())})
    if refresh:
        env["DOCREAD_QCACHE"] = "refresh"
    command = [sys.executable, "-m", "docread.bench.load", "--child", model, device, quant]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DocreadError(
            "bench_failed", f"loading {model} in a fresh process failed (exit {done.returncode}): {tail}"
        )
    return json.loads(lines[-1])


# -- the child --------------------------------------------------------------------------------------
def _measure(model: str, device: str, quant: str, t0: float) -> dict:
    """Everything from here on runs in the fresh process; figures in seconds since `t0`."""
    figures = {"interpreter_s": time.time() - t0}
    start = time.perf_counter()
    import torch

    figures["import_torch_s"] = time.perf_counter() - start
    start = time.perf_counter()
    import transformers  # noqa: F401

    import docread

    figures["import_transformers_s"] = time.perf_counter() - start
    start = time.perf_counter()
    quantize = _time_quantize()  # imports bitsandbytes, as a quantized load would
    figures["import_bitsandbytes_s"] = time.perf_counter() - start
    start = time.perf_counter()
    reader = docread.load(model, device=device, quant=quant)
    figures["load_s"] = time.perf_counter() - start
    report = reader.base.load_report
    figures["quantize_s"] = quantize["s"]
    figures["read_weights_s"] = max(report.get("from_pretrained_s", 0.0) - quantize["s"], 0.0)
    figures["to_device_s"] = report.get("to_device_s", 0.0)  # quantized: placed while reading (device_map)
    figures["save_s"] = report.get("save_s", 0.0)
    figures["wire_up_s"] = figures["load_s"] - sum(
        report.get(k, 0.0) for k in ("from_pretrained_s", "save_s", "to_device_s")
    )
    figures["ready_s"] = time.time() - t0
    start = time.perf_counter()
    answer = reader.ask(_page(), QUESTION, max_new_tokens=1, max_slices=0)  # one view: the least a page costs
    if reader.base.device.type == "cuda":
        torch.cuda.synchronize()
    figures["first_token_s"] = time.perf_counter() - start
    figures["total_s"] = time.time() - t0
    rounded = {key: round(value, 3) for key, value in figures.items()}
    return {
        **rounded,
        "qcache": report.get("qcache"),
        "qcache_path": report.get("qcache_path"),
        "generated_tokens": answer.generated_tokens,
        "device": str(reader.base.device),
        "device_name": torch.cuda.get_device_name(reader.base.device)
        if reader.base.device.type == "cuda"
        else _cpu_name(),
        "quant": reader.base.quant,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "versions": versions(),
    }


def versions() -> dict:
    """The versions a load depends on (None where a package is absent)."""
    import platform
    from importlib import metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("docread", "torch", "transformers", "bitsandbytes", "safetensors", "accelerate"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _time_quantize() -> dict:
    """Sum the time spent in bitsandbytes' quantize_4bit (where loading a base quantizes each weight)."""
    total = {"s": 0.0}
    try:
        import bitsandbytes.functional as bnb_functional
    except ImportError:
        return total
    inner = bnb_functional.quantize_4bit

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            total["s"] += time.perf_counter() - start

    bnb_functional.quantize_4bit = timed
    return total


def _page():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (PAGE_SIDE, PAGE_SIDE), "white")
    ImageDraw.Draw(image).text((20, 150), "Total: 1,234.56", fill="black")
    return image


def _cpu_name() -> str:
    from docread.bench.timing import _cpu_name as name

    return name()


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _child_main(argv: list[str]) -> None:
    t0 = float(os.environ.get(T0_ENV, time.time()))
    model, device, quant = argv
    sys.stdout.write(json.dumps(_measure(model, device, quant, t0)) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"] or len(sys.argv) != 5:
        sys.exit("usage: python -m docread.bench.load --child MODEL DEVICE QUANT (run by `docread bench load`)")
    _child_main(sys.argv[2:])
