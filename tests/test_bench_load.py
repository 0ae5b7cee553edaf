"""`docread bench load` on the tiny checkpoint, 4-bit on CPU: every phase reported and non-negative, the first
run (a real subprocess: the process start is the point) rebuilds the quantized copy, the second reads it.
Timings are reported, never asserted. A model that is not there fails in the parent (in-process here)."""

import json
import math
import time

import pytest

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
@pytest.mark.needs("bitsandbytes")  # imported when the test runs, not at collection
def test_bench_load_reports_every_phase_and_uses_the_quantized_copy(tiny_llava, tmp_path, monkeypatch):
    import bitsandbytes.functional
    from kit.cli import docread

    from docread.bench import load

    # the command in-process; its first load runs in a fresh process of its own (the start is the point), the
    # second (the quantized copy read back: the cache is the point) here, through the same measuring code
    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", bitsandbytes.functional.quantize_4bit)  # restored
    fresh = load._child

    def child(model, device, quant, *, refresh):
        if refresh:
            return fresh(model, device, quant, refresh=True)
        return load._measure(model, device, quant, time.time())

    monkeypatch.setattr(load, "_child", child)
    args = ("bench", "load", "--model", tiny_llava, "--device", "cpu", "--quant", "4bit", "--json")
    run = docread(*args, env={"DOCREAD_CACHE": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["benchmark"] == "load" and result["device"] == "cpu" and result["quant"] == "4bit"
    first, cached = result["runs"]
    assert (first["run"], first["qcache"], cached["run"], cached["qcache"]) == ("first", "written", "cached", "hit")
    assert first["qcache_path"] == cached["qcache_path"] and first["qcache_path"].startswith(str(tmp_path / "cache"))
    for figures in (first, cached):
        for key in PHASES:
            assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] >= 0, key
        assert figures["generated_tokens"] == 1 and figures["ready_s"] <= figures["total_s"]
        assert figures["interpreter_s"] + figures["import_torch_s"] <= figures["ready_s"]
    assert first["import_torch_s"] > 0  # a fresh interpreter imported torch
    assert first["quantize_s"] > 0 and cached["quantize_s"] == 0 and cached["save_s"] == 0
    assert result["cached_vs_first"] == pytest.approx(cached["ready_s"] / first["ready_s"], rel=0.01, abs=5e-4)
    assert {"torch", "transformers", "bitsandbytes", "docread"} <= result["versions"].keys()


def test_bench_load_names_a_missing_model_before_starting_a_process(tmp_path, monkeypatch):
    """A model that is not there fails in the parent, at once, in one line: no child process is started."""
    from kit.cli import docread

    from docread.bench import load

    children = []
    monkeypatch.setattr(load, "_child", lambda *args, **kwargs: children.append(args))
    for model in (tmp_path / "absent", tmp_path, "no/such-model"):  # no folder; no model in it; not cached, offline
        run = docread("bench", "load", "--model", model, "--device", "cpu", "--runs", "1")
        assert run.returncode != 0 and str(model) in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and not children
