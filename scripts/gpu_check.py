"""The steps of `.ci/gpu`, each in its own process with a time limit, collected into ONE JSON report.

Without CUDA it is a dry run: every CUDA step is skipped with one line saying so, the CPU-only step (docread
without PyMuPDF) still runs, the report says "cuda": false and the exit status is 0. With CUDA the exit status
is 1 when a step failed. Run by `.ci/gpu`, which installs docread first; by hand:

    python scripts/gpu_check.py --out gpu-report.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

PY = sys.executable
MIN_STEP_S = 20  # a step given less time than this is skipped as out of time
TAIL_LINES = 15  # of a failed step's output, kept in the report
NO_PYMUPDF = """
import builtins, sys
real = builtins.__import__
def guard(name, *args, **kwargs):
    if name.split(".")[0] in ("pymupdf", "fitz"):
        raise ImportError("No module named " + repr(name) + " (blocked by the GPU check)")
    return real(name, *args, **kwargs)
builtins.__import__ = guard
import docread, docread.cli, docread.intake, docread.bench.speed, docread.bench.load, docread.reader
from PIL import Image
from docread.intake import open_document
Image.new("RGB", (300, 200), "white").save(sys.argv[1])
with open_document(sys.argv[1]) as document:
    document.render(document.pages[0], 150, 100)
from docread.bench.speedsetup import write_pages
from pathlib import Path
pages = write_pages(Path(sys.argv[1]).with_name("pages.pdf"), 2)
with open_document(str(pages)) as document:
    assert len(document.pages) == 2, document.pages
pdf = Path(sys.argv[1]).with_name("x.pdf")
pdf.write_bytes(b"%PDF-1.4\\n")
try:
    open_document(str(pdf))
    raise AssertionError("a PDF opened without PyMuPDF")
except docread.DocreadError as e:
    assert "PyMuPDF" in e.message, e.message
assert "pymupdf" not in sys.modules and "fitz" not in sys.modules
print('{"pymupdf_imported": false, "image_pages_read": true, "speed_pages": "' + pages.suffix + '"}')
"""


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in (
        "docread",
        "torch",
        "transformers",
        "bitsandbytes",
        "accelerate",
        "peft",
        "safetensors",
        "pymupdf",
        "pillow",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def cuda_facts() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "gpu": None, "torch_cuda": torch.version.cuda}
    props = torch.cuda.get_device_properties(0)
    return {
        "cuda": True,
        "gpu": torch.cuda.get_device_name(0),
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch_cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported(),
    }


def last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


class Check:
    def __init__(self, deadline: float, cuda: bool):
        self.deadline, self.cuda, self.steps = deadline, cuda, []

    def say(self, line: str) -> None:
        print(f"[gpu-check] {line}", file=sys.stderr, flush=True)

    def skip(self, name: str, reason: str) -> None:
        self.steps.append({"name": name, "status": "skipped", "reason": reason})
        self.say(f"{name}: skipped ({reason})")

    def run(
        self, name: str, command: list[str], limit_s: float, *, needs_cuda: bool = True, numbers=None
    ) -> dict | None:
        if needs_cuda and not self.cuda:
            self.skip(name, "no CUDA: torch.cuda.is_available() is False on this machine")
            return None
        left = self.deadline - time.time()
        if left < MIN_STEP_S:
            self.skip(name, f"out of time: {left:.0f} s of the check's budget left")
            return None
        limit = min(limit_s, left - 5)
        shown = " ".join(part if len(part) < 100 else "<script>" for part in command)
        self.say(f"{name}: running (limit {limit:.0f} s): {shown}")
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit)
            status = "ok" if done.returncode == 0 else "failed"
            out, err, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as e:
            status, code = "timeout", None
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        record = {"name": name, "status": status, "seconds": round(time.perf_counter() - start, 1), "exit": code}
        parsed = last_json(out)
        if numbers is not None:
            try:
                record["numbers"] = numbers(parsed, out + err)
            except (KeyError, TypeError, ValueError) as e:
                record["numbers_error"] = f"{type(e).__name__}: {e}"
        if status != "ok":
            record["tail"] = (out + err).strip().splitlines()[-TAIL_LINES:]
        self.steps.append(record)
        self.say(
            f"{name}: {status} in {record['seconds']} s"
            + (f" {json.dumps(record.get('numbers'))}" if record.get("numbers") else "")
        )
        return parsed


# -- what each step's output yields ------------------------------------------------------------------
def pytest_numbers(_, text: str) -> dict:
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", text)}
    return counts


def speed_numbers(result: dict, _) -> dict:
    ours, theirs = result["docread"], result["baseline"]
    return {
        "device_name": result["device_name"],
        "quantization": result["quantization"],
        "ttft_ms": ours["stages_ms"]["ttft"],
        "baseline_ttft_ms": theirs["stages_ms"]["ttft"],
        "followup_ttft_ms": ours["stages_ms"]["followup_ttft"],
        "vision_ms": ours["stages_ms"]["vision"],
        "decode_ms_per_token": ours["decode_ms_per_token"],
        "fast_ms_per_token": ours["fast"].get("ms_per_token"),
        "fast_same_tokens": ours["fast"].get("same_tokens"),
        "fast_speedup": ours["fast"].get("speedup_vs_plain"),
        "baseline_decode_ms_per_token": theirs["decode_ms_per_token"],
        "peak_memory_mb": ours["peak_memory_mb"],
        "baseline_peak_memory_mb": theirs["peak_memory_mb"],
        "views": ours["views"],
    }


def throughput_numbers(result: dict, _) -> dict:
    def rows(key: str, *fields: str) -> dict:
        return {str(row[fields[0]]): {f: row[f] for f in fields[1:]} for row in result[key]}

    return {
        "device_name": result["device_name"],
        "quantization": result["quantization"],
        "batch": rows("batch", "batch_size", "pages_per_s", "tokens_per_s", "decode_tokens_per_s"),
        "batch_fast": rows("batch_fast", "batch_size", "tokens_per_s", "decode_tokens_per_s"),
        "auto": result["auto"],
        "serve": rows("serve", "clients", "requests_per_s", "p50_s", "p99_s"),
        "peer": result["peer"],
        "ratios": result["ratios"],
    }


def load_numbers(result: dict, _) -> dict:
    keys = (
        "import_torch_s",
        "import_transformers_s",
        "read_weights_s",
        "quantize_s",
        "save_s",
        "ready_s",
        "first_token_s",
        "total_s",
        "qcache",
        "peak_cuda_mb",
    )
    return {run["run"]: {k: run.get(k) for k in keys} for run in result["runs"]} | {
        "cached_vs_first": result["cached_vs_first"]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The GPU check's steps, one JSON report.")
    parser.add_argument("--out", type=Path, required=True, help="the report (JSON)")
    parser.add_argument("--deadline", type=float, default=None, help="Unix time by which every step must end")
    args = parser.parse_args(argv)
    started = time.time()
    facts = cuda_facts()
    check = Check(args.deadline or started + 480, facts["cuda"])
    if not facts["cuda"]:
        check.say('dry run: no CUDA GPU here; every CUDA step is skipped, the report says "cuda": false')
    work = Path(tempfile.mkdtemp(prefix="docread-gpu-check-"))
    quant = "4bit" if importlib.util.find_spec("bitsandbytes") else "none"
    if quant == "none":
        check.say("bitsandbytes is not installed (no wheel in .whl/?): the real-shape steps run unquantized (bf16)")
    check.run(
        "docread_without_pymupdf",
        [PY, "-c", NO_PYMUPDF, str(work / "page.png")],
        120,
        needs_cuda=False,
        numbers=lambda parsed, _: parsed,
    )
    check.run(
        "pytest_cuda",
        [
            PY,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "-n",
            "0",  # one process: pyproject's addopts would start two workers on the one GPU
            "-q",
            "-p",
            "no:warnings",
            "-p",
            "no:cacheprovider",
            "tests/test_gpu.py",
            "tests/test_speed.py",
        ],
        180,
        numbers=pytest_numbers,
    )
    speed = [
        PY,
        "-m",
        "docread",
        "bench",
        "speed",
        "--synthetic",
        "real",
        "--pages",
        "1",
        "--questions",
        "2",
        "--repeats",
        "2",
        "--quant",
        quant,
        "--json",
    ]
    check.run("bench_speed_real", speed, 150, numbers=speed_numbers)
    helps = (
        subprocess.run([PY, "-m", "docread", "bench", "speed", "--help"], capture_output=True, text=True).stdout
        if facts["cuda"]
        else ""
    )
    if "--fast" in helps or not facts["cuda"]:
        check.run("bench_speed_real_fast", [*speed, "--fast"], 150, numbers=speed_numbers)
    else:
        check.skip(
            "bench_speed_real_fast",
            "`bench speed` has no --fast: its report already times the fast "
            "decoder beside the plain one (fast_ms_per_token, fast_same_tokens above)",
        )
    throughput = [
        *(PY, "-m", "docread", "bench", "throughput", "--synthetic", "real", "--quant", quant, "--json"),
        *("--pages", "8", "--batch-sizes", "1,8,auto", "--clients", "1,8", "--max-new-tokens", "16"),
        "--no-fast",  # --fast compiles a CUDA graph per batch size (tens of seconds each): past this step's budget
    ]
    check.run("bench_throughput_real", throughput, 150, numbers=throughput_numbers)
    check.run(
        "train_stage2_real",
        [PY, "scripts/gpu_train_real.py", "--steps", "2", "--quant", quant],
        180,
        numbers=lambda parsed, _: {
            k: parsed[k]
            for k in ("s_per_step", "step_s", "peak_mb", "model_mb", "build_s", "losses", "trainable_params")
        },
    )
    tiny = work / "tiny-llava-next"
    if facts["cuda"]:
        subprocess.run(
            [
                PY,
                "-c",
                "import sys; from docread.testing import build_tiny_llava; "
                "build_tiny_llava(sys.argv[1], kind='llava_next', seed=0)",
                str(tiny),
            ],
            capture_output=True,
        )
    load = [PY, "-m", "docread", "bench", "load", "--model", str(tiny), "--device", "cuda", "--quant", quant, "--json"]
    check.run(f"bench_load_tiny_{quant}", load, 120, numbers=load_numbers)
    shutil.rmtree(work, ignore_errors=True)
    failed = [s["name"] for s in check.steps if s["status"] in ("failed", "timeout")]
    report = {
        "check": "gpu",
        "issue": 16,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **facts,
        "dry_run": not facts["cuda"],
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "install": os.environ.get("GPU_CHECK_INSTALL_NOTE", "not installed by .ci/gpu"),
        "quant": quant,
        "versions": versions(),
        "seconds": round(time.time() - started, 1),
        "failed": failed,
        "steps": check.steps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    check.say(f"report: {args.out} ({len(check.steps)} steps, {len(failed)} failed)")
    return 1 if facts["cuda"] and failed else 0


if __name__ == "__main__":
    sys.exit(main())
