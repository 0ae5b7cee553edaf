"""`docread bench throughput`: many pages at once. Batched reading (`DocReader.encode_pages`, then
`answer_many` over page x question requests) at several batch sizes, `serve` under concurrent clients
(`bench.serveload`), and the peer: transformers' `generate` on a padded batch of the same pages.

Every answer decodes exactly `max_new_tokens` tokens, on every side: the reader's EOS list is emptied (random
weights would otherwise stop anywhere) and the peer's `generate` gets `min_new_tokens`. Each figure is the
best of `repeats` timed passes after one warm-up (a shared machine's load only ever slows a pass down).
Returns one dict (the `--json` object); prints nothing.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from docread.bench.speedsetup import SYNTHETIC, load_model, write_pages
from docread.bench.speedsetup import questions as make_questions
from docread.bench.timing import Clock, environment, rates
from docread.errors import UsageError
from docread.generate.sizing import AUTO, DEFAULT_MAX_BATCH
from docread.model.weights import QUANT_CHOICES

QUESTIONS = make_questions(5)  # page i is asked QUESTIONS[i % 5]: prompts of five lengths, padded together


@dataclass(frozen=True)
class ThroughputOptions:
    model: str | None = None
    synthetic: str | None = None  # "tiny" | "real"
    pages: int = 16  # pages read at every batch size (one question each)
    batch_sizes: tuple = (1, 4, 8, 16, AUTO)
    clients: tuple = (1, 4, 8, 16)  # concurrent serve clients ((): no serve measurement)
    max_batch: int = DEFAULT_MAX_BATCH  # serve --max-batch, measured beside --max-batch 1
    requests: int | None = None  # serve requests at each number of clients (None: serveload.default_requests)
    peer_batch: int = 8  # pages per transformers generate call (0: no peer)
    max_new_tokens: int = 16
    max_slices: int | None = None
    fast: bool = True  # also batch in the static cache (`--fast`)
    repeats: int = 1
    threads: int = 1  # torch CPU threads (0: torch's default)
    device: str = "auto"
    quant: str = "auto"

    def __post_init__(self):
        if self.model is not None and self.synthetic is not None:
            raise UsageError("--model and --synthetic exclude each other: choose one")
        if self.synthetic not in (None, *SYNTHETIC):
            raise UsageError(f"--synthetic {self.synthetic!r}: choose tiny or real")
        if self.model is None and self.synthetic is None:
            raise UsageError("give --model (a LLaVA checkpoint) or --synthetic tiny|real")
        if self.quant not in QUANT_CHOICES:
            raise UsageError(f"--quant {self.quant!r}: choose {', '.join(QUANT_CHOICES)}")
        if not self.batch_sizes:
            raise UsageError("--batch-sizes: give at least one size (e.g. 1,4,8,16,auto)")
        for size in self.batch_sizes:
            if size != AUTO and (not isinstance(size, int) or size < 1):
                raise UsageError(f"--batch-sizes: {size!r} is neither a whole number of at least 1 nor auto")
        if any(not isinstance(c, int) or c < 1 for c in self.clients):
            raise UsageError(f"--clients {','.join(map(str, self.clients))}: each must be a whole number, at least 1")
        lows = (("pages", 1), ("max_batch", 1), ("peer_batch", 0), ("max_new_tokens", 2), ("repeats", 1))
        for name, low in (*lows, ("threads", 0), ("requests", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise UsageError(f"--{name.replace('_', '-')} {value}: must be at least {low}")


def parse_sizes(text: str, option: str, *, auto: bool) -> tuple:
    """'1,4,8,auto' -> (1, 4, 8, 'auto'); a bad item is a UsageError naming `option`."""
    sizes = []
    for item in (part.strip() for part in text.split(",")):
        if auto and item == AUTO:
            sizes.append(AUTO)
        elif item.isdigit() and int(item) >= 1:
            sizes.append(int(item))
        else:
            allowed = "whole numbers of at least 1" + (" or auto" if auto else "")
            raise UsageError(f"{option} {text!r}: {item!r} is not one of {allowed} (e.g. {option} 1,4,8,16)")
    return tuple(dict.fromkeys(sizes))


# -- auto: the batch size free memory holds ------------------------------------------------------------
def auto_plan(reader, page, options: ThroughputOptions) -> dict:
    """`auto`'s batch for pages like `page`, as `docread batch --batch-size auto` plans it
    (`docread.generate.sizing`): a row's positions are its prefix (prompt and image), the question and
    max_new_tokens, as `DocReader.context_needed` counts them; never more rows than pages."""
    from docread.generate.sizing import HEADROOM, free_memory, plan_batch

    page_plan, ids = reader.plan(
        page.width, page.height, QUESTIONS, max_slices=options.max_slices, max_new_tokens=options.max_new_tokens
    )
    sequence = page_plan.tokens.image_tokens + len(ids) - 1 + options.max_new_tokens
    device = reader.base.device
    plan = plan_batch(
        reader.base.model.config.text_config,
        dtype_bytes=reader.base.dtype.itemsize,
        sequence_tokens=sequence,
        free=free_memory(device),
        device=device.type,
    )
    return {
        "batch_size": min(plan.size, options.pages),
        "kv_bytes_per_row": plan.kv_per_sequence,
        "free_bytes": plan.free,
        "share": HEADROOM,
        "sequence_tokens": sequence,
    }


# -- docread: batched reading ------------------------------------------------------------------------------
def question(page_index: int) -> str:
    """What the page at `page_index` is asked, everywhere (docread, the peer, serve)."""
    return QUESTIONS[page_index % len(QUESTIONS)]


def encode_all(
    reader, document, pages: Sequence, options: ThroughputOptions, clock: Clock
) -> tuple[list, float, float]:
    """Every page rendered and through the vision encoder, `VISION_BATCH` pages a pass (as `docread batch`
    does), once for every batch size: encoding does not depend on how many answers decode together."""
    from docread.batch.engine import VISION_BATCH
    from docread.pagework import page_source

    clock.sync()
    start, cpu = time.perf_counter(), time.process_time()
    encoded = []
    for at in range(0, len(pages), VISION_BATCH):
        sources = [page_source(document, page) for page in pages[at : at + VISION_BATCH]]
        encoded += reader.encode_pages(
            sources, QUESTIONS, max_slices=options.max_slices, max_new_tokens=options.max_new_tokens
        )
    clock.sync()
    return encoded, time.perf_counter() - start, time.process_time() - cpu


def answer_batched(reader, encoded: Sequence, size: int, options: ThroughputOptions, clock: Clock, *, fast: bool):
    """Answer one question on every encoded page, `size` pages at a time: their prompt prefixes prefilled,
    then their answers decoded as one batch (`DocReader.answer_many`); the prefixes freed after. Answering is
    timed by the wall clock and by this process's CPU time (steadier on a shared machine)."""
    from docread.views.encoded import PageQuestion

    prefill_s = answer_s = cpu_s = prefill_cpu_s = 0.0
    tokens = answered = 0
    for at in range(0, len(encoded), size):
        chunk = encoded[at : at + size]
        clock.sync()
        start, prefill_cpu = time.perf_counter(), time.process_time()
        for page in chunk:
            page.cache  # noqa: B018  the page's prefix, prefilled as reading a page does (not batched)
        clock.sync()
        middle, cpu = time.perf_counter(), time.process_time()
        answers = reader.answer_many(
            [PageQuestion(page, question(at + i), options.max_new_tokens) for i, page in enumerate(chunk)],
            fast=fast,
        )
        clock.sync()
        prefill_s, answer_s = prefill_s + middle - start, answer_s + time.perf_counter() - middle
        cpu_s += time.process_time() - cpu
        prefill_cpu_s += cpu - prefill_cpu
        for page in chunk:
            page.release()
        tokens += sum(answer.generated_tokens for answer in answers)
        answered += len(answers)
    return {
        "pages": answered,
        "tokens": tokens,
        "prefill_s": prefill_s,
        "answer_s": answer_s,
        "answer_cpu_s": cpu_s,
        "prefill_cpu_s": prefill_cpu_s,
    }


def measure_batch(bench, document, pages, options, clock, log) -> tuple[list[dict], dict | None]:
    """The batch rows, plain and (when asked) fast, and `auto`'s plan. A row's time is the pages' encoding
    (measured once) plus their prefixes' prefill and the batched answering (best of `repeats`)."""
    reader = bench.reader
    plan = auto_plan(reader, pages[0], options) if AUTO in options.batch_sizes else None
    encode_all(reader, document, pages[:1], options, clock)  # warm-up
    log(f"encoding {len(pages)} pages")
    encoded, encode_s, encode_cpu_s = encode_all(reader, document, pages, options, clock)
    rows = []
    for fast in (False, True) if options.fast else (False,):
        for size in options.batch_sizes:
            rows_now = plan["batch_size"] if size == AUTO else size
            # warm-up: one batch of this size (on CUDA, --fast compiles a graph per batch size)
            answer_batched(reader, encoded[:rows_now], rows_now, options, clock, fast=fast)
            runs = []
            for repeat in range(options.repeats):
                shown = f"{size} ({rows_now})" if size == AUTO else str(size)
                log(f"batch size {shown}{', fast' if fast else ''}: pass {repeat + 1} of {options.repeats}")
                runs.append(answer_batched(reader, encoded, rows_now, options, clock, fast=fast))
            run = min(runs, key=lambda r: r["prefill_s"] + r["answer_s"])
            elapsed = encode_s + run["prefill_s"] + run["answer_s"]
            cpu_s = encode_cpu_s + run["prefill_cpu_s"] + run["answer_cpu_s"]
            rows.append(
                {
                    "batch_size": rows_now,
                    "asked": size,
                    "fast": fast,
                    **rates(run["pages"], run["tokens"], elapsed),
                    "decode_tokens_per_s": round(run["tokens"] / run["answer_s"], 2),
                    "decode_tokens_per_cpu_s": round(run["tokens"] / run["answer_cpu_s"], 2),
                    "tokens_per_cpu_s": round(run["tokens"] / cpu_s, 2),
                    "pages": run["pages"],
                    "tokens": run["tokens"],
                    "elapsed_s": round(elapsed, 4),
                    "encode_s": round(encode_s, 4),
                    "prefill_s": round(run["prefill_s"], 4),
                    "answer_s": round(run["answer_s"], 4),
                    "answer_cpu_s": round(run["answer_cpu_s"], 4),
                    "cpu_s": round(cpu_s, 4),
                }
            )
    return rows, plan


# -- the run ---------------------------------------------------------------------------------------------
def _row(rows: list[dict], key: str, value) -> dict | None:
    return next((row for row in rows if row[key] == value), None)


def _ratio(a: dict | None, b: dict | None, key: str, under: str | None = None) -> float | None:
    if a is None or b is None or not b[under or key]:
        return None
    return round(a[key] / b[under or key], 3)


def ratios(result: dict) -> dict:
    """What the goals read: batch 8 against batch 1 and the peer; serve at 8 clients against 1."""
    batch, peer = result["batch"], result["peer"]
    one, eight = _row(batch, "batch_size", 1), _row(batch, "batch_size", 8)
    serve, alone = result["serve"], result["serve_one_at_a_time"]
    s1, s8 = _row(serve, "clients", 1), _row(serve, "clients", 8)
    return {
        "batch8_vs_batch1": _ratio(eight, one, "tokens_per_s"),
        "batch8_vs_batch1_decode": _ratio(eight, one, "decode_tokens_per_s"),
        "batch8_vs_batch1_decode_cpu": _ratio(eight, one, "decode_tokens_per_cpu_s"),
        "batch1_vs_peer": _ratio(one, peer, "tokens_per_s"),
        "batch8_vs_peer": _ratio(eight, peer, "tokens_per_s"),
        "batch8_vs_peer_cpu": _ratio(eight, peer, "tokens_per_cpu_s"),
        "serve8_vs_serve1": _ratio(s8, s1, "requests_per_s"),
        "serve8_p99_vs_serve1_p99": _ratio(s8, s1, "p99_s"),
        "serve8_vs_one_at_a_time8": _ratio(s8, _row(alone, "clients", 8), "requests_per_s"),
    }


def run_throughput(
    options: ThroughputOptions, *, serve_app: Callable | None = None, log: Callable[[str], None] = lambda m: None
) -> dict:
    """Run every side; the result is the `--json` object. `serve_app(reader, max_batch=, cache_pages=)` makes
    the server's app (`docread.serve.create_app`); without it, serve is not measured. The torch thread count
    and the reader's EOS list are what they were once it returns."""
    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="docread-throughput-") as workdir:
            log("building the model" if options.synthetic else "loading the model")
            bench = load_model(
                options.model,
                options.synthetic,
                device=options.device,
                quant=options.quant,
                workdir=Path(workdir),
                llava=True,
            )
            eos, bench.reader.eos_token_ids = bench.reader.eos_token_ids, []  # every answer: max_new_tokens
            try:
                sides = _measure(bench, options, Path(workdir), serve_app, log)
            finally:
                bench.reader.eos_token_ids = eos
            machine = environment(bench)
    finally:
        torch.set_num_threads(threads)
    result = {
        "benchmark": "throughput",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **asdict(options),
        "model": bench.name,
        **machine,
        "questions": QUESTIONS,
        **sides,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
    }
    result["ratios"] = ratios(result)
    return result


def _measure(bench, options: ThroughputOptions, workdir: Path, serve_app, log) -> dict:
    """The batch rows, auto's plan, the peer and serve, on `options.pages` synthetic PDF pages."""
    from docread.bench.peer import measure_peer
    from docread.bench.serveload import default_requests, measure_serve, page_images
    from docread.intake import open_document
    from docread.intake.limits import Limits

    clock = Clock(bench.reader.base.device)
    pdf = write_pages(workdir / "pages.pdf", options.pages)
    # every page is rendered several times (docread, the peer, serve's uploads): no --timeout on our own file
    with open_document(str(pdf), limits=Limits(timeout_s=float("inf"))) as document:
        pages = list(document.pages)
        rows, plan = measure_batch(bench, document, pages, options, clock, log)
        peer = None
        if options.peer_batch:
            peer = measure_peer(
                bench,
                document,
                pages,
                size=options.peer_batch,
                tokens=options.max_new_tokens,
                repeats=options.repeats,
                clock=clock,
                questions=[question(i) for i in range(len(pages))],
                log=log,
            )
        images = page_images(document, pages)
    serve = measure_serve(
        bench.reader,
        serve_app,
        images,
        options.clients,
        requests=options.requests or default_requests(options.pages, options.clients),
        max_batch=options.max_batch,
        questions=[question(i) for i in range(len(pages))],
        max_new_tokens=options.max_new_tokens,
        max_slices=options.max_slices,
        repeats=options.repeats,
        log=log,
    )
    return {
        "batch": [row for row in rows if not row["fast"]],
        "batch_fast": [row for row in rows if row["fast"]],
        "auto": plan,
        **serve,
        "peer": peer,
    }
