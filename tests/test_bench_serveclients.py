"""`docread bench throughput`'s client process (`docread.bench.serveclients`): it stays light (no torch,
transformers, httpx or numpy, the point of a process of its own), its prebuilt bodies are the chat request
the server reads, and a failing or hanging client process is one DocreadError line, killed at its bound.
The rows themselves are checked end to end in test_bench_throughput.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from docread.bench.serveclients import Load, page_body
from docread.bench.serveload import run_clients
from docread.errors import DocreadError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "httpx", "numpy", "PIL", "fastapi")


def test_the_client_process_imports_only_the_standard_library():
    code = "import sys, docread.bench.serveclients; print(sorted({m.split('.')[0] for m in sys.modules}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert not set(json.loads(run.stdout.replace("'", '"'))) & set(HEAVY)


def test_a_prebuilt_body_is_the_chat_request_with_the_question_spliced_in():
    plan = {"base": "http://127.0.0.1:1", "pages": ["data:image/png;base64,AAAA", "data:image/png;base64,BBBB"]}
    load = Load({**plan, "questions": ['Say "hi" \\ né?', "Total?"], "requests": 4, "max_new_tokens": 3})
    body = json.loads(load.body(2))
    assert body["max_tokens"] == 3 and body["docread"] == {"text": "off"}
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": 'Say "hi" \\ né? (2)'}  # quotes, backslash, non-ASCII: valid JSON
    assert image["image_url"]["url"].endswith("AAAA")
    assert json.loads(load.body(3))["messages"][0]["content"][0]["text"] == "Total? (3)"
    head, tail = page_body("data:,", 2, 0)
    assert json.loads(head + b'"q"' + tail)["docread"] == {"text": "off", "max_slices": 0}


def _plan(base: str) -> dict:
    return {"base": base, "pages": ["data:,"], "questions": ["Q?"], "requests": 1, "max_new_tokens": 2}


def test_a_failing_client_process_is_one_error_line():
    with socket.socket() as closed:  # a port nobody listens on: the first request is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DocreadError) as failed:
        run_clients({**_plan(f"http://127.0.0.1:{port}"), "clients": [1], "repeats": 1}, 60.0, lambda m: None)
    assert failed.value.code == "bench_serve"
    assert "client process failed" in failed.value.message and "ConnectionRefusedError" in failed.value.message
    assert "\n" not in failed.value.message


def test_a_client_process_past_its_bound_is_killed():
    with socket.socket() as silent:  # accepts (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(DocreadError, match=r"took over 0.5 s: killed"):
            run_clients({**_plan(base), "clients": [1], "repeats": 1}, 0.5, lambda m: None)
