"""The client side of `docread serve` (httpx only, no FastAPI): `ask`, `ocr`, `batch` and `chat` with
--server upload the file to /v1/documents/ask or /ocr and get back the --json records and, as they
happen, the read's events."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

from docread.errors import EXIT_FAILED, DocreadError
from docread.intake import Limits
from docread.intake.limits import Clock
from docread.intake.sources import read_input

CONNECT_TIMEOUT_S = 10.0


def server_url(server: str) -> str:
    """The server's base URL as `serve` prints either one: http://host:port, .../v1 or host:port (no scheme:
    http)."""
    url = server.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def require_httpx():
    try:
        import httpx
    except ImportError:
        raise DocreadError("missing_extra", "--server needs httpx: pip install 'docread[serve]'") from None
    return httpx


@functools.cache
def http_client():
    """One HTTP client a process (thread-safe): its connections are kept alive between requests (a batch or a
    chat sends many), and its TLS context, about 50 ms to build, is built once. Timeouts are per request."""
    return require_httpx().Client(timeout=CONNECT_TIMEOUT_S)


def ask_events(
    server: str,
    file: str,
    questions: list[str],
    options: dict[str, Any],
    *,
    api_key: str | None = None,
    limits: Limits | None = None,
    timeout: float = 600.0,
    data: bytes | None = None,
) -> Iterator[dict]:
    """Upload `file` (a path or `-`, read with intake's bounds; or `data`, its bytes already read) and
    yield the server's lines: event dicts ({"event": ...}) as the read goes, then one ask --json record per
    question. A refused request raises its DocreadError (code, message and the exit code the server gave)."""
    fields = {"question": list(questions), **options}
    yield from document_events(server, "ask", file, fields, api_key=api_key, limits=limits, timeout=timeout, data=data)


def document_events(
    server: str,
    endpoint: str,
    file: str,
    options: dict[str, Any],
    *,
    api_key: str | None = None,
    limits: Limits | None = None,
    timeout: float = 600.0,
    data: bytes | None = None,
) -> Iterator[dict]:
    """POST `file` and `options` (None values left out) to /v1/documents/<endpoint> with events=true, and
    yield each line of its NDJSON answer: events, then records (ask's, or ocr's page by page)."""
    httpx = require_httpx()
    if data is None:
        data = read_file(file, limits)
    fields: dict[str, Any] = {
        "events": "true",
        **{k: v if isinstance(v, list) else str(v) for k, v in options.items() if v is not None},
    }
    url = server_url(server) + f"/v1/documents/{endpoint}"
    try:
        with http_client().stream(
            "POST",
            url,
            data=fields,
            files={"file": (file, data)},
            headers=_auth(api_key),
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
        ) as response:
            if response.status_code != 200:
                response.read()
                raise refused(response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                record = json.loads(line)
                if set(record) == {"error"}:
                    error = record["error"]
                    raise DocreadError(error.get("code") or "server_error", error.get("message", "server error"))
                yield record
    except httpx.HTTPError as e:
        raise _unreachable(server, e) from None


def read_file(file: str, limits: Limits | None = None) -> bytes:
    """The bytes to upload, read with intake's bounds (size, time)."""
    limits = limits or Limits()
    clock = Clock(limits.timeout_s, file)
    with clock.running():
        return bytes(read_input(file, limits, clock))


def server_health(server: str, *, api_key: str | None = None) -> dict:
    """The server's /health: its model (and adapter), queue and page cache."""
    httpx = require_httpx()
    try:
        response = http_client().get(server_url(server) + "/health", headers=_auth(api_key))
    except httpx.HTTPError as e:
        raise _unreachable(server, e) from None
    if response.status_code != 200:
        raise refused(response)
    return response.json()


def _auth(api_key: str | None) -> dict:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _unreachable(server: str, e: Exception) -> DocreadError:
    return DocreadError("server_unreachable", f"{server}: {type(e).__name__}: {e}; is `docread serve` running there?")


def refused(response) -> DocreadError:
    try:
        error = response.json()["error"]
        code, message = error.get("code") or "server_error", error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "server_error", f"HTTP {response.status_code}: {response.text[:200]}"
    try:
        exit_code = int(response.headers.get("X-Docread-Exit-Code", EXIT_FAILED))
    except ValueError:
        exit_code = EXIT_FAILED
    if response.status_code in (401, 503):
        message = f"the server answered {response.status_code}: {message}"
    return DocreadError(code, message, exit_code=exit_code)
