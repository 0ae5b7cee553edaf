"""`docread serve --max-batch`'s batcher with requests run in-process (no HTTP): a request that is not streamed
is handed its tokens when its row ends, a streamed one as they come, and both answer as they do alone; a
non-streamed request whose client leaves still leaves the batch at the next step; one newcomer's failed
prefill is that request's error, and the batch goes on with the others."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from kit.serving import image_bytes

SAFETY_S = 120  # a bound on waits that follow events, never a timing
TOKENS = 6


@pytest.fixture(scope="module")
def images():
    return [image_bytes(40 + n, size=64) for n in range(3)]


@pytest.fixture
def steps(monkeypatch):
    """The rows of each decode step of the running batch, as it takes them."""
    from docread.generate.joining import JoiningStep

    taken, step = [], JoiningStep.__call__
    monkeypatch.setattr(JoiningStep, "__call__", lambda self, ids: taken.append(len(ids)) or step(self, ids))
    return taken


def reading(reader, image: bytes, seen: list | None = None, on_token=None):
    """A request's work: answer "What?" about `image`; `seen` gets `on_token()` as each piece of text comes."""

    def run(job) -> list[int]:
        from PIL import Image

        with reader.open_page(Image.open(io.BytesIO(image)), "What?", max_slices=0, max_new_tokens=TOKENS) as page:
            stream = reader.answer(page, "What?", max_new_tokens=TOKENS)
            for _ in stream:
                if seen is not None:
                    seen.append(on_token())
                job.check()
        return stream.tokens

    return run


def run_together(reader, runs, *, streams, during=None):
    """Each run a job of one Batcher (--max-batch 8), submitted before it starts; the outcomes in order."""
    from docread.serve.batcher import Batcher
    from docread.serve.worker import Job

    async def together():
        loop = asyncio.get_running_loop()
        batcher = Batcher(reader, max_queue=8, max_batch=8)
        jobs = [Job(run, loop, time.monotonic() + SAFETY_S, streams=s) for run, s in zip(runs, streams)]
        if during is not None:
            during(jobs)
        for job in jobs:
            batcher.submit(job)
        batcher.start()
        outcomes = []
        for job in jobs:
            while (event := await job.next())[0] not in ("done", "error"):
                pass
            outcomes.append(event[1])
        await asyncio.to_thread(batcher.stop)
        return outcomes, batcher

    return asyncio.run(together())


@pytest.fixture(scope="module")
def alone(tiny_reader, images):
    from docread.serve.worker import Job

    return [reading(tiny_reader, image)(Job(None, None, float("inf"))) for image in images]


def test_a_request_not_streamed_gets_its_tokens_when_its_row_ends(tiny_reader, images, alone, steps):
    streamed, whole = [], []
    runs = [
        reading(tiny_reader, images[0], streamed, lambda: len(steps)),
        reading(tiny_reader, images[1], whole, lambda: len(steps)),
    ]
    (first, second), batcher = run_together(tiny_reader, runs, streams=[True, False])
    assert first == alone[0] and second == alone[1]
    assert streamed and streamed[0] < TOKENS - 1 and streamed == sorted(streamed)  # text while it decodes
    assert whole and whole == [TOKENS - 1] * len(whole)  # all of it at once, after the row's last step
    assert steps == [2] * (TOKENS - 1) and batcher.served == 2 and not batcher.active and not batcher._owners


def test_a_request_not_streamed_whose_client_left_leaves_at_the_next_step(
    tiny_reader, images, alone, steps, monkeypatch
):
    from docread.generate.joining import JoiningStep
    from docread.serve.worker import Cancelled

    jobs, step = [], JoiningStep.__call__  # the fixture's, counting

    def leaving(self, ids):
        logits = step(self, ids)
        if len(steps) == 2:
            jobs[1].cancelled = True  # what the app does when the client closes the connection
        return logits

    monkeypatch.setattr(JoiningStep, "__call__", leaving)
    runs = [reading(tiny_reader, image) for image in images[:2]]
    (first, gone), batcher = run_together(tiny_reader, runs, streams=[True, False], during=jobs.extend)
    assert first == alone[0] and isinstance(gone, Cancelled)
    assert steps == [2, 2] + [1] * (TOKENS - 3)  # its row left before the third step
    assert batcher.served == 2 and not batcher._owners


def test_a_newcomers_failed_prefill_is_its_own_requests_error(tiny_reader, images, alone, steps, monkeypatch):
    from docread.generate.joining import JoiningStep

    rows, joins, join = [], [], JoiningStep.join  # rows: each request's prompt, in the order they first join

    def failing_second(self, inputs_embeds, prefixes):
        rows.extend(e for e in inputs_embeds if not any(e is row for row in rows))
        joins.append(len(inputs_embeds))
        if any(e is rows[1] for e in inputs_embeds):
            raise RuntimeError("prefill failed (simulated)")
        return join(self, inputs_embeds, prefixes)

    monkeypatch.setattr(JoiningStep, "join", failing_second)
    runs = [reading(tiny_reader, image) for image in images]
    (first, failed, third), batcher = run_together(tiny_reader, runs, streams=[False, True, False])
    assert first == alone[0] and third == alone[2]
    assert isinstance(failed, RuntimeError) and "simulated" in str(failed)
    # the three came together: prefilled together, which failed, then each alone; the batch went on with two
    assert joins == [3, 1, 1, 1] and steps == [2] * (TOKENS - 1), (joins, steps)
    assert batcher.served == 3 and not batcher.active and not batcher._owners and tiny_reader.joiner is None
