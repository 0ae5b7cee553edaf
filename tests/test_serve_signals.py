"""`docread serve` as a process of its own: SIGTERM stops accepting, finishes the requests in flight, exits 0."""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kit.forked import GROUP, Forked

pytestmark = [pytest.mark.usefixtures("forkserver"), pytest.mark.xdist_group(GROUP)]
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


def chat_body() -> dict:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (336, 336), (200, 30, 30)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "text", "text": "What is written here?"}, {"type": "image_url", "image_url": {"url": url}}]
    return {
        "model": "docread",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 48,
        "temperature": 1.0,
        "seed": 1,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.system
def test_sigterm_finishes_the_request_in_flight_and_exits_0(tiny_llava):
    port = free_port()
    # a process of its own (SIGTERM is the point), forked from this one: its start-up is tested elsewhere
    process = Forked(
        ["serve", "--model", tiny_llava, "--device", "cpu", "--port", port, "--quiet"],
        env=dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a safety bound: each wait below ends on its event
        while True:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = chat_body()
        with ThreadPoolExecutor(3) as pool:
            sent = [pool.submit(httpx.post, base + "/v1/chat/completions", json=body, timeout=120) for _ in range(3)]
            while True:  # all three in the server (served now, or queued), so SIGTERM finds them in flight
                health = httpx.get(base + "/health", timeout=60).json()
                if health["active"] + health["waiting"] >= 3 and health["running"]:
                    break
                assert time.monotonic() < deadline and not any(f.done() for f in sent), health
                time.sleep(0.005)
            process.send_signal(signal.SIGTERM)
            responses = [f.result(timeout=120) for f in sent]
        assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
        assert all(r.json()["choices"][0]["message"]["role"] == "assistant" for r in responses)
        assert process.wait(timeout=60) == 0
        with pytest.raises(httpx.HTTPError):  # no longer accepting
            httpx.get(base + "/health", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
