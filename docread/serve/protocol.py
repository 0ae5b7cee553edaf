"""What the server accepts and answers: OpenAI chat-completion requests (text and `data:` image parts),
`/v1/documents/ask`'s and `/ocr`'s form fields (every `Settings` field by its name, derived from
settings.py), and OpenAI's error shape. Nothing here
touches the model; every bad value becomes an `ApiError` naming it."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Optional

try:  # the serve extra's: without it, Python's json reads every body
    import orjson

    if tuple(int(part) for part in orjson.__version__.split(".")[:3]) < (3, 9, 15):
        orjson = None  # no nesting limit: a body of deeply nested brackets crashed the process (CVE-2024-27454)
except (ImportError, ValueError):
    orjson = None
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model

from docread.errors import EXIT_FAILED, DocreadError
from docread.settings import (
    OCR_MAX_NEW_TOKENS,
    ONLY_OCR,
    SettingError,
    Settings,
    Task,
    field_type,
    setting_fields,
    setting_flags,
)

MAX_QUESTIONS = 32  # questions one /v1/documents/ask request may ask


class ApiError(Exception):
    """A request's failure as OpenAI reports it: HTTP status and {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        exit_code: int = 2,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.exit_code, self.headers = exit_code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


STATUS = {"too_large": 413, "timeout": 504}  # intake codes whose HTTP status is not 400
SERVER_FAULTS = {"timeout"}  # codes that are the server's failure (type server_error), not the request's


def as_api_error(error: Exception, fields: dict[str, str] | None = None) -> ApiError:
    """`error` as the request's failure; `fields`: the request's name of a Settings field, where it is not the
    field's own (chat completions: `max_tokens`, `docread.text_tokens`)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, DocreadError):
        api = from_docread(error, status=STATUS.get(error.code, 400), fields=fields)
        if error.code in SERVER_FAULTS:
            api.type = "server_error"
        return api
    return ApiError(
        500,
        f"internal error: {type(error).__name__}: {error}",
        "internal_error",
        type="server_error",
        exit_code=EXIT_FAILED,
    )


def from_docread(error, *, status: int = 400, fields: dict[str, str] | None = None) -> ApiError:
    """A DocreadError (bad file, bad pages, ...) as a client error carrying its code and exit code, in the
    request's words: each read option's --flag in the message as its request field, which `param` names
    when an option is the cause."""
    names = {f.name: (fields or {}).get(f.name, f.name) for f in setting_fields()}
    param = getattr(error, "param", None)
    return ApiError(
        status,
        request_words(error.message, names),
        error.code,
        param=names.get(param, param),
        exit_code=error.exit_code,
    )


def request_words(message: str, names: dict[str, str]) -> str:
    """`message` with each Settings field's long --flag written as the request field `names` gives it."""
    for f in setting_fields():
        for flag in setting_flags(f):
            if flag.startswith("--"):
                message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", names[f.name], message)
    return message


def from_validation(error: ValidationError) -> ApiError:
    first = error.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], "invalid_value", param=param)


# -- read options: Settings' fields, derived -------------------------------------------------------
def _settings_fields(defaults: dict[str, Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each Settings field (but `exclude`) as a pydantic field: its type, default, bounds and help from
    settings.py."""
    out: dict[str, Any] = {}
    for f in setting_fields():
        if f.name in exclude:
            continue
        kind, meta = field_type(f), f.metadata
        bounds = {
            k: meta[m] for k, m in (("ge", "min"), ("le", "max"), ("max_length", "max_length")) if meta[m] is not None
        }
        annotation = Optional[kind] if f.default is None else kind  # noqa: UP045  a runtime type, not an annotation
        out[f.name] = (annotation, Field(defaults.get(f.name, f.default), description=meta["help"], **bounds))
    return out


class _SettingsForm(BaseModel):
    """Request fields named as Settings' fields; `settings()` checks what pydantic cannot (a page list)."""

    model_config = ConfigDict(extra="forbid")

    def settings(self, param_prefix: str = "") -> Settings:
        values = {f.name: getattr(self, f.name) for f in setting_fields() if f.name in type(self).model_fields}
        try:
            return Settings(**values)
        except SettingError as e:
            raise ApiError(400, e.message, "invalid_value", param=param_prefix + e.param) from None


ReadOptions = create_model(
    "ReadOptions",
    __base__=_SettingsForm,
    __doc__="ask's and chat's options: every Settings field but ocr's own (ONLY_OCR: refused, not ignored).",
    **_settings_fields({}, exclude=ONLY_OCR),
)
OcrForm = create_model(
    "OcrForm",
    __base__=_SettingsForm,
    __doc__="/v1/documents/ocr's fields besides the file: every Settings field, with ocr's task and answer length.",
    **_settings_fields({"task": Task.ocr, "max_new_tokens": OCR_MAX_NEW_TOKENS}),
)


class AskForm(ReadOptions):
    """/v1/documents/ask's fields besides the file: one or more `question`s and ask's options."""

    question: list[str] = Field(min_length=1, max_length=MAX_QUESTIONS)


def ask_form(fields: list[tuple[str, Any]]) -> AskForm:
    """Multipart fields (a repeated `question`, the rest once each) as a validated AskForm."""
    return read_form(fields, AskForm)


def ocr_form(fields: list[tuple[str, Any]]) -> OcrForm:
    return read_form(fields, OcrForm)


def read_form(fields: list[tuple[str, Any]], form: type[BaseModel]) -> Any:
    """Multipart fields as a validated `form`: `question` may repeat (AskForm), the rest once each."""
    values: dict[str, Any] = {"question": []} if "question" in form.model_fields else {}
    for name, value in fields:
        if not isinstance(value, str):
            raise ApiError(400, f"{name}: only `file` may be a file upload", "invalid_value", param=name)
        if name == "question" and "question" in values:
            values["question"].append(value)
        elif name in values:
            raise ApiError(400, f"{name}: given twice", "invalid_value", param=name)
        else:
            values[name] = value
    try:
        validated = form.model_validate(values)
    except ValidationError as e:
        raise from_validation(e) from None
    validated.settings()  # a bad page list: 400 now, naming `pages`
    return validated


# -- chat completions ------------------------------------------------------------------------------
def _optional(name: str):
    """An OpenAI field that sets a Settings field: that field's type and bounds, optional."""
    f = next(f for f in setting_fields() if f.name == name)
    meta = f.metadata
    return Annotated[Optional[field_type(f)], Field(ge=meta["min"], le=meta["max"])]  # noqa: UP045


class ImageUrl(BaseModel):
    url: str
    detail: str | None = None


class Part(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageUrl | None = None


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None

    def text(self) -> str:
        parts = [self.content] if isinstance(self.content, str) else [p.text or "" for p in self.content or []]
        return " ".join(" ".join(parts).split())


class JsonSchemaFormat(BaseModel):
    name: str = "response"
    schema_: dict = Field(default_factory=dict, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI fields that would change the answer and that docread does not do: refused, never ignored.
# (name, the value that means "not used")
REFUSED = {
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "logit_bias": None,
    "audio": None,
    "prediction": None,
    "web_search_options": None,
    "frequency_penalty": 0,
    "presence_penalty": 0,
}
MAX_STOPS = 4  # OpenAI's limit on `stop` strings
MAX_TOP_LOGPROBS = 20  # OpenAI's limit on `top_logprobs`


# Where a chat completion request holds each read option: OpenAI's own fields, else the `docread` object.
CHAT_FIELDS = {
    **{f.name: f"docread.{f.name}" for f in setting_fields()},
    **{name: name for name in ("temperature", "seed")},
    "max_new_tokens": "max_tokens",
}


class ChatRequest(BaseModel):
    """The OpenAI fields docread reads; those that change an answer and docread cannot honour are refused
    (`REFUSED`), other fields an SDK sends (user, metadata, store, ...) are ignored. `docread` carries the
    Settings fields OpenAI has no field for (pages, max_slices, view, task, dpi, password, text_prompt, ...)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: _optional("max_new_tokens") = None
    max_completion_tokens: _optional("max_new_tokens") = None
    temperature: _optional("temperature") = None
    top_p: Annotated[Optional[float], Field(ge=0.0, le=1.0)] = None  # noqa: UP045
    seed: _optional("seed") = None
    n: int = Field(1, ge=1, le=1)
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[Optional[int], Field(ge=0, le=MAX_TOP_LOGPROBS)] = None  # noqa: UP045
    response_format: ResponseFormat | None = None
    modalities: list[Literal["text"]] | None = None
    stream_options: StreamOptions | None = None
    docread: ReadOptions | None = None
    _settings: Settings | None = PrivateAttr(None)

    def settings(self) -> Settings:
        """The read's Settings: `docread`'s fields, OpenAI's max_tokens, temperature and seed over them
        (made once: `chat_request` checks them, the server reads with them)."""
        if self._settings is not None:
            return self._settings
        base = (self.docread or ReadOptions()).settings("docread.")
        given = {
            "max_new_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
        }
        self._settings = base.replace(**{k: v for k, v in given.items() if v is not None})
        return self._settings

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def json_schema(self) -> dict | None:
        """The schema the answer must follow: {} for any JSON object (json_object), None for free text."""
        rf = self.response_format
        if rf is None or rf.type == "text":
            return None
        if rf.type == "json_object":
            return {"type": "object"}
        if rf.json_schema is None:
            raise ApiError(
                400, "response_format: json_schema needs a json_schema object", "invalid_value", param="response_format"
            )
        return rf.json_schema.schema_ or {"type": "object"}


def _unsupported(name: str, why: str) -> ApiError:
    return ApiError(400, f"{name}: {why}", "unsupported_parameter", param=name)


def json_body(raw: bytes) -> Any:
    """A request body's JSON: orjson where installed (the serve extra; a page's data: URL is hundreds of KB of
    string, parsed several times faster), Python's json for what orjson refuses but json reads (NaN, integers
    past 64 bits, lone surrogates): the same value either way, or a 400 (nesting too deep for either too)."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError; nesting deeper than Python's stack
        raise ApiError(400, "the request body is not valid JSON", "invalid_json") from None


def chat_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    for name, unused in REFUSED.items():
        value = body.get(name, unused)
        if value not in (unused, None, [], {}) and not (name == "tool_choice" and value == "none"):
            raise _unsupported(name, "not supported by docread (no tools, penalties, biases or audio); leave it out")
    try:
        request = ChatRequest.model_validate(body)
    except ValidationError as e:
        raise from_validation(e) from None
    if len(request.stops()) > MAX_STOPS:
        raise ApiError(400, f"stop: at most {MAX_STOPS} strings", "invalid_value", param="stop")
    if request.top_logprobs and not request.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "invalid_value", param="top_logprobs")
    if any(m.role == "tool" for m in request.messages):
        raise _unsupported("messages", "tool messages need tools, which docread does not support")
    request.settings()  # a bad page list: 400 now, naming `docread.pages`
    request.json_schema()
    return request


def conversation(request: ChatRequest) -> tuple[list[str], list[tuple[str, str]], str]:
    """The system/developer texts, the earlier (role, text) turns, and the last user message's text."""
    users = [i for i, m in enumerate(request.messages) if m.role == "user"]
    if not users:
        raise ApiError(400, "no user message: ask a question", "no_questions", param="messages")
    last = users[-1]
    question = request.messages[last].text()
    if not question:
        raise ApiError(400, "the last user message has no text: ask a question", "no_questions", param="messages")
    system = [m.text() for m in request.messages if m.role in ("system", "developer") and m.text()]
    turns = [(m.role, m.text()) for m in request.messages[:last] if m.role in ("user", "assistant") and m.text()]
    return system, turns, question
