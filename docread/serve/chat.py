"""OpenAI chat-completion responses from docread answers: the whole answer as one `chat.completion`,
or streamed as `chat.completion.chunk` server-sent events ending with `data: [DONE]`. `Shape` holds what
a request asked of its answer besides Settings: stop strings, log-probabilities, a JSON grammar."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from docread.errors import DocreadError
from docread.generate.text import tokens_holding
from docread.reader import DocReader
from docread.results import DocumentAnswer
from docread.serve.protocol import CHAT_FIELDS, ApiError, as_api_error
from docread.serve.worker import Job
from docread.settings import Settings

FINISH = {"eos": "stop", "length": "length"}  # docread's stopped_by -> OpenAI's finish_reason


@dataclass
class Shape:
    """A chat request's answer beyond Settings: `stops` cut it, `recorder` (generate.constraints.Recorder)
    gives its log-probabilities, `grammar` (generate.grammar.JsonGrammar) tells whether its JSON completed."""

    tokenizer: object = None
    stops: list[str] = field(default_factory=list)
    recorder: object = None
    top_logprobs: int = 0
    grammar: object = None
    dropped_turns: int = 0

    def cut(self, text: str) -> tuple[str, bool]:
        """`text` before its first stop string, and whether one was found."""
        at = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        return (text[:at], True) if at >= 0 else (text, False)

    def finish_reason(self, answer, stopped: bool) -> str:
        if stopped:
            return "stop"
        if self.grammar is not None and not self.grammar.completed:
            return "length"  # the budget ran out before the JSON closed
        return FINISH.get(answer.stopped_by, "stop")

    def logprobs(self, text: str, stopped: bool = False) -> dict | None:
        """OpenAI's `logprobs` of the answer `text`: each token's, with its top alternatives (`stopped`: the
        text was cut at a stop string, and the tokens after it are left out)."""
        if self.recorder is None:
            return None
        decode = self.tokenizer.decode
        runs = self.recorder.runs or [[]]
        run = next((r for r in reversed(runs) if decode([t for t, _, _ in r]).strip().startswith(text)), runs[-1])
        if stopped:  # the tokens up to the first whose text completes `text`
            run = run[: tokens_holding(self.tokenizer, [t for t, _, _ in run], text)]
        content = []
        for token, logprob, tops in run:
            tops_json = [_token(decode, t, lp) for t, lp in tops]
            content.append({**_token(decode, token, logprob), "top_logprobs": tops_json})
        return {"content": content, "refusal": None}


def _token(decode, token: int, logprob: float) -> dict:
    text = decode([token])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def best_answer(results: list[DocumentAnswer]):
    (result,) = results
    if result.best is None:
        page, error = result.errors[0]
        raise as_api_error(error, CHAT_FIELDS)
    return result.best


def usage(answer, shape: Shape) -> dict:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.generated_tokens,
        "total_tokens": answer.prompt_tokens + answer.generated_tokens,
        "dropped_turns": shape.dropped_turns,
    }


def chat_response(results: list[DocumentAnswer], model: str, shape: Shape) -> dict:
    answer = best_answer(results)
    text, stopped = shape.cut(answer.answer)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": shape.logprobs(text, stopped),
                "finish_reason": shape.finish_reason(answer, stopped),
            }
        ],
        "usage": usage(answer, shape),
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


class StopCut:
    """Streamed text cut before the first stop string: text that may begin one is held back until it
    cannot; after a stop, nothing more. A stop can only begin in the text not sent yet (what was held
    back and the new chunk), so only that is searched."""

    def __init__(self, shape: Shape):
        self.shape, self.sent, self.held, self.stopped = shape, 0, "", False  # sent: characters

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        rest = self.held + text
        out, self.stopped = self.shape.cut(rest)
        if not self.stopped:  # hold back a tail that could begin a stop string
            hold = max((k for s in self.shape.stops for k in range(1, len(s)) if rest.endswith(s[:k])), default=0)
            out = rest[: len(rest) - hold]
        self.held = "" if self.stopped else rest[len(out) :]
        self.sent += len(out)
        return out


async def chat_stream(job: Job, model: str, include_usage: bool, shape: Shape) -> AsyncIterator[str]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }

    def event(delta: dict, finish: str | None = None, logprobs: dict | None = None) -> str:
        choices = [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
        return f"data: {json.dumps({**base, 'choices': choices}, ensure_ascii=False)}\n\n"

    trim, stop, done = Trim(), StopCut(shape), False
    try:
        yield event({"role": "assistant", "content": ""})
        while True:
            kind, value = await job.next()
            if kind == "chunk":
                if text := stop.push(trim.push(value)):
                    yield event({"content": text})
            elif kind == "done":
                done = True
                answer = best_answer(value)
                text, stopped = shape.cut(answer.answer)
                if rest := text[stop.sent :]:
                    yield event({"content": rest})
                yield event({}, shape.finish_reason(answer, stopped), shape.logprobs(text, stopped))
                if include_usage:
                    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage(answer, shape)})}\n\n"
                break
            elif kind == "error":
                done = True
                raise as_api_error(value, CHAT_FIELDS)
    except ApiError as e:  # after the response started: the error as a last event, as OpenAI sends it
        yield f"data: {json.dumps(e.body(), ensure_ascii=False)}\n\n"
    finally:
        if not done:
            job.cancelled = True  # the client left (or the server is stopping): stop at the next token
    yield "data: [DONE]\n\n"


def chat_plan(reader: DocReader, chat, settings: Settings):
    """A chat request's question (the conversation as one prompt, oldest turns dropped to fit a quarter of
    the context), its Shape, and the constraint on its tokens (JSON grammar, nucleus, stop strings, log-probs)."""
    from docread.generate.constraints import Chain, Recorder, StopAt, TopP
    from docread.serve.protocol import conversation
    from docread.views.turns import conversation_prompt

    tokenizer = reader.base.tokenizer
    system, turns, question = conversation(chat)
    prompt, dropped = conversation_prompt(
        system,
        turns,
        question,
        count=lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
        budget=reader.context // 4,
    )
    shape = Shape(tokenizer=tokenizer, stops=chat.stops(), dropped_turns=dropped)
    schema = chat.json_schema()
    if schema is not None:
        from docread.generate.grammar import json_grammar

        try:
            shape.grammar = json_grammar(tokenizer, schema, reader.eos_token_ids, param="response_format")
        except DocreadError as e:
            raise ApiError(400, e.message, e.code, param="response_format") from None
    if chat.logprobs:
        shape.recorder = Recorder(chat.top_logprobs or 0)
    top_p = TopP(chat.top_p, settings.temperature) if chat.top_p is not None else None
    stop = StopAt(tokenizer, shape.stops, reader.eos_token_ids) if shape.stops else None
    parts = [shape.grammar, top_p, stop, shape.recorder]
    return prompt, shape, (Chain(*parts) if any(p is not None for p in parts) else None)
