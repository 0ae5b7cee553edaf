"""Every chat-completions parameter through the OpenAI SDK against the app in-process (tests/test_serve.py's
loopback uvicorn thread): honoured (stop, system and earlier turns, top_p, logprobs, response_format, ...)
or refused with OpenAI's error shape (tools, n=2, penalties, an unknown model)."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("fastapi")

from test_serve import KEY, data_url, image_bytes, serving  # noqa: E402

pytestmark = pytest.mark.needs("openai")  # the SDK is imported when a test runs, not at collection

IMAGE = [{"type": "image_url", "image_url": {"url": data_url(image_bytes(3))}}]


def ask(text: str = "What is the total?", *, system: str | None = None, earlier: list | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += earlier or []
    return [*messages, {"role": "user", "content": [{"type": "text", "text": text}, *IMAGE]}]


@pytest.fixture(scope="module")
def url(tiny_reader):
    with serving(tiny_reader, api_key=KEY) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, timeout=120, max_retries=0)


def complete(client, **options):
    options.setdefault("model", "docread")
    options.setdefault("max_tokens", 12)
    return client.chat.completions.create(messages=options.pop("messages", ask()), **options)


# -- honoured ----------------------------------------------------------------------------------------
def test_stop_cuts_the_answer_before_the_first_stop_string(client):
    free = complete(client).choices[0].message.content
    assert len(free) > 3
    stop = free[2:4]
    cut = complete(client, stop=[stop, "\x00never"])
    assert cut.choices[0].message.content == free[: free.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = complete(client, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == free[: free.index(stop)]


def test_system_message_and_earlier_turns_go_into_the_prompt(client):
    alone = complete(client).usage.prompt_tokens
    with_system = complete(client, messages=ask(system="Answer in French, briefly.")).usage.prompt_tokens
    earlier = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi, ask away"}]
    with_turns = complete(client, messages=ask(earlier=earlier))
    assert alone < with_system
    assert alone < with_turns.usage.prompt_tokens
    assert with_turns.usage.model_extra["dropped_turns"] == 0


def test_the_oldest_turns_are_dropped_to_fit_and_reported(client):
    earlier = [{"role": r, "content": "word " * 300} for r in ("user", "assistant") * 4]
    raw = client.chat.completions.with_raw_response.create(model="docread", messages=ask(earlier=earlier), max_tokens=2)
    dropped = int(raw.headers["X-Docread-Dropped-Turns"])
    assert 0 < dropped <= len(earlier)
    assert raw.parse().usage.model_extra["dropped_turns"] == dropped


def test_top_p_keeps_only_the_nucleus(client):
    greedy = complete(client).choices[0].message.content
    nucleus = complete(client, temperature=1.5, seed=7, top_p=1e-9).choices[0].message.content
    sampled = [complete(client, temperature=1.5, seed=s).choices[0].message.content for s in (7, 8)]
    assert nucleus == greedy  # only the most likely token is left at each step
    assert greedy not in sampled  # and sampling without top_p does differ


def test_logprobs_and_top_logprobs(client):
    result = complete(client, logprobs=True, top_logprobs=3)
    content = result.choices[0].logprobs.content
    assert len(content) == result.usage.completion_tokens
    assert "".join(t.token for t in content).strip() == result.choices[0].message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.logprob <= 0
        assert token.logprob == pytest.approx(max(t.logprob for t in token.top_logprobs))  # greedy: the top one


def test_seed_and_temperature_repeat(client):
    one, two = (complete(client, temperature=1.0, seed=5).choices[0].message.content for _ in range(2))
    assert one == two


def test_max_completion_tokens_and_stream_usage(client):
    result = complete(client, max_tokens=None, max_completion_tokens=3)
    assert result.usage.completion_tokens <= 3
    chunks = list(complete(client, stream=True, stream_options={"include_usage": True}, max_tokens=3))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 3


def test_models_has_a_real_created_and_the_model_name_is_checked(client, tiny_reader):
    import openai

    (model,) = client.models.list().data
    assert abs(model.created - time.time()) < 3600
    assert complete(client, model=model.id).model == model.id
    with pytest.raises(openai.NotFoundError) as e:
        complete(client, model="gpt-4o")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


def test_sdk_default_fields_do_not_break_a_request(client):
    assert complete(client, user="ada", metadata={"k": "v"}, store=False, tool_choice="none").choices


# -- refused -----------------------------------------------------------------------------------------
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    "options, param",
    [
        ({"tools": [TOOL]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"5": 10}}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_what_docread_cannot_honour_is_a_400_naming_it(client, options, param):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        complete(client, **options)
    assert e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error"


def test_a_timeout_is_a_504_server_error(tiny_reader):
    import openai

    with serving(tiny_reader, request_timeout=0.000001) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", timeout=60, max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            complete(client)
    assert e.value.status_code == 504 and e.value.body["type"] == "server_error"


def test_port_0_announces_the_port_bound(tiny_reader):
    import uvicorn

    from docread.cli.serve import _server_class
    from docread.serve import create_app

    bound = []
    server = _server_class()(
        uvicorn.Config(create_app(tiny_reader), host="127.0.0.1", port=0, log_level="warning"), bound.append
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not bound:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    server.should_exit = True
    thread.join(30)
    assert bound[0] > 0


# -- structured outputs ------------------------------------------------------------------------------
def test_json_object_always_parses(client):
    pytest.importorskip("llguidance")
    for seed in range(3):
        result = complete(client, response_format={"type": "json_object"}, temperature=1.0, seed=seed, max_tokens=400)
        if result.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(result.choices[0].message.content), dict)
        else:
            assert result.choices[0].finish_reason == "length"


def test_parse_into_a_pydantic_model(client):
    pytest.importorskip("llguidance")
    from pydantic import BaseModel, Field

    class Line(BaseModel):
        label: str = Field(max_length=12)
        amount: int

    class Invoice(BaseModel):
        paid: bool
        lines: list[Line] = Field(max_length=2)

    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    for seed in range(3):
        result = parse(
            model="docread", messages=ask(), response_format=Invoice, max_tokens=600, temperature=1.0, seed=seed
        )
        assert result.choices[0].finish_reason == "stop"
        assert isinstance(result.choices[0].message.parsed, Invoice)


def test_an_unusable_schema_is_a_400(client):
    import openai

    pytest.importorskip("llguidance")
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, response_format=bad)
    assert e.value.body["param"] == "response_format"
