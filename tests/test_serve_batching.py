"""`docread serve --max-batch`: concurrent requests decoded as one running batch (continuous batching) on the
tiny model, in-process. Answers under concurrency equal the same requests sent alone (greedy, seeded, JSON
schema; streamed or not; mixed pages, prompts and lengths); a request arriving mid-batch joins it; a
cancelled request's row leaves and the others go on; --max-batch 1 is one at a time; a bad value exits 2."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from kit.cli import docread  # noqa: E402
from kit.serving import http, image_bytes, second_joins_mid_batch, serving  # noqa: E402

SAFETY_S = 120  # a bound on waits that follow events, never a timing


def body(page: int, question: str, tokens: int = 6, stream: bool = False, **extra) -> dict:
    url = "data:image/png;base64," + base64.b64encode(image_bytes(page)).decode()
    content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
    return {
        "model": "docread",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
        "stream": stream,
        "docread": {"max_slices": 0, "text": "off"},  # one view, no OCR: the cheapest page
        **extra,
    }


SCHEMA = {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "object"}}}
REQUESTS = [  # two pages, three prompt lengths, a shorter budget, streamed or not, seeded, a grammar
    body(1, "What?"),
    body(2, "What is written in the top left corner of this page, exactly?", tokens=2, stream=True),
    body(1, "Who signed it?", stream=True, temperature=1.0, seed=3),
    body(2, "What?", tokens=8, response_format=SCHEMA),
]


def answer(base: str, request: dict) -> str:
    """The answer's text, joined from the stream's chunks when streamed."""
    if not request["stream"]:
        response = http().post(base + "/v1/chat/completions", json=request, timeout=SAFETY_S)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]
    text = ""
    with http().stream("POST", base + "/v1/chat/completions", json=request, timeout=SAFETY_S) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                assert "error" not in event, event
                text += "".join(c["delta"].get("content") or "" for c in event["choices"])
    return text


def health(base: str) -> dict:
    return http().get(base + "/health", timeout=SAFETY_S).json()


@pytest.fixture(scope="module")
def alone(tiny_reader):
    """Each request sent alone to a one-at-a-time server (--max-batch 1: today's path, no batch)."""
    with serving(tiny_reader, max_batch=1) as base:
        answers = [answer(base, r) for r in REQUESTS]
        state = health(base)
        assert tiny_reader.joiner is None  # one at a time: the reader decodes each answer by itself
    assert state["max_batch"] == 1 and state["batch"]["peak"] == 1 and state["served"] == len(REQUESTS)
    assert all(answers) and answers[3].startswith("{")  # the grammar held
    return answers


def test_concurrent_requests_answer_as_each_alone(tiny_reader, alone):
    with serving(tiny_reader, max_batch=8) as base:
        with ThreadPoolExecutor(len(REQUESTS)) as pool:
            together = list(pool.map(lambda r: answer(base, r), REQUESTS, timeout=SAFETY_S * 2))
        state = health(base)
    assert together == alone
    assert state["max_batch"] == 8 and state["served"] == len(REQUESTS) and state["active"] == 0
    assert state["batch"]["rows"] == 0 and state["batch"]["peak"] >= 1
    assert tiny_reader.joiner is None  # the server stopped: the reader decodes alone again


def test_a_request_arriving_mid_batch_joins_it(tiny_reader, alone, monkeypatch):
    """The first request decodes; the second is sent only once the first is in the batch (after its first
    step), and the batch holds both at a later step."""
    joined_mid: list = []
    decoding = second_joins_mid_batch(monkeypatch, joined_mid, SAFETY_S)
    first, second = REQUESTS[3], REQUESTS[1]  # 8 tokens, then a streamed one
    with serving(tiny_reader, max_batch=8) as base, ThreadPoolExecutor(2) as pool:
        running = pool.submit(answer, base, first)
        assert decoding.wait(SAFETY_S)
        joining = pool.submit(answer, base, second)
        assert running.result(SAFETY_S) == alone[3] and joining.result(SAFETY_S) == alone[1]
        state = health(base)
    assert len(joined_mid) == 1 and state["batch"]["peak"] == 2


def test_a_cancelled_request_leaves_the_batch_and_the_others_go_on(tiny_reader, monkeypatch):
    """Three answers decode together; one's client leaves after its first piece: its row leaves the batch
    at the next step, the other two are what they are alone."""
    from docread.errors import DocreadError
    from docread.generate.joining import JoiningStep
    from docread.serve.batcher import Batcher
    from docread.serve.worker import Job

    steps, step = [], JoiningStep.__call__
    monkeypatch.setattr(JoiningStep, "__call__", lambda self, ids: steps.append(len(ids)) or step(self, ids))

    images = [image_bytes(20 + n, size=64) for n in range(3)]

    def reading(n: int, cancel: bool):
        def run(job: Job) -> list[int]:
            import io

            from PIL import Image

            image = Image.open(io.BytesIO(images[n]))
            with tiny_reader.open_page(image, "What?", max_slices=0, max_new_tokens=8) as encoded:
                stream = tiny_reader.answer(encoded, "What?", max_new_tokens=8)
                for _ in stream:
                    job.cancelled = job.cancelled or cancel  # what the app does when the client leaves
                    job.check()
            return stream.tokens

        return run

    alone = [reading(n, False)(Job(None, None, float("inf"))) for n in range(3)]

    async def together() -> list:
        loop = asyncio.get_running_loop()
        batcher = Batcher(tiny_reader, max_queue=8, max_batch=8)
        jobs = [Job(reading(n, n == 1), loop, time.monotonic() + SAFETY_S) for n in range(3)]
        for job in jobs:
            batcher.submit(job)
        batcher.start()
        outcomes = []
        for job in jobs:
            kind, value = await job.next()
            outcomes.append(value)
        await asyncio.to_thread(batcher.stop)
        return outcomes, batcher

    (first, cancelled, third), batcher = asyncio.run(together())
    assert first == alone[0] and third == alone[2] and len(alone[1]) == 8
    assert isinstance(cancelled, DocreadError) and cancelled.code == "cancelled"
    assert batcher.most_rows == 3 and batcher.served == 3 and not batcher.active and not batcher._owners
    assert steps[0] == 3 and steps[-1] == 2 and steps == sorted(steps, reverse=True) and len(steps) == 7
    assert tiny_reader.joiner is None


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_max_batch_exits_2(value):
    run = docread("serve", "--max-batch", value)
    assert run.returncode == 2 and "--max-batch" in run.stderr


def test_create_app_refuses_a_batch_of_none(tiny_reader):
    from docread.serve import create_app

    with pytest.raises(ValueError, match="max_batch 0"):
        create_app(tiny_reader, max_batch=0)
