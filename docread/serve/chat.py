"""OpenAI chat-completion responses from docread answers: the whole answer as one `chat.completion`,
or streamed as `chat.completion.chunk` server-sent events ending with `data: [DONE]`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from docread.results import DocumentAnswer
from docread.serve.protocol import ApiError, as_api_error
from docread.serve.worker import Job

FINISH = {"eos": "stop", "length": "length"}  # docread's stopped_by -> OpenAI's finish_reason


def best_answer(results: list[DocumentAnswer]):
    (result,) = results
    if result.best is None:
        page, error = result.errors[0]
        raise as_api_error(error)
    return result.best


def usage(answer) -> dict:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.generated_tokens,
        "total_tokens": answer.prompt_tokens + answer.generated_tokens,
    }


def chat_response(results: list[DocumentAnswer], model: str) -> dict:
    answer = best_answer(results)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.answer, "refusal": None},
                "logprobs": None,
                "finish_reason": FINISH.get(answer.stopped_by, "stop"),
            }
        ],
        "usage": usage(answer),
        "docread": results[0].to_json(),
    }


class Trim:
    """Streamed text trimmed as the answer is (`.strip()`): leading whitespace dropped, trailing held
    back until more text follows, so the chunks join to exactly the non-streamed answer."""

    def __init__(self):
        self.started, self.held = False, ""

    def push(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        body = text.rstrip()
        out = self.held + body if body else ""
        self.held = text[len(body) :] if body else self.held + text
        return out


async def chat_stream(job: Job, model: str, include_usage: bool) -> AsyncIterator[str]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }

    def event(delta: dict, finish: str | None = None, **extra) -> str:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return f"data: {json.dumps({**base, 'choices': choices, **extra}, ensure_ascii=False)}\n\n"

    trim, done = Trim(), False
    try:
        yield event({"role": "assistant", "content": ""})
        while True:
            kind, value = await job.next()
            if kind == "chunk":
                if text := trim.push(value):
                    yield event({"content": text})
            elif kind == "done":
                done = True
                answer = best_answer(value)
                yield event({}, FINISH.get(answer.stopped_by, "stop"))
                if include_usage:
                    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage(answer)})}\n\n"
                break
            elif kind == "error":
                done = True
                raise as_api_error(value)
    except ApiError as e:  # after the response started: the error as a last event, as OpenAI sends it
        yield f"data: {json.dumps(e.body(), ensure_ascii=False)}\n\n"
    finally:
        if not done:
            job.cancelled = True  # the client left (or the server is stopping): stop at the next token
    yield "data: [DONE]\n\n"
