"""`docread serve` on the tiny checkpoint: the app in-process on a loopback uvicorn thread, the
official OpenAI SDK and httpx as clients; answers equal `docread ask --json`'s, bad input is a 4xx
and the server answers on; a real subprocess only for SIGTERM."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from kit.cli import docread  # noqa: E402
from kit.serving import KEY, http, image_bytes, serving, stable  # noqa: E402

# conftest: the CLI loads each (model, options) once; the OpenAI SDK is imported when a test runs
pytestmark = [pytest.mark.usefixtures("reuse_loaded_models"), pytest.mark.needs("openai")]

QUESTION = "What is written here?"
TOKENS = 8


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def reader(tiny_llava):
    from docread.loading import load

    return load(str(tiny_llava), device="cpu")


@pytest.fixture(scope="module")
def url(reader):
    with serving(reader, api_key=KEY, max_upload_mb=1) as base:
        yield base


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "square.png"
    path.write_bytes(image_bytes(0))
    return path


def sdk(url: str, key: str = KEY):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=60, max_retries=0)


def chat_messages(data: bytes, question: str = QUESTION, media: str = "image/png") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": question},
                {"type": "image_url", "image_url": {"url": data_url(data, media)}},
            ],
        }
    ]


def local_ask(tiny_llava, path, *args: str) -> list[dict]:
    run = docread(
        "ask", path, QUESTION, "--model", tiny_llava, "--device", "cpu", "--max-new-tokens", TOKENS, "--json", *args
    )
    assert run.returncode == 0, run.output
    return [json.loads(line) for line in run.stdout.splitlines()]


def get(url: str, path: str, **kw):
    return http().get(url + path, headers={"Authorization": f"Bearer {KEY}"}, timeout=30, **kw)


def post(url: str, path: str, **kw):
    kw.setdefault("headers", {"Authorization": f"Bearer {KEY}"})
    return http().post(url + path, timeout=60, **kw)


# -- answers: the same as ask --json ----------------------------------------------------------------
def test_chat_completion_equals_ask_json_streamed_or_not(url, tiny_llava, image_file):
    (expected,) = local_ask(tiny_llava, image_file, "--max-slices", "0")
    client = sdk(url)
    messages = chat_messages(image_file.read_bytes())
    done = client.chat.completions.create(
        model="docread", messages=messages, max_tokens=TOKENS, extra_body={"docread": {"max_slices": 0}}
    )
    assert done.choices[0].message.content == expected["answer"]
    assert done.usage.completion_tokens == expected["generated_tokens"]
    assert done.usage.prompt_tokens == expected["prompt_tokens"]
    assert done.choices[0].finish_reason == {"eos": "stop", "length": "length"}[expected["stopped_by"]]
    chunks = list(
        client.chat.completions.create(
            model="docread",
            messages=messages,
            max_tokens=TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"docread": {"max_slices": 0}},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected["answer"]
    assert chunks[-1].usage.completion_tokens == expected["generated_tokens"]


def test_documents_ask_equals_ask_json_and_reuses_the_encoded_page(url, tiny_llava, image_file):
    expected = local_ask(tiny_llava, image_file, "--max-slices", "0", "--seed", "3")
    before = get(url, "/health").json()["cache"]
    fields = {"question": [QUESTION, QUESTION], "max_slices": "0", "max_new_tokens": str(TOKENS), "seed": "3"}
    for _ in range(2):
        answer = post(
            url,
            "/v1/documents/ask",
            data=fields,
            files={"file": (str(image_file), image_file.read_bytes(), "image/png")},
        )
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
        records = [json.loads(line) for line in answer.text.splitlines()]
        assert [stable(r) for r in records] == [stable(r) for r in expected]
    after = get(url, "/health").json()["cache"]
    assert after["hits"] > before["hits"]  # the second request did not encode the page again


def test_a_pdf_page_through_chat_with_the_docread_pages_field(url, tiny_llava, tmp_path):
    import pymupdf

    doc = pymupdf.open()
    for n in range(2):
        doc.new_page(width=200, height=260).insert_text((30, 50), f"page {n + 1}", fontsize=12)
    path = tmp_path / "two.pdf"
    doc.save(path)
    (expected,) = local_ask(tiny_llava, path, "--max-slices", "0", "--pages", "2")
    done = sdk(url).chat.completions.create(
        model="docread",
        messages=chat_messages(path.read_bytes(), media="application/pdf"),
        max_tokens=TOKENS,
        extra_body={"docread": {"max_slices": 0, "pages": "2"}},
    )
    assert done.choices[0].message.content == expected["answer"]
    assert done.model_extra["docread"]["page"] == 2


# -- refusals: each a 4xx in OpenAI's shape, and the server answers on -------------------------------
def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def still_answers(url: str) -> None:
    assert get(url, "/v1/models").json()["data"][0]["object"] == "model"


def test_api_key_missing_or_wrong_is_401(url):
    import openai

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        error_of(http().get(url + "/v1/models", headers=headers, timeout=10), 401)
    with pytest.raises(openai.AuthenticationError):
        sdk(url, "wrong").models.list()
    assert http().get(url + "/health", timeout=10).json()["status"] == "ok"  # health needs no key
    still_answers(url)


def test_oversize_upload_is_413(url):
    big = image_bytes(1, size=1024)  # ~3 MB of noise, over max_upload_mb=1
    error_of(post(url, "/v1/documents/ask", data={"question": QUESTION}, files={"file": ("big.png", big)}), 413)
    body = {"model": "docread", "messages": chat_messages(big)}
    error_of(post(url, "/v1/chat/completions", json=body), 413)
    still_answers(url)


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (json.dumps({"messages": "hello"}).encode(), "invalid_value"),
        (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), "invalid_value"),
        (json.dumps({"messages": chat_messages(b"plain text, not an image")}).encode(), "unsupported"),
        (
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": QUESTION},
                                {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/x.png"}},
                            ],
                        }
                    ]
                }
            ).encode(),
            "remote_url_refused",
        ),
        (
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": QUESTION},
                                {"type": "image_url", "image_url": {"url": "/etc/passwd"}},
                            ],
                        }
                    ]
                }
            ).encode(),
            "not_a_data_url",
        ),
        (
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": QUESTION},
                                {"type": "image_url", "image_url": {"url": "file:///etc/hosts"}},
                            ],
                        }
                    ]
                }
            ).encode(),
            "not_a_data_url",
        ),
        (json.dumps({"messages": chat_messages(image_bytes(2)), "max_tokens": "many"}).encode(), "invalid_value"),
    ],
)
def test_bad_chat_requests_are_400_and_the_server_answers_on(url, body, code):
    response = post(
        url,
        "/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert error_of(response, 400)["code"] == code
    still_answers(url)


@pytest.mark.parametrize(
    "fields, files, code",
    [
        ({"question": QUESTION, "file": "/etc/passwd"}, None, "no_file"),
        ({"question": QUESTION, "max_new_tokens": "lots"}, {"file": ("a.png", image_bytes(3))}, "invalid_value"),
        ({"question": QUESTION, "view": "sideways"}, {"file": ("a.png", image_bytes(3))}, "invalid_value"),
        ({"question": QUESTION, "pages": "9"}, {"file": ("a.png", image_bytes(3))}, "bad_pages"),
        ({"question": QUESTION, "device": "cuda"}, {"file": ("a.png", image_bytes(3))}, "invalid_value"),
        ({"question": " "}, {"file": ("a.png", image_bytes(3))}, "no_questions"),
        ({"question": QUESTION}, {"file": ("a.txt", b"hello")}, "unsupported"),
    ],
)
def test_bad_documents_ask_requests_are_400(url, fields, files, code):
    assert error_of(post(url, "/v1/documents/ask", data=fields, files=files), 400)["code"] == code
    still_answers(url)


# -- one worker, a bounded queue ------------------------------------------------------------------
@pytest.mark.slow
def test_eight_clients_four_requests_each_none_lost(url, reader):
    from docread.document import ask_document
    from docread.intake import open_bytes
    from docread.settings import Settings

    images = [image_bytes(10 + n) for n in range(4)]
    expected = []
    for data in images:
        with open_bytes(data, "x.png") as document:
            (result,) = ask_document(
                reader, document, [QUESTION], settings=Settings(max_slices=0, max_new_tokens=TOKENS)
            )
        expected.append(result.best.answer)
    client = sdk(url)

    def one(job: int) -> tuple[int, str]:
        n = job % 4
        done = client.chat.completions.create(
            model="docread",
            messages=chat_messages(images[n]),
            max_tokens=TOKENS,
            extra_body={"docread": {"max_slices": 0}},
            timeout=120,
        )
        return n, done.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(32), timeout=300))
    assert len(answers) == 32
    assert all(text == expected[n] for n, text in answers)


def test_a_full_queue_answers_503_with_retry_after(reader):
    with serving(reader, max_queue=1, max_batch=1) as base:  # one running, one waiting: the rest are refused
        body = {
            "model": "docread",
            "messages": chat_messages(image_bytes(4)),
            "max_tokens": 64,
            "docread": {"max_slices": 0},
        }

        def one(_):
            return http().post(base + "/v1/chat/completions", json=body, timeout=120)

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(one, range(6), timeout=300))
        statuses = sorted(r.status_code for r in responses)
        assert 503 in statuses and 200 in statuses and set(statuses) <= {200, 503}
        busy = next(r for r in responses if r.status_code == 503)
        assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["code"] == "queue_full"
        assert http().get(base + "/health", timeout=10).json()["waiting"] == 0


# -- the client: ask --server ------------------------------------------------------------------------
@pytest.mark.parametrize("json_out", [True, False])
def test_ask_server_prints_what_local_ask_prints(url, tiny_llava, image_file, json_out):
    args = [
        "ask",
        str(image_file),
        QUESTION,
        "--max-slices",
        "0",
        "--max-new-tokens",
        str(TOKENS),
        "--quiet",
        *(["--json"] if json_out else []),
    ]
    local = docread(*args, "--model", tiny_llava, "--device", "cpu")
    remote = docread(*args, "--server", url, "--api-key", KEY)
    assert (remote.returncode, local.returncode) == (0, 0), remote.output
    if json_out:
        assert [stable(json.loads(x)) for x in remote.stdout.splitlines()] == [
            stable(json.loads(x)) for x in local.stdout.splitlines()
        ]
    else:
        assert remote.stdout == local.stdout and local.stdout.strip()


def test_ask_server_errors_as_local_ask(url, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    run = docread("ask", bad, QUESTION, "--server", url, "--api-key", KEY)
    assert run.returncode == 1 and "error:" in run.stderr and "not a PDF or an image" in run.stderr
    run = docread("ask", bad, QUESTION, "--server", url, "--api-key", "wrong")
    assert run.returncode == 1 and "401" in run.stderr
