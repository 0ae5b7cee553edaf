"""`batch --server`: the batch loop with a `docread serve` answering. Each file is read here only to
list its pages (and for its identity: the same record keys as a local batch, `docread.batch.core.record_key`);
each page with records still owed is one /v1/documents/ask upload, and its answers become batch's
records, the same keys and fields a local run writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from docread.batch.core import error_record, owed_pages, resume_from, unopened_records
from docread.document import report_warnings
from docread.errors import DocreadError
from docread.events import Events
from docread.intake import Limits, open_bytes
from docread.records import JsonLinesLog
from docread.remote import ask_events, read_file, server_health
from docread.settings import Settings

# a refusal of the whole server, not of one page: the run stops
FATAL = {"server_unreachable", "invalid_api_key", "queue_full", "missing_extra", "server_error"}


def run_batch_server(
    server: str,
    files: Sequence[str],
    questions: Sequence[str],
    sink: JsonLinesLog,
    *,
    settings: Settings,
    limits: Limits | None = None,
    api_key: str | None = None,
    on_record: Callable[[dict], None] = lambda r: None,
    should_stop: Callable[[], bool] = lambda: False,
    events: Events | None = None,
    on_resume: Callable[[str], None] = lambda line: None,
) -> int:
    """`docread.batch.core.run_batch` with the answers from `server`: one record per (file, page, question)
    not already in `sink`; returns how many failed."""
    health = server_health(server, api_key=api_key)
    fingerprint = settings.digest(health["model"], health.get("adapter"))
    resume_from(sink, fingerprint, on_resume)
    events = events or Events()
    failed = 0

    def emit(record: dict) -> None:
        nonlocal failed
        failed += record["status"] == "error"
        sink.write(record)
        on_record(record)

    for file in files:
        if should_stop():
            break
        try:
            data = read_file(file, limits)
            document = open_bytes(
                data, file, pages=settings.pages, password=settings.password, dpi=settings.dpi, limits=limits
            )
        except DocreadError as e:
            for record in unopened_records(file, questions, fingerprint, sink.done, e, settings):
                emit(record)
            continue
        with document:
            report_warnings(document, events)
            for page, todo, keyed in owed_pages(document, questions, document.sha256, fingerprint, sink.done):
                if should_stop():
                    break
                asked = _page_records(server, api_key, document, data, page.number, todo, settings, events)
                for record in asked:
                    record["key"] = keyed[record["question"]]
                    record["settings"] = fingerprint
                    emit(record)
    return failed


def _page_records(server, api_key, document, data, number, todo, settings: Settings, events) -> list[dict]:
    """One page's questions asked of the server, as batch records (without their keys)."""
    options = {
        "pages": str(number),
        "task": settings.task,
        "max_slices": settings.max_slices,
        "view": settings.view,
        "dpi": settings.dpi,
        "password": settings.password,
        "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "text_prompt": "off",  # batch reads the image alone
    }
    degraded = False
    answers = {}
    try:
        for line in ask_events(server, document.name, todo, options, api_key=api_key, data=data):
            if line.get("event") == "warning":
                degraded |= "to fit GPU memory" in line["message"]
                events.warning(line["message"])
            elif "event" not in line:
                answers[line["question"]] = line
    except DocreadError as e:
        if e.code in FATAL:
            raise
        return [_error(document, number, q, e, settings) for q in todo]
    records = []
    for question in todo:
        answer = answers.get(question)
        if answer is None or answer["status"] != "ok":
            error = answer["error"] if answer else {"code": "server_error", "message": "the server gave no answer"}
            records.append(_error(document, number, question, DocreadError(error["code"], error["message"]), settings))
            continue
        records.append(
            {
                "key": None,
                "file": document.name,
                "sha256": document.sha256,
                "page": number,
                "question": question,
                "answer": answer["answer"],
                "score": answer["score"],
                "status": "ok",
                "error": None,
                "degraded": degraded,
                "model": answer["model"],
                "rows": answer["rows"],
                "cols": answer["cols"],
                "visual_tokens": answer["visual_tokens"],
                "timing_ms": answer["timing_ms"],
                "evidence": answer["evidence"],
                "grounded": answer["grounded"],
                "repaired": answer["repaired"],
                "view": str(settings.view),
            }
        )
    return records


def _error(document, number: int, question: str, error: DocreadError, settings: Settings) -> dict:
    return {
        **error_record(None, document.name, document.sha256, number, question, error),
        "repaired": document.repaired,
        "view": str(settings.view),
    }
