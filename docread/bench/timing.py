"""Measuring for `docread bench speed`: a synchronising clock, per-module timing hooks, peak memory,
medians of repeated runs, start-up time, and the environment a result was measured in."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from docread.bench.speedsetup import BenchModel

MIB = 2**20


# -- measuring ----------------------------------------------------------------------------------------
class Clock:
    """Wall-clock milliseconds of calls, synchronising CUDA before and after."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.sync()
        return out, (time.perf_counter() - start) * 1000


def token_arrivals():
    """A streamer for transformers' `generate` that notes when each new token reaches the host (the first
    `put` is the prompt); `ms_per_token()`: the milliseconds between the first new token and the last, per
    token (0.0 for one token). generate copies each token to the host, so a CUDA step has finished by then."""
    from transformers.generation.streamers import BaseStreamer

    class Arrivals(BaseStreamer):
        def __init__(self):
            self.times: list[float] | None = None

        def put(self, value) -> None:
            if self.times is None:
                self.times = []
            else:
                self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

        def ms_per_token(self) -> float:
            times = self.times or []
            return (times[-1] - times[0]) * 1000 / (len(times) - 1) if len(times) > 1 else 0.0

    return Arrivals()


@contextmanager
def module_time(clock: Clock, groups: dict[str, list]):
    """Accumulate, per group name, the milliseconds its modules' forward calls take (hooks, synced)."""
    totals = dict.fromkeys(groups, 0.0)
    starts: dict[int, float] = {}
    handles = []
    for name, modules in groups.items():
        for module in modules:

            def before(mod, args):
                clock.sync()
                starts[id(mod)] = time.perf_counter()

            def after(mod, args, output, name=name):
                clock.sync()
                totals[name] += (time.perf_counter() - starts.pop(id(mod))) * 1000

            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()


class Memory:
    """Peak memory since `reset()`: CUDA max allocated on GPU, resident set (VmHWM) on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        except OSError:
            self.kind = "rss_since_start"  # no reset possible: the process's lifetime peak

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def rates(pages: int, tokens: int, seconds: float) -> dict:
    """Pages and generated tokens per second."""
    return {"pages_per_s": round(pages / seconds, 3), "tokens_per_s": round(tokens / seconds, 2)}


class Samples:
    """Lists of timings per key; warm-up runs are recorded only when `keep`."""

    def __init__(self):
        self.values: dict[str, list[float]] = defaultdict(list)

    def add(self, keep: bool, **values: float) -> None:
        if keep:
            for key, value in values.items():
                self.values[key].append(value)

    def median(self, key: str) -> float | None:
        return round(statistics.median(self.values[key]), 3) if self.values.get(key) else None


def measure_startup(repeats: int) -> dict:
    """Median wall time of `docread --help` and of `python -c "import torch"`, as subprocesses, over `repeats`
    runs each. No warm-up run: the benchmark's own process has just imported the same files (from a warm disk
    cache, as the runs timed here will)."""
    script = Path(sys.executable).with_name("docread")
    help_command = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "docread", "--help"]
    times = {}
    for key, command in (
        ("docread_help_ms", help_command),
        ("import_torch_ms", [sys.executable, "-c", "import torch"]),
    ):
        runs = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            runs.append((time.perf_counter() - start) * 1000)
        times[key] = round(statistics.median(runs), 1)
    return {**times, "ratio": round(times["docread_help_ms"] / times["import_torch_ms"], 4)}


def environment(bench: BenchModel) -> dict:
    import transformers

    versions = {
        "docread": _version("docread"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": _version("bitsandbytes"),
        "pymupdf": _version("pymupdf"),
        "pillow": _version("pillow"),
        "cuda": torch.version.cuda,
    }
    device = bench.reader.base.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    config = bench.llava.config
    return {
        "device": str(device),
        "device_name": name,
        "dtype": str(bench.reader.base.dtype).removeprefix("torch."),
        "quantization": bench.reader.base.quant,
        "attention": {
            "vision": config.vision_config._attn_implementation,
            "text": config.text_config._attn_implementation,
        },
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
