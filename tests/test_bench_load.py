"""`docread bench load` on the tiny checkpoint, 4-bit on CPU, in real subprocesses (the process start is the
point): every phase reported and non-negative, the first run rebuilds the quantized copy, the second reads
it. Timings are reported, never asserted."""

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.needs("bitsandbytes")  # imported when a test runs, not at collection
PHASES = (
    "interpreter_s",
    "import_torch_s",
    "import_transformers_s",
    "import_bitsandbytes_s",
    "read_weights_s",
    "quantize_s",
    "to_device_s",
    "save_s",
    "wire_up_s",
    "load_s",
    "ready_s",
    "first_token_s",
    "total_s",
)


@pytest.mark.system
def test_bench_load_reports_every_phase_and_uses_the_quantized_copy(tiny_llava, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", DOCREAD_CACHE=str(tmp_path / "cache"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "docread",
            "bench",
            "load",
            "--model",
            str(tiny_llava),
            "--device",
            "cpu",
            "--quant",
            "4bit",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["benchmark"] == "load" and result["device"] == "cpu" and result["quant"] == "4bit"
    first, cached = result["runs"]
    assert (first["run"], first["qcache"], cached["run"], cached["qcache"]) == ("first", "written", "cached", "hit")
    for figures in (first, cached):
        for key in PHASES:
            assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] >= 0, key
        assert figures["generated_tokens"] == 1 and figures["ready_s"] <= figures["total_s"]
        assert figures["interpreter_s"] + figures["import_torch_s"] <= figures["ready_s"]
    assert first["quantize_s"] > 0 and cached["quantize_s"] == 0 and cached["save_s"] == 0
    assert result["cached_vs_first"] == pytest.approx(cached["ready_s"] / first["ready_s"], rel=0.01)
    assert {"torch", "transformers", "bitsandbytes", "docread"} <= result["versions"].keys()


@pytest.mark.system
def test_bench_load_names_a_missing_model(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", DOCREAD_CACHE=str(tmp_path / "cache"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "docread",
            "bench",
            "load",
            "--model",
            str(tmp_path / "absent"),
            "--device",
            "cpu",
            "--runs",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode != 0 and "absent" in run.stderr and "Traceback" not in run.stderr
