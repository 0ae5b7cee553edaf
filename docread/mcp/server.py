"""The MCP server: five tools whose signatures (and so input schemas) are built from `docread.settings`, their
outputs typed by `docread.mcp.tools`; served over stdio, or streamable HTTP on loopback behind the API key
rule of `docread serve` (Authorization: Bearer KEY)."""

from __future__ import annotations

import hmac
import inspect
from typing import Annotated, Any, Optional

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from docread import __version__
from docread.mcp.inputs import (
    DOCUMENT_PARAMETERS,
    MAX_QUESTIONS,
    settings_from,
    settings_parameters,
    texts_parameter,
)
from docread.mcp.tools import (
    AskOutput,
    ExtractOutput,
    InspectOutput,
    LocateOutput,
    OcrOutput,
    Progress,
    Work,
)
from docread.settings import EXTRACT_DEFAULTS, OCR_MAX_NEW_TOKENS, ONLY_OCR, TASK_FIELDS, Task

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PATH = "/mcp"
# The fields each tool offers: those its CLI command has (docread.cli: ocr, extract, locate, inspect).
OCR_FIELDS, EXTRACT_FIELDS = TASK_FIELDS["ocr"], TASK_FIELDS["extract"]
LOCATE_FIELDS, INSPECT_FIELDS = TASK_FIELDS["locate"], TASK_FIELDS["inspect"]


def _tool(server: MCPServer, name: str, description: str, parameters: list, output, run) -> None:
    """Register `run(ctx, **arguments) -> dict` (blocking, run in a worker thread) as tool `name` with these
    keyword `parameters` (its input schema) and `output` (a pydantic model: its output schema)."""

    async def call(ctx: Context, **arguments: Any):
        events = Progress(ctx)
        result = await anyio.to_thread.run_sync(lambda: run(events, **arguments))
        return output.model_validate(result)

    ctx = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    call.__signature__ = inspect.Signature([*parameters, ctx], return_annotation=output)
    call.__annotations__ = {p.name: p.annotation for p in [*parameters, ctx]} | {"return": output}
    call.__name__ = name
    server.add_tool(call, name=name, description=description, structured_output=True)


def build_server(work: Work) -> MCPServer:
    """The MCP server with docread's tools over `work` (documents, limits, the model)."""
    server = MCPServer(
        "docread",
        version=__version__,
        instructions="Read PDFs and images: ask questions, transcribe, extract typed fields, locate text, "
        "inspect the page grid. Give a document as a path under the server's --root, or as base64 content.",
        log_level="WARNING",
    )
    doc = ("path", "content", "filename")

    def split(arguments: dict) -> tuple[tuple, dict]:
        return tuple(arguments.pop(k) for k in doc), arguments

    def ask(events, **a):
        document, rest = split(a)
        return work.ask(document, rest.pop("questions"), settings_from(rest), events)

    def ocr(events, **a):
        document, rest = split(a)
        return work.ocr(document, settings_from(rest, fixed={"task": Task.ocr}), events)

    def extract(events, **a):
        document, rest = split(a)
        return work.extract(document, rest.pop("fields"), rest.pop("schema"), settings_from(rest), events)

    def locate(events, **a):
        document, rest = split(a)
        return work.locate(document, rest.pop("texts"), settings_from(rest))

    def inspect_(events, **a):
        document, rest = split(a)
        return work.inspect(document, rest.pop("model"), settings_from(rest))

    questions = texts_parameter("questions", f"Questions about the document (1 to {MAX_QUESTIONS}).")
    _tool(
        server,
        "ask_document",
        "Answer questions about a PDF or image: each question's best page's answer, its score, evidence "
        "(where it occurs in the page text) and every page's answer (the records of docread ask --json).",
        [*DOCUMENT_PARAMETERS, questions, *settings_parameters(exclude=ONLY_OCR)],
        AskOutput,
        ask,
    )
    _tool(
        server,
        "ocr",
        "Transcribe the text of each selected page (the records of docread ocr --json).",
        [*DOCUMENT_PARAMETERS, *settings_parameters(OCR_FIELDS, {"max_new_tokens": OCR_MAX_NEW_TOKENS})],
        OcrOutput,
        ocr,
    )
    _tool(
        server,
        "extract",
        "Typed fields out of a document: `fields` as NAME or NAME:TYPE (string, number, integer, date, boolean) "
        "or a JSON Schema object `schema` (one field per property, its description as the question); each "
        "field's value, raw answer, page, score, evidence and error (docread extract's record).",
        [*DOCUMENT_PARAMETERS, *_extract_parameters(), *settings_parameters(EXTRACT_FIELDS, EXTRACT_DEFAULTS)],
        ExtractOutput,
        extract,
    )
    _tool(
        server,
        "locate",
        "Where each text occurs in the document's page text: page, box (PDF points and rendered pixels) and "
        "how it matched (exact, normalized, fuzzy) — the records of docread locate --json. Loads no model.",
        [
            *DOCUMENT_PARAMETERS,
            texts_parameter("texts", "Texts to find (words, numbers, dates)."),
            *settings_parameters(LOCATE_FIELDS),
        ],
        LocateOutput,
        locate,
    )
    _tool(
        server,
        "inspect",
        "How each page is sliced for the model: size, tile grid, visual tokens (docread inspect --json). "
        "Loads no model.",
        [*DOCUMENT_PARAMETERS, _model_parameter(), *settings_parameters(INSPECT_FIELDS)],
        InspectOutput,
        inspect_,
    )
    return server


def _extract_parameters() -> list[inspect.Parameter]:
    fields = Annotated[
        Optional[list[str]],  # noqa: UP045
        Field(
            description="NAME or NAME:TYPE, TYPE one of string, number, integer, date, boolean.",
            max_length=MAX_QUESTIONS,
        ),
    ]
    schema = Annotated[
        Optional[dict[str, Any]],  # noqa: UP045
        Field(description='A JSON Schema object: {"type": "object", "properties": {NAME: {"type", "description"}}}.'),
    ]
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("fields", kw, default=None, annotation=fields),
        inspect.Parameter("schema", kw, default=None, annotation=schema),
    ]


def _model_parameter() -> inspect.Parameter:
    model = Annotated[
        Optional[str],  # noqa: UP045
        Field(
            description="Whose slicing: a preset name or llava-hf directory (default: the default model's).",
            max_length=500,
        ),
    ]
    return inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=model)


# -- HTTP ------------------------------------------------------------------------------------------------
class BearerGuard:
    """ASGI middleware: with a key, every request must carry Authorization: Bearer KEY (constant-time
    compare), else 401 — the rule of `docread serve`."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.key is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.key):
                from starlette.responses import JSONResponse

                body = {
                    "error": {
                        "message": "missing or wrong API key: send Authorization: Bearer <key>",
                        "code": "invalid_api_key",
                    }
                }
                response = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def http_app(server: MCPServer, host: str, api_key: str | None):
    """The streamable HTTP app at /mcp behind the API key."""
    return BearerGuard(server.streamable_http_app(streamable_http_path=PATH, host=host), api_key)


def serve_http(server: MCPServer, host: str, port: int, api_key: str | None, on_listening) -> None:
    """Serve over streamable HTTP until SIGTERM/Ctrl-C; `on_listening(url)` once the port is bound."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                on_listening(f"http://{shown}:{bound}{PATH}")

    config = uvicorn.Config(http_app(server, host, api_key), host=host, port=port, log_level="warning")
    Server(config).run()
