"""The HTTP face of one warm model: `create_app(reader, ...)` builds a FastAPI app with `/health`,
`/v1/models`, OpenAI's `/v1/chat/completions`, `/v1/documents/ask` (ask's --json records, one
line per question) and `/v1/documents/ocr` (ocr's --json records, one line per page). Each is an
`ask_document` or `ocr_document` call run by the one worker."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from docread.document import ask_document, ocr_document, unique_questions
from docread.errors import EXIT_FAILED, DocreadError
from docread.events import Events
from docread.generate.sizing import DEFAULT_MAX_BATCH
from docread.intake import Limits, open_bytes
from docread.pagecache import PageCache
from docread.reader import DocReader
from docread.records import ocr_record
from docread.results import DocumentAnswer
from docread.serve.batcher import Batcher
from docread.serve.dataurls import DataUrls, question_and_image
from docread.serve.guard import Guard, install_handlers
from docread.serve.protocol import (
    ApiError,
    as_api_error,
    ask_form,
    chat_request,
    from_docread,
    json_body,
    ocr_form,
)
from docread.serve.worker import Busy, Job, Worker
from docread.settings import AUTO_PAGES, Settings

MiB = 1 << 20
YOUNG_COLLECTIONS = 50_000  # allocations between the collector's young passes while serving
MODEL_ALIASES = (None, "", "docread")  # `model` values that mean "this server's model"


class _JobEvents(Events):
    """A read's events as the request sees them: each piece of answer streamed, its limits checked, and
    with `forward` every event as a dict (`ask --server` replays them into ask's own renderer)."""

    def __init__(self, job: Job, forward: bool = False):
        self.job, self.forward = job, forward

    def _event(self, name: str, **values) -> None:
        if self.forward:
            self.job.emit("event", {"event": name, **values})

    def warning(self, message: str) -> None:
        self._event("warning", message=message)

    def page(self, number: int, index: int, total: int) -> None:
        self.job.check()
        self._event("page", number=number, index=index, total=total)

    def question(self, question: str) -> None:
        self._event("question", question=question)

    def chunk(self, text: str) -> None:
        self.job.check()
        if self.job.streams:  # a client that waits for the whole answer reads it from "done"
            self.job.emit("chunk", text)
        self._event("chunk", text=text)

    def answered(self, result) -> None:
        self._event("answered", question=result.question, page=result.page)

    def failed(self, number: int, error: DocreadError) -> None:
        self._event("failed", number=number, error=error.to_json())


class _Server:
    def __init__(
        self,
        reader: DocReader,
        *,
        max_queue: int,
        max_upload_bytes: int,
        cache_pages: int,
        limits: Limits,
        request_timeout: float,
        max_batch: int,
    ):
        self.reader, self.limits, self.request_timeout = reader, limits, request_timeout
        self.max_upload_bytes = max_upload_bytes
        self.worker = Batcher(reader, max_queue, max_batch) if max_batch > 1 else Worker(max_queue)
        self.cache = PageCache(cache_pages)
        self.data_urls = DataUrls(cache_pages)  # a cached page's upload is not base64-decoded again either
        self.cache.texts.beside = self.worker.aside  # OCR runs beside the batch being decoded

    def submit(
        self,
        data: bytes,
        name: str,
        questions: list[str],
        settings: Settings,
        forward: bool = False,
        constrain=None,
        streams: bool = True,
        sha256: str | None = None,
    ) -> Job:
        """Queue an ask of uploaded bytes: "opened", then "chunk"s (when it `streams`), then "done" with the
        answers or "error". `constrain`: a `generate.loop.Constraint` on every answer's tokens; `sha256`: the
        bytes' digest, when known (`open_bytes`)."""

        def read(document, events: _JobEvents) -> list[DocumentAnswer]:
            return ask_document(
                self.reader,
                document,
                questions,
                settings=settings,
                events=events,
                stream=True,
                encode=self.cache.encode,
                text_cache=self.cache.texts,
                constrain=constrain,
            )

        return self.submit_read(data, name, settings, read, forward, streams, sha256)

    def submit_ocr(self, data: bytes, name: str, settings: Settings, forward: bool = False) -> Job:
        """Queue an ocr of uploaded bytes: each page's ocr --json record as a "record" as it is done."""

        def read(document, events: _JobEvents) -> list:
            for result in ocr_document(self.reader, document, settings=settings, events=events, stream=True):
                events.job.emit("record", ocr_record(document.name, result))
            return []

        return self.submit_read(data, name, settings, read, forward)

    def submit_read(
        self,
        data: bytes,
        name: str,
        settings: Settings,
        read,
        forward: bool = False,
        streams: bool = True,
        sha256: str | None = None,
    ) -> Job:
        """Queue `read(document, events)` of uploaded bytes; the document is opened on the worker (PyMuPDF
        is not thread-safe), which emits "opened" first, and "done" with what `read` returns or "error"."""
        if len(data) > self.max_upload_bytes:
            raise ApiError(
                413,
                f"{name}: {len(data):,} bytes, over the server's --max-upload-mb ({self.max_upload_bytes // MiB} MiB)",
                "too_large",
                exit_code=EXIT_FAILED,
            )

        def run(job: Job):
            pages = None if settings.pages == AUTO_PAGES else settings.pages  # auto: every page, ranked
            with open_bytes(
                data,
                name,
                pages=pages,
                password=settings.password,
                dpi=settings.dpi,
                limits=self.limits,
                decoded=self.cache.documents,  # a page of these is encoded: its pixels are not decoded again
                sha256=sha256,
            ) as document:
                job.emit("opened")
                return read(document, _JobEvents(job, forward))

        job = Job(run, asyncio.get_running_loop(), time.monotonic() + self.request_timeout, streams)
        try:
            self.worker.submit(job)
        except Busy as e:
            worker = self.worker  # each batch of max_batch waiting requests takes about one request's time
            retry = max(1, math.ceil(worker.mean_s * (worker.waiting // worker.max_batch + 1)))
            raise ApiError(
                503,
                f"the server is busy: {e}; retry in {retry} s",
                "queue_full",
                type="server_error",
                exit_code=EXIT_FAILED,
                headers={"Retry-After": str(retry)},
            ) from None
        return job

    async def until_opened(self, job: Job) -> None:
        """Wait for the worker to open the file: a bad one fails here, before any response starts."""
        kind, value = await job.next()
        if kind == "error":
            raise as_api_error(value)

    async def answers(self, job: Job) -> list[DocumentAnswer]:
        while True:
            kind, value = await job.next()
            if kind == "done":
                return value
            if kind == "error":
                raise as_api_error(value)


async def _ndjson_events(job: Job):
    """The read's events as {"event": ...} lines as they happen, records as they are done (ocr), then ask
    --json's records (or an {"error": ...} line)."""
    done = False
    try:
        while True:
            kind, value = await job.next()
            if kind in ("event", "record"):
                yield json.dumps(value, ensure_ascii=False) + "\n"
            elif kind == "done":
                done = True
                for result in value:
                    yield json.dumps(result.to_json(), ensure_ascii=False) + "\n"
                return
            elif kind == "error":
                done = True
                yield json.dumps(as_api_error(value).body(), ensure_ascii=False) + "\n"
                return
    finally:
        if not done:
            job.cancelled = True


def create_app(
    reader: DocReader,
    *,
    api_key: str | None = None,
    max_queue: int = 32,
    max_upload_mb: float = 64,
    cache_pages: int = 8,
    limits: Limits | None = None,
    request_timeout: float = 600.0,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> FastAPI:
    """A FastAPI app answering with `reader`, up to `max_batch` requests at once (their answers decoded in one
    running batch, see `docread.serve.batcher`; 1: one at a time), at most `max_queue` waiting.
    `api_key`: every /v1 request needs `Authorization: Bearer <api_key>`."""
    from contextlib import asynccontextmanager

    if max_batch < 1:
        raise ValueError(f"max_batch {max_batch}: serve at least 1 request at a time")
    server = _Server(
        reader,
        max_queue=max_queue,
        max_upload_bytes=int(max_upload_mb * MiB),
        cache_pages=cache_pages,
        limits=limits or Limits(),
        request_timeout=request_timeout,
        max_batch=max_batch,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # What is loaded (torch, transformers, the model: millions of objects) is left out of the collector's
        # passes while serving: a full pass over it took 100-450 ms (tiny model, 2-core CPU), a pause in every
        # request in flight. Young passes come every 50,000 allocations, not 700 (fewer, no longer).
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(max(thresholds[0], YOUNG_COLLECTIONS), *thresholds[1:])
        server.worker.start()
        try:
            yield
            await asyncio.to_thread(server.worker.stop)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()

    app = FastAPI(title="docread", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    # a base64 data: URL is 4/3 of its bytes, plus the JSON around it
    app.add_middleware(Guard, api_key=api_key, max_body=math.ceil(server.max_upload_bytes * 4 / 3) + MiB)
    install_handlers(app)

    @app.get("/health")
    async def health() -> dict:
        texts = server.cache.texts
        return {
            "status": "ok",
            "model": reader.name,
            "adapter": reader.adapter,
            "image_size": reader.preset.size,  # its tile size: a client draws --highlight's grid with it
            "waiting": server.worker.waiting,
            "running": server.worker.running,
            "active": server.worker.active,  # requests being served now (up to max_batch)
            "max_batch": server.worker.max_batch,
            "batch": {"rows": server.worker.rows, "peak": server.worker.most_rows},  # answers decoded together
            "served": server.worker.served,
            "cache": {
                "pages": len(server.cache),
                "hits": server.cache.hits,
                "misses": server.cache.misses,
                "texts": {"pages": len(texts), "hits": texts.hits, "misses": texts.misses},  # page texts (OCR) kept
            },
        }

    started = int(time.time())  # /v1/models' `created`: when this server loaded its model

    @app.get("/v1/models")
    async def models() -> dict:
        model = {"id": reader.name, "object": "model", "created": started, "owned_by": "docread"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        from docread.serve.chat import chat_plan, chat_response, chat_stream

        chat = chat_request(json_body(await request.body()))
        if chat.model not in MODEL_ALIASES + (reader.name,):
            raise ApiError(
                404,
                f"the model {chat.model!r} does not exist here: this server serves {reader.name!r} (see /v1/models)",
                "model_not_found",
                param="model",
            )
        _, data, media, sha256 = question_and_image(chat, server.data_urls.decode)
        settings = chat.settings()
        prompt, shape, constrain = chat_plan(reader, chat, settings)
        job = server.submit(data, "image", [prompt], settings, constrain=constrain, streams=chat.stream, sha256=sha256)
        await server.until_opened(job)
        headers = {"X-Docread-Dropped-Turns": str(shape.dropped_turns)}
        if chat.stream:
            include_usage = chat.stream_options is not None and chat.stream_options.include_usage
            events = chat_stream(job, reader.name, include_usage, shape)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(chat_response(await server.answers(job), reader.name, shape), headers=headers)

    @app.post("/v1/documents/ask")
    async def documents_ask(request: Request):
        data, name, fields, events = await _upload(request, server.max_upload_bytes)
        options = ask_form(fields)
        try:
            questions = unique_questions(options.question)
        except DocreadError as e:
            raise from_docread(e) from None
        job = server.submit(data, name, questions, options.settings(), forward=events, streams=events)
        await server.until_opened(job)
        if events:
            return StreamingResponse(_ndjson_events(job), media_type="application/x-ndjson")
        results = await server.answers(job)
        lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in results)
        return Response(lines, media_type="application/x-ndjson")

    @app.post("/v1/documents/ocr")
    async def documents_ocr(request: Request):
        data, name, fields, events = await _upload(request, server.max_upload_bytes)
        job = server.submit_ocr(data, name, ocr_form(fields).settings(), forward=events)
        await server.until_opened(job)
        return StreamingResponse(_ndjson_events(job), media_type="application/x-ndjson")

    return app


async def _upload(request: Request, max_bytes: int) -> tuple[bytes, str, list[tuple[str, Any]], bool]:
    """A /v1/documents form: the uploaded file's bytes and name, the other fields, and `events` (the CLI's
    live view: the read's events as they happen)."""
    try:
        form = await request.form(max_files=1, max_fields=100)
    except Exception as e:  # noqa: BLE001  python-multipart on a malformed body: that body's error
        raise ApiError(400, f"the body is not a valid multipart form: {e}", "invalid_form") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(
            400,
            "file: upload the document as a file part (files on the server are never read)",
            "no_file",
            param="file",
        )
    fields = [(k, v) for k, v in form.multi_items() if k != "file"]
    events = any(k == "events" and v in ("1", "true") for k, v in fields)
    data = await upload.read(max_bytes + 1)
    return data, upload.filename or "upload", [(k, v) for k, v in fields if k != "events"], events
