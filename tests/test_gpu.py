"""On a CUDA GPU (skipped without one; `.ci/gpu` runs them): 4-bit answers against the CPU, the fast decoder
against the plain one, batched greedy answers against batch 1, the out-of-memory fallback triggered for real,
a real out-of-memory halving `batch --batch-size 4` with every record written once,
four pages encoded in one pass, and three QLoRA steps. Tiny checkpoints throughout, but for the fallback, which
needs CLIP-L-sized activations. Without CUDA: `.ci/gpu`'s dry run, which also checks that docread reads images
without PyMuPDF."""

import importlib.util
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import docread

ROOT = Path(__file__).parents[1]
QUESTION = "What is written here?"
TOKENS = 12
LOGPROB_TOL = 0.1  # nats, on an answer's mean token log-prob: bf16 compute against fp32 (or CPU's bf16 kernel)
BATCH_LOGPROB_TOL = 0.05  # nats, the same: a padded batch's bf16 kernels against one row's, on one GPU
QUANTS = ("none", "4bit") if importlib.util.find_spec("bitsandbytes") else ("none",)  # 4-bit: carried wheels
needs_bnb = pytest.mark.skipif("4bit" not in QUANTS, reason="bitsandbytes is not installed (carry its wheel)")


def noise(seed: int, size=(700, 500)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def greedy(reader, image, **options):
    stream = reader.stream(image, QUESTION, max_new_tokens=TOKENS, **options)
    "".join(stream)
    return stream.tokens, stream.answer.score


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.system
@pytest.mark.skipif(has_cuda(), reason="on a GPU .ci/gpu runs for real, not as a dry run")
def test_gpu_check_dry_run_skips_every_cuda_step_and_reads_images_without_pymupdf(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), NO_COLOR="1")
    run = subprocess.run(["bash", str(ROOT / ".ci" / "gpu")], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    assert report["cuda"] is False and report["dry_run"] is True and report["failed"] == []
    steps = {step["name"]: step for step in report["steps"]}
    assert steps["docread_without_pymupdf"]["status"] == "ok"
    assert steps["docread_without_pymupdf"]["numbers"]["pymupdf_imported"] is False
    skipped = [step for step in report["steps"] if step["status"] == "skipped"]
    assert len(skipped) == len(steps) - 1 and all("no CUDA" in step["reason"] for step in skipped)
    assert all(f"{step['name']}: skipped" in run.stdout + run.stderr for step in skipped)  # one line each
    assert (tmp_path / "gpu-check.log").is_file()


@pytest.fixture(scope="module")
def readers(tiny_llava_next):
    load = lambda device, quant: docread.load(str(tiny_llava_next), device=device, quant=quant)  # noqa: E731
    return {(d, q): load(d, q) for d in ("cpu", "cuda") for q in QUANTS}


@pytest.mark.cuda
def test_cuda_answers_match_the_cpu(readers):
    """Unquantized: CUDA (bf16) gives CPU fp32's greedy tokens. 4-bit: both devices hold the same NF4 weights
    (quantizing changes them, so fp32 is no reference there), and give the same tokens."""
    image = noise(0)
    for quant in QUANTS:
        cpu_tokens, cpu_score = greedy(readers["cpu", quant], image)
        cuda_tokens, cuda_score = greedy(readers["cuda", quant], image)
        assert cuda_tokens == cpu_tokens and len(cuda_tokens) == TOKENS, quant
        assert cuda_score == pytest.approx(cpu_score, abs=LOGPROB_TOL), quant
    assert readers["cuda", QUANTS[-1]].base.device.type == "cuda"


@pytest.mark.cuda
def test_fast_decoder_gives_the_plain_decoders_tokens_on_cuda(readers):
    for quant in QUANTS:
        reader = readers["cuda", quant]
        for seed in (1, 2):
            assert greedy(reader, noise(seed), fast=True)[0] == greedy(reader, noise(seed))[0], (quant, seed)


@pytest.mark.cuda
def test_four_pages_encoded_in_one_pass_answer_as_one_at_a_time(readers, tmp_path):
    from docread.intake import open_document
    from docread.pagework import encode_group
    from docread.settings import Settings

    reader = readers["cuda", QUANTS[-1]]
    images = [noise(10 + i, (600 + 40 * i, 480)) for i in range(4)]
    images[0].save(tmp_path / "pages.tiff", save_all=True, append_images=images[1:])
    settings = Settings(max_new_tokens=TOKENS)
    with open_document(str(tmp_path / "pages.tiff")) as document:
        assert len(document.pages) == 4
        group = encode_group(reader, document, document.pages, [QUESTION], settings)
        assert group is not None and len(group) == 4
        for image, encoded in zip(images, group):
            stream = reader.answer(encoded, QUESTION, max_new_tokens=TOKENS)
            "".join(stream)
            encoded.release()
            alone, score = greedy(reader, image)
            assert stream.tokens == alone
            assert stream.answer.score == pytest.approx(score, abs=LOGPROB_TOL)


def batched_against_alone(reader, fast: bool) -> list[tuple]:
    """(batched, alone) Answers of `answer_many` over three pages of different sizes (prefix lengths), three
    prompt lengths and three max_new_tokens, and of the same requests answered one at a time."""
    from docread.views.encoded import PageQuestion

    questions = ["What?", QUESTION, "What is the total amount due on this invoice, exactly?"]
    images = [noise(30 + i, size) for i, size in enumerate(((700, 500), (320, 320), (400, 1100)))]
    pages = [reader.encode(lambda w, h, im=im: im.resize((w, h)), im.width, im.height, questions) for im in images]
    requests = [PageQuestion(pages[i], questions[i], n) for i, n in enumerate((TOKENS, 5, 9))]
    requests.append(PageQuestion(pages[0], questions[2], TOKENS))  # a page twice in one batch
    batched = reader.answer_many(requests, fast=fast)
    alone = []
    for r in requests:
        stream = reader.answer(r.encoded, r.question, max_new_tokens=r.max_new_tokens, fast=fast)
        "".join(stream)
        alone.append(stream.answer)
    for page in pages:
        page.release()
    return list(zip(batched, alone))


@pytest.mark.cuda
@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
def test_batched_greedy_answers_equal_batch_1_on_cuda(readers, fast):
    """Greedy answers decoded as one batch are batch 1's, token for token (text, length, stop) on CUDA, for
    every quantization; their scores agree within BATCH_LOGPROB_TOL nats (bf16: a padded batch's kernels
    round differently from one row's; fp32 on the CPU is exact, tests/test_batched.py)."""
    for quant in QUANTS:
        for got, expected in batched_against_alone(readers["cuda", quant], fast):
            assert (got.answer, got.generated_tokens, got.stopped_by) == (
                expected.answer,
                expected.generated_tokens,
                expected.stopped_by,
            ), quant
            assert got.score == pytest.approx(expected.score, abs=BATCH_LOGPROB_TOL), quant


@pytest.mark.cuda
def test_out_of_memory_falls_back_to_fewer_tiles_for_real(tmp_path):
    """Cap this process's GPU memory between what a page needs at 0 and at 16 tiles: the page is answered,
    degraded, instead of failing."""
    import torch

    from docread.intake import open_document
    from docread.pagework import encode_with_fallback
    from docread.settings import Settings
    from docread.testing import TEXT, build_reader

    reader = build_reader(device="cuda", quant="none", text=TEXT, vocab_size=512)  # CLIP-L, a toy LLM
    noise(3, (2600, 2000)).save(tmp_path / "page.png")
    settings = Settings(max_new_tokens=4)

    def peak(budget: int) -> int:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        encoded, degraded = encode_with_fallback(
            reader, document, page, [QUESTION], replace(settings, max_slices=budget)
        )
        assert not degraded
        used = torch.cuda.max_memory_allocated() - before
        encoded.release()
        return used

    with open_document(str(tmp_path / "page.png")) as document:
        page = document.pages[0]
        at_16, at_0 = peak(16), peak(0)
        assert at_16 > 2 * at_0, (at_16, at_0)
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(reader.base.device).total_memory
        cap = torch.cuda.memory_reserved() + (at_0 + at_16) // 2
        torch.cuda.set_per_process_memory_fraction(cap / total, reader.base.device)
        try:
            encoded, degraded = encode_with_fallback(reader, document, page, [QUESTION], settings)
            assert degraded and encoded.page_plan.max_slices < 16, encoded.page_plan.max_slices
            "".join(reader.answer(encoded, QUESTION, max_new_tokens=4))
            encoded.release()
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, reader.base.device)
            torch.cuda.empty_cache()


@pytest.mark.cuda
def test_a_real_out_of_memory_halves_the_batch_and_writes_every_record_once(readers, tmp_path, monkeypatch):
    """`batch --batch-size 4` where 4 rows do not fit: each decode batch's prefill first takes GPU memory for
    its rows (a third of what is free, a row), so 4 rows raise a real torch.cuda.OutOfMemoryError from the
    caching allocator and 2 do not. The batch halves (4 -> 2) and every (page, question) is written once,
    with batch 1's answer."""
    import torch

    from docread.batch.core import record_log, run_batch
    from docread.batch.local import LocalEngine
    from docread.generate.dynamic import DynamicStep
    from docread.reader import DocReader
    from docread.settings import Settings

    reader = readers["cuda", "none"]
    paths = []
    for n in range(2):
        noise(30 + n, (300 + 60 * n, 400)).save(tmp_path / f"{n}.png")
        paths.append(str(tmp_path / f"{n}.png"))
    questions, settings = ["What is the total?", "Who signed it?"], Settings(max_new_tokens=4, max_slices=1)

    def records(engine, name: str) -> dict:
        sink = record_log(str(tmp_path / name), resume=False)
        assert run_batch(engine, paths, questions, sink, settings=settings) == 0
        sink.close()
        lines = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        keyed = {line["key"]: line for line in lines}
        assert len(keyed) == len(lines) == 4  # every pair once
        return keyed

    alone = records(LocalEngine(reader, batch_size=1), "alone.jsonl")
    torch.cuda.empty_cache()
    share = torch.cuda.mem_get_info(reader.base.device)[0] // 3  # a row's memory: 2 rows fit, 4 do not
    prefill, sizes, refused = DynamicStep.prefill, [], []
    stream_many = DocReader.stream_many

    def hungry(self, inputs_embeds, **kwargs):
        try:
            held = torch.empty(inputs_embeds.shape[0] * share, dtype=torch.uint8, device=inputs_embeds.device)
        except torch.cuda.OutOfMemoryError:
            refused.append(inputs_embeds.shape[0])
            raise
        del held
        return prefill(self, inputs_embeds, **kwargs)

    def noted(self, requests, *, fast=False):
        sizes.append(len(requests))
        return stream_many(self, requests, fast=fast)

    monkeypatch.setattr(DynamicStep, "prefill", hungry)
    monkeypatch.setattr(DocReader, "stream_many", noted)
    try:
        engine = LocalEngine(reader, batch_size=4)
        halved = records(engine, "halved.jsonl")
    finally:
        torch.cuda.empty_cache()
    assert refused == [4] and sizes[:3] == [4, 2, 2] and engine.halving.size == 2 and engine.halving.halvings == 1
    assert halved.keys() == alone.keys() and all(r["status"] == "ok" for r in halved.values())
    assert [halved[k]["answer"] for k in alone] == [alone[k]["answer"] for k in alone]


@pytest.mark.cuda
@needs_bnb
def test_three_qlora_steps_on_cuda(tiny_llava, tmp_path):
    import bitsandbytes as bnb
    import torch

    from docread.train import TrainConfig, start, steps

    records = []
    for i in range(4):
        noise(20 + i, (500 + 40 * i, 600)).save(tmp_path / f"{i}.png")
        records.append(
            {
                "id": f"s{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is the total?"},
                    {"from": "gpt", "value": f"{i}.00 dollars"},
                ],
            }
        )
    (tmp_path / "train.json").write_text(json.dumps(records))
    config = TrainConfig(
        model=str(tiny_llava),
        data=tmp_path / "train.json",
        output=tmp_path / "out",
        stage=2,
        max_steps=3,
        batch_size=2,
        lora_r=4,
        lora_alpha=8,
        max_slices=4,
        device="cuda",
        quant="4bit",
        precision="bf16",
        checkpointing=True,
        log_every=1,
        lr=1e-2,
        lr_rest=1e-2,
    )
    run = start(config)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in run.llava.modules())
    before = {n: p.detach().clone() for n, p in run.trainee.named_parameters() if "lora_" in n}
    done = [e for e in steps(run) if hasattr(e, "loss")]
    assert len(done) == 3 and all(np.isfinite(e.loss) for e in done)
    after = dict(run.trainee.named_parameters())
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)
    assert (tmp_path / "out" / "adapter.safetensors").is_file()
