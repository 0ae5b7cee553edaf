"""What stands in front of every route: the API key (constant-time compare) and the body size, checked before
any parsing, and every failure rendered in OpenAI's error shape."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from docread.errors import EXIT_FAILED
from docread.serve.protocol import ApiError


def install_handlers(app: FastAPI) -> None:
    """Every failure in OpenAI's error shape, bad input as 4xx: never a bare 500 page for a client's mistake."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return error_response(ApiError(400, str(e.errors()[:1]), "invalid_value"))

    @app.exception_handler(HTTPException)
    async def http(request: Request, e: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(ApiError(e.status_code, str(e.detail), code))


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers={**e.headers, "X-Docread-Exit-Code": str(e.exit_code)})


class Guard:
    """ASGI middleware in front of every route: the API key (constant-time compare) on /v1, and the body
    size (Content-Length at once; a chunked body counted as it arrives), before any parsing."""

    def __init__(self, app, *, api_key: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and scope["path"].startswith("/v1"):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.key):
                error = ApiError(
                    401,
                    "missing or wrong API key: send Authorization: Bearer <key>",
                    "invalid_api_key",
                    exit_code=EXIT_FAILED,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await error_response(error)(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await error_response(self._too_large())(scope, receive, send)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body, more = [], True
            size = 0
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return
                body.append(message.get("body", b""))
                size += len(body[-1])
                if size > self.max_body:
                    return await error_response(self._too_large())(scope, receive, send)
                more = message.get("more_body", False)
            replay: list[dict[str, Any]] = [{"type": "http.request", "body": b"".join(body), "more_body": False}]

            async def receive_replayed():
                return replay.pop() if replay else await receive()

            return await self.app(scope, receive_replayed, send)
        return await self.app(scope, receive, send)

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"the request body is over the server's limit ({self.max_body:,} bytes); see --max-upload-mb",
            "too_large",
            exit_code=EXIT_FAILED,
        )
