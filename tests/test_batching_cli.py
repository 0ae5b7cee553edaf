"""Batched decoding through `ask` and `batch` (issue #21): page x question pairs decoded together give the
records each pair gives alone (greedy, plain and --fast); `batch --batch-size` packs pairs across files and
1 or 4 write the same records; an out-of-memory halves the batch and loses or repeats no record; the `auto`
plan from a model's config; bad sizes are one line and exit 2."""

import json
from types import SimpleNamespace

import pymupdf
import pytest
from kit.cli import docread
from PIL import Image

from docread.batch.core import record_log, run_batch
from docread.batch.local import LocalEngine
from docread.generate.sizing import AUTO, Halving, parse_batch_size, plan_batch
from docread.reader import DocReader
from docread.settings import Settings

QUESTIONS = ["What is the total?", "Who signed it?"]
TOKENS = 6  # new tokens a pair: enough to differ between pages, cheap
SKIP = {"timing_ms"}  # what a batch changes: only the time it took


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A two-page PDF (pages of different shapes: different prefix lengths in one batch) and two images."""
    folder = tmp_path_factory.mktemp("batching")
    doc = pymupdf.open()
    for n, (w, h) in enumerate([(400, 300), (300, 600)]):
        page = doc.new_page(width=w, height=h)
        page.insert_text((30, 60), f"Total: {100 + n}.50 EUR", fontsize=14)
        page.insert_text((30, 100), f"Signed: Person {n}", fontsize=14)
    doc.save(folder / "a.pdf")
    Image.new("RGB", (320, 240), (200, 60, 60)).save(folder / "b.png")
    Image.new("RGB", (240, 400), (60, 60, 200)).save(folder / "c.png")
    return folder


@pytest.fixture
def batches(monkeypatch):
    """Every batch `DocReader.stream_many` decodes: the files of its rows."""
    seen, real = [], DocReader.stream_many

    def spy(self, requests, *, fast=False):
        seen.append([r.encoded.file for r in requests])
        yield from real(self, requests, fast=fast)

    monkeypatch.setattr(DocReader, "stream_many", spy)
    return seen


def ask_json(tiny_llava, pdf, *args):
    run = docread("ask", pdf, *args, "--model", tiny_llava, "--device", "cpu", "--max-slices", 2,
                  "--max-new-tokens", TOKENS, "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_ask_pages_times_questions_in_one_batch_answers_as_each_pair_alone(
    tiny_llava, files, reuse_loaded_models, batches
):
    together = {
        fast: ask_json(tiny_llava, files / "a.pdf", *QUESTIONS, "--pages", "1-2", *(["--fast"] if fast else []))
        for fast in (False, True)
    }
    assert [len(b) for b in batches] == [4, 4]  # 2 pages x 2 questions: one batch, plain and --fast
    batches.clear()
    alone = {
        (q, page): ask_json(tiny_llava, files / "a.pdf", q, "--pages", page)[0] for q in QUESTIONS for page in (1, 2)
    }
    assert batches == []  # a single page's single question decodes alone (and streams), as before
    for records in together.values():  # --fast gives the plain decoder's tokens (tests/test_batched.py)
        for record in records:
            by_page = {p["page"]: p for p in record["pages"]}
            assert sorted(by_page) == [1, 2]
            for page in (1, 2):
                pair = alone[record["question"], page]
                assert by_page[page]["answer"] == pair["answer"]
                assert by_page[page]["score"] == pytest.approx(pair["score"], abs=1e-4)
            best = alone[record["question"], record["page"]]  # the best answer's record: the pair's own
            for key in ("answer", "generated_tokens", "prompt_tokens", "stopped_by", "evidence", "grounded"):
                assert record[key] == best[key], key


def batch_run(tiny_llava, files, out, *args):
    questions = out.parent / "q.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n")
    return docread("batch", *files, "-Q", questions, "-o", out, "--model", tiny_llava, "--device", "cpu",
                   "--max-slices", 2, "--max-new-tokens", TOKENS, *args)  # fmt: skip


def records_of(path) -> dict[str, dict]:
    """The log's records by key, timing aside, scores to 4 decimals (a batch's matmuls sum in another order)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    keyed = {r["key"]: {k: v for k, v in r.items() if k not in SKIP} for r in records}
    assert len(keyed) == len(records)  # each (file, page, question) once
    for record in keyed.values():
        record["score"] = None if record["score"] is None else round(record["score"], 4)
    return keyed


def test_batch_size_1_and_4_write_the_same_records_across_files(
    tiny_llava, files, reuse_loaded_models, batches, tmp_path
):
    inputs = [files / "b.png", files / "a.pdf"]  # 3 pages x 2 questions: batches of 4 and 2, the first of both files
    one = batch_run(tiny_llava, inputs, tmp_path / "one.jsonl", "--batch-size", 1)
    assert one.returncode == 0, one.stderr
    assert batches == []  # batch 1: every pair alone
    four = batch_run(tiny_llava, inputs, tmp_path / "four.jsonl", "--batch-size", 4, "--verbose")
    assert four.returncode == 0, four.stderr
    assert "batch 4 (as asked), KV per sequence" in four.stderr
    assert [len(b) for b in batches] == [4, 2] and len(set(batches[0])) == 2  # pairs of two files in one batch
    assert records_of(tmp_path / "one.jsonl") == records_of(tmp_path / "four.jsonl")
    assert len(records_of(tmp_path / "four.jsonl")) == 6


def test_out_of_memory_halves_the_batch_and_loses_or_repeats_no_record(tiny_reader, files, monkeypatch, tmp_path):
    """A batch of more than 2 rows runs out of memory after its first answer: the batch halves (4 -> 2), the
    finished answer is kept, the others retried; a run stopped early resumes to the same records."""
    import torch

    real = DocReader.stream_many
    sizes = []

    def tight(self, requests, *, fast=False):
        sizes.append(len(requests))
        for event in real(self, requests, fast=fast):
            yield event
            if len(requests) > 2 and not isinstance(event[1], str):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    paths = [str(files / name) for name in ("b.png", "c.png")]
    settings = Settings(max_new_tokens=4, max_slices=1)
    alone = tmp_path / "alone.jsonl"
    sink = record_log(str(alone), resume=False)
    assert run_batch(LocalEngine(tiny_reader, batch_size=1), paths, QUESTIONS, sink, settings=settings) == 0
    sink.close()

    monkeypatch.setattr(DocReader, "stream_many", tight)
    out = tmp_path / "out.jsonl"
    written = []
    sink = record_log(str(out), resume=False)
    engine = LocalEngine(tiny_reader, batch_size=4)
    run_batch(engine, paths, QUESTIONS, sink, settings=settings, on_record=written.append,
              should_stop=lambda: len(written) >= 2)  # fmt: skip
    sink.close()
    assert sizes[:2] == [4, 2] and engine.halving.size == 2 and engine.halving.halvings == 1
    assert 2 <= len(out.read_text().splitlines()) < 4
    sink = record_log(str(out), resume=True)
    assert run_batch(engine, paths, QUESTIONS, sink, settings=settings) == 0
    sink.close()
    assert records_of(out) == records_of(alone)  # every record once, each what batch 1 wrote
    sink = record_log(str(out), resume=True)
    run_batch(engine, paths, QUESTIONS, sink, settings=settings)  # nothing owed: nothing appended
    sink.close()
    assert len(out.read_text().splitlines()) == 4


def test_halving_keeps_finished_items_and_order():
    """The loop alone: items 0..6, batches over 2 rows run out after their first result."""
    from torch.cuda import OutOfMemoryError

    tried = []

    def decode(batch):
        tried.append(list(batch))
        for i, item in enumerate(batch):
            yield i, item * 10
            if len(batch) > 2:
                raise OutOfMemoryError("simulated")

    heard = []
    halving = Halving(4, on_halve=heard.append)
    got = list(halving.run(range(7), decode, alone=lambda item, error: None))
    assert sorted(got) == [(i, i * 10) for i in range(7)] and len(got) == 7
    assert tried[:3] == [[0, 1, 2, 3], [1, 2], [3, 4]] and halving.size == 2 and heard == [2]


def test_alone_out_of_memory_is_the_items_own_result():
    from torch.cuda import OutOfMemoryError

    def decode(batch):
        if batch == ["big"]:
            raise OutOfMemoryError("simulated")
        yield 0, batch[0]

    got = list(Halving(1).run(["a", "big", "b"], decode, alone=lambda item, error: f"{item}: {type(error).__name__}"))
    assert got == [("a", "a"), ("big", "big: OutOfMemoryError"), ("b", "b")]


LLAMA_7B_GQA = SimpleNamespace(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096)


@pytest.mark.parametrize(
    ("free_gib", "device", "size"),
    [(10, "cuda", 10), (100, "cuda", 64), (100, "cpu", 16), (4, "cuda", 4), (0.1, "cuda", 1)],
)
def test_auto_plan_from_a_config(free_gib, device, size):
    # 32 layers x 2 x 8 kv heads x 128 head dim x 2 bytes = 128 KiB a token; 4096 tokens: 512 MiB a sequence
    plan = plan_batch(LLAMA_7B_GQA, dtype_bytes=2, sequence_tokens=4096, free=int(free_gib * 2**30), device=device)
    assert plan.kv_per_sequence == 512 * 2**20 and plan.size == size  # half of free, whole sequences, capped
    assert plan.line().startswith(f"batch {size} (auto), KV per sequence 512.0 MiB, free ")


def test_a_number_is_taken_as_asked_and_head_dim_read_when_given():
    config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, head_dim=16)
    plan = plan_batch(config, dtype_bytes=4, sequence_tokens=100, free=0, requested=3)
    assert plan.size == 3 and plan.kv_per_sequence == 2 * 2 * 4 * 16 * 4 * 100  # no kv heads given: all heads
    assert parse_batch_size("AUTO") == AUTO and parse_batch_size("8") == 8


@pytest.mark.parametrize("value", ["0", "x", "-2", "1.5"])
def test_bad_batch_sizes_are_one_line_and_exit_2(tmp_path, value):
    run = docread("batch", tmp_path, "-Q", tmp_path / "q.txt", "-o", tmp_path / "o.jsonl", "--batch-size", value)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert f"--batch-size {value}" in run.stderr and "auto" in run.stderr


def test_a_batch_size_with_a_server_says_the_server_batches(tmp_path):
    run = docread("batch", tmp_path, "-Q", tmp_path / "q.txt", "-o", tmp_path / "o.jsonl", "--batch-size", 4,
                  "--server", "http://127.0.0.1:9")  # fmt: skip
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--max-batch" in run.stderr, run.stderr


def test_a_question_over_the_context_is_its_own_error_and_the_batch_goes_on(tiny_reader, batches):
    """--max-new-tokens leaves room for the two short questions, not the long one: the long one is a
    context_overflow record, the short ones are decoded together (each stopped at once by an EOS-only
    constraint, so the big room costs nothing)."""
    import torch

    from docread.pagework import answer_pages, page_work

    image = Image.new("RGB", (320, 240), (90, 160, 90))
    short, long = ["What?", "Who?"], "Which " + "word " * 60 + "is it?"
    encoded = tiny_reader.encode(lambda w, h: image.resize((w, h)), *image.size, short, max_new_tokens=8)
    room = tiny_reader.context - max(tiny_reader.context_needed(encoded, q) for q in short)
    eos = tiny_reader.eos_token_ids

    def only_eos(logits, tokens):
        kept = torch.full_like(logits, float("-inf"))
        kept[..., eos] = logits[..., eos]
        return kept

    settings = Settings(max_new_tokens=room)
    work = page_work(None, SimpleNamespace(number=1), [short[0], long, short[1]], settings, encoded=encoded,
                     constrain=only_eos)  # fmt: skip
    results = {r.question: r for _, r in answer_pages(tiny_reader, [work], settings, batch=Halving(4))}
    assert results[long].answer is None and results[long].error.code == "context_overflow"
    assert all(results[q].error is None and results[q].answer.stopped_by == "eos" for q in short)
    assert [len(b) for b in batches] == [2]
