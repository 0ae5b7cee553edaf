"""The client side of `docread serve` (httpx only, no FastAPI): `ask --server` uploads the file to
/v1/documents/ask and gets back ask's --json records and, as they happen, the read's events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from docread.errors import EXIT_FAILED, DocreadError
from docread.intake import Limits
from docread.limits import Clock
from docread.sources import read_input

CONNECT_TIMEOUT_S = 10.0


def require_httpx():
    try:
        import httpx
    except ImportError:
        raise DocreadError("missing_extra", "--server needs httpx: pip install 'docread[serve]'") from None
    return httpx


def ask_events(
    server: str,
    file: str,
    questions: list[str],
    options: dict[str, Any],
    *,
    api_key: str | None = None,
    limits: Limits | None = None,
    timeout: float = 600.0,
) -> Iterator[dict]:
    """Upload `file` (a path or `-`, read with intake's bounds) and yield the server's lines: event dicts
    ({"event": ...}) as the read goes, then one ask --json record per question. A refused request
    raises its DocreadError (code, message and the exit code the server gave)."""
    httpx = require_httpx()
    limits = limits or Limits()
    clock = Clock(limits.timeout_s, file)
    with clock.running():
        data = bytes(read_input(file, limits, clock))
    fields: dict[str, Any] = {
        "question": list(questions),
        "events": "true",
        **{k: str(v) for k, v in options.items() if v is not None},
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = server.rstrip("/") + "/v1/documents/ask"
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S)) as client,
            client.stream("POST", url, data=fields, files={"file": (file, data)}, headers=headers) as response,
        ):
            if response.status_code != 200:
                response.read()
                raise refused(response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                record = json.loads(line)
                if "error" in record and "event" not in record and "question" not in record:
                    error = record["error"]
                    raise DocreadError(error.get("code") or "server_error", error.get("message", "server error"))
                yield record
    except httpx.HTTPError as e:
        raise DocreadError(
            "server_unreachable", f"{server}: {type(e).__name__}: {e}; is `docread serve` running there?"
        ) from None


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
