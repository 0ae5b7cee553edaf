"""`docread bench throughput` on the session's tiny LLaVA-1.6 checkpoint (`--model`; `--synthetic tiny` builds
the same kind of model, as `bench speed` does), in-process, once, on the global view only (`--max-slices 0`):
every key the issue names is there with its type, each figure agrees with the counts and seconds it comes
from, every answer decoded exactly --max-new-tokens tokens (docread, the peer and serve); bad options exit 2
before a model loads; the peer of a LLaVA-1.5 checkpoint. No speed is asserted: the command measures it."""

from __future__ import annotations

import json

import pytest
from kit.cli import docread

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

PAGES, TOKENS = 2, 2
RUN = pytest.mark.weight(20)  # the one run: ~20 s on the loaded 2-core box, so its module goes to a worker first
REL = 0.02  # figures are rounded (3 decimals, or 2 for tokens/s): agreement within 2 %


@pytest.fixture(scope="module")
def result(tiny_llava_next):
    run = docread(
        *("bench", "throughput", "--model", tiny_llava_next, "--device", "cpu", "--quant", "none", "--json"),
        *("--pages", PAGES, "--batch-sizes", "1,2,auto", "--clients", "1,2", "--max-new-tokens", TOKENS),
        *("--peer-batch", 2, "--requests", 3, "--max-slices", 0),
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, run.stdout  # ONE object on stdout; progress went to stderr
    assert "batch size 2" in run.stderr and "serve --max-batch 8" in run.stderr
    return json.loads(lines[0])


def rate(count, seconds):
    return pytest.approx(count / seconds, rel=REL)


@RUN
def test_batch_rows_name_their_size_and_add_up(result):
    for key, fast in (("batch", False), ("batch_fast", True)):
        rows = result[key]
        assert [row["asked"] for row in rows] == [1, 2, "auto"]
        assert [row["batch_size"] for row in rows[:2]] == [1, 2]
        assert rows[2]["batch_size"] == result["auto"]["batch_size"] == PAGES  # auto: capped at the pages
        for row in rows:
            assert row["fast"] is fast
            assert isinstance(row["pages_per_s"], float) and isinstance(row["tokens_per_s"], float)
            assert row["pages"] == PAGES and row["tokens"] == PAGES * TOKENS  # EOS ignored: every token decoded
            assert row["elapsed_s"] == pytest.approx(row["encode_s"] + row["prefill_s"] + row["answer_s"], abs=2e-3)
            assert row["pages_per_s"] == rate(row["pages"], row["elapsed_s"])
            assert row["tokens_per_s"] == rate(row["tokens"], row["elapsed_s"])
            assert row["decode_tokens_per_s"] == rate(row["tokens"], row["answer_s"])
            assert row["decode_tokens_per_cpu_s"] == rate(row["tokens"], row["answer_cpu_s"])
            assert row["tokens_per_cpu_s"] == rate(row["tokens"], row["cpu_s"]) and row["cpu_s"] > row["answer_cpu_s"]
    auto = result["auto"]
    assert auto["kv_bytes_per_row"] > 0 and auto["free_bytes"] > 0 and auto["sequence_tokens"] > TOKENS


@RUN
def test_peer_is_transformers_generate_on_the_same_pages(result):
    peer = result["peer"]
    assert peer["runs"] == "LlavaNextForConditionalGeneration.generate"
    assert peer["batch_size"] == 2 and peer["pages"] == PAGES and peer["tokens"] == PAGES * TOKENS
    assert peer["pages_per_s"] == rate(peer["pages"], peer["elapsed_s"])
    assert peer["tokens_per_s"] == rate(peer["tokens"], peer["elapsed_s"])
    assert peer["tokens_per_cpu_s"] == rate(peer["tokens"], peer["cpu_s"])
    one = result["batch"][0]
    assert result["ratios"]["batch1_vs_peer"] == pytest.approx(one["tokens_per_s"] / peer["tokens_per_s"], rel=REL)


@RUN
def test_serve_rows_at_max_batch_and_one_at_a_time(result):
    for key, max_batch in (("serve", 8), ("serve_one_at_a_time", 1)):
        rows = result[key]
        assert [row["clients"] for row in rows] == [1, 2]
        for row in rows:
            assert row["max_batch"] == max_batch and row["requests"] == 3
            assert row["tokens"] == 3 * TOKENS  # the server decoded every token too
            assert row["requests_per_s"] == rate(row["requests"], row["elapsed_s"])
            assert 0 < row["p50_s"] <= row["p99_s"] <= row["elapsed_s"]
    assert set(result["ratios"]) >= {"batch8_vs_batch1", "serve8_vs_serve1", "serve8_p99_vs_serve1_p99"}
    assert result["ratios"]["batch8_vs_batch1"] is None  # no batch size 8 was asked: no ratio made up


@RUN
def test_the_result_says_where_it_was_measured(result):
    assert result["benchmark"] == "throughput" and result["max_slices"] == 0
    assert result["device"] == "cpu" and result["max_new_tokens"] == TOKENS
    assert len(result["load_average"]["before"]) == 3


@pytest.mark.parametrize(
    "args, named",
    [
        (("--batch-sizes", "1,0"), "--batch-sizes"),
        (("--batch-sizes", "2,x"), "--batch-sizes"),
        (("--clients", "1,auto"), "--clients"),
        (("--synthetic", "huge"), "--synthetic"),
        (("--max-new-tokens", "1"), "--max-new-tokens"),
    ],
)
def test_a_bad_option_exits_2_with_one_line(args, named):
    run = docread("bench", "throughput", *(("--synthetic", "tiny") if "--synthetic" not in args else ()), *args)
    assert run.returncode == 2, run.output
    assert named in run.stderr and "Traceback" not in run.stderr


def test_percentile_is_by_nearest_rank():
    from docread.bench.serveclients import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0 and percentile(values, 0.5) == 50.0
    assert percentile([3.0, 1.0], 0.99) == 3.0 and percentile([2.0], 0.5) == 2.0


def test_auto_is_the_batch_commands_plan_capped_at_the_pages(monkeypatch, tiny_reader):
    """`auto` sizes as `docread batch --batch-size auto` does (docread.generate.sizing), from the pages' own
    sequence length, and never takes more rows than there are pages."""
    from types import SimpleNamespace

    import docread.generate.sizing as sizing
    from docread.bench.throughput import ThroughputOptions, auto_plan

    page, options = SimpleNamespace(width=612, height=792), ThroughputOptions(model="m", pages=64)
    per_token = sizing.kv_bytes_per_token(tiny_reader.base.model.config.text_config, 4)
    assert per_token == 2 * 2 * 4 * 16 * 4  # 2 layers x keys and values x 4 KV heads x 16 per head x fp32
    monkeypatch.setattr(sizing, "free_memory", lambda device: 10**15)  # plenty: the CPU cap holds
    plan = auto_plan(tiny_reader, page, options)
    assert plan["kv_bytes_per_row"] == per_token * plan["sequence_tokens"] and plan["batch_size"] == sizing.CPU_CAP
    assert auto_plan(tiny_reader, page, ThroughputOptions(model="m", pages=3))["batch_size"] == 3
    monkeypatch.setattr(sizing, "free_memory", lambda device: 10 * plan["kv_bytes_per_row"])
    assert auto_plan(tiny_reader, page, options)["batch_size"] == 5  # half of free memory: 5 rows' worth
    monkeypatch.setattr(sizing, "free_memory", lambda device: plan["kv_bytes_per_row"] // 3)
    assert auto_plan(tiny_reader, page, options)["batch_size"] == 1  # never below one row


def test_the_peer_runs_llava_1_5_checkpoints_too(tiny_reader, tmp_path):
    """A LLaVA-1.5 checkpoint's peer is LlavaForConditionalGeneration with CLIP's processor."""
    import torch

    from docread.bench.peer import peer_generate
    from docread.bench.speedsetup import BenchModel, write_pages
    from docread.bench.timing import Clock
    from docread.intake import open_document

    bench = BenchModel(tiny_reader, "tiny-llava")
    side = tiny_reader.base.tokenizer.padding_side
    with open_document(str(write_pages(tmp_path / "page.pdf", 1))) as document:
        run = peer_generate(bench, document, document.pages, 1, TOKENS, Clock(torch.device("cpu")), questions=["What?"])
    assert bench.llava.config.model_type == "llava"
    assert run["pages"] == 1 and run["tokens"] == TOKENS and run["elapsed_s"] > 0
    assert tiny_reader.base.tokenizer.padding_side == side  # padded on the left for generate, then put back
