"""Many files, pages and questions into records: each page rendered and encoded once for all its
questions (a few pages per vision pass), one complete JSON line per record, resumable after any kill.

`run_batch` drives files x pages x questions into a record sink (the `batch` command) over the
document-level calls of `docread.document`. Nothing here prints: progress goes to `on_record`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from docread.batch.keys import Resume, file_sha256, record_key
from docread.document import answer_page, encode_group, open_for_reading, report_warnings
from docread.errors import DocreadError
from docread.events import Events
from docread.intake import Limits
from docread.reader import DocReader
from docread.records import JsonLinesLog
from docread.settings import Settings

VISION_BATCH = 4  # pages of one file through the vision encoder in one pass (~52 views at 16 tiles)


# -- batch: files x pages x questions ------------------------------------------------------------
def record_log(path: str, *, resume: bool) -> JsonLinesLog:
    """The batch output: records keyed by `key` (see `record_key`), appended; resume counts done only the ok
    records of the run's settings (`resume_from`)."""
    return JsonLinesLog(path, key_field="key", resume=resume, retry=lambda record: record.get("status") == "error")


def run_batch(
    reader: DocReader,
    files: Sequence[str],
    questions: Sequence[str],
    sink: JsonLinesLog,
    *,
    settings: Settings,
    limits: Limits | None = None,
    on_record: Callable[[dict], None] = lambda r: None,
    should_stop: Callable[[], bool] = lambda: False,
    events: Events | None = None,
    on_resume: Callable[[str], None] = lambda line: None,
) -> int:
    """Write one record per (file, page, question) not already in `sink`; returns how many failed.
    A file or page that fails becomes error records; the run goes on."""
    fingerprint = settings.digest(reader.name, reader.adapter)
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
            document = open_for_reading(file, settings=settings, limits=limits, events=events)
        except DocreadError as e:
            for record in unopened_records(file, questions, fingerprint, sink.done, e, settings):
                emit(record)
            continue
        with document:
            sha = document.sha256
            _batch_document(
                reader, document, questions, sha, fingerprint, sink.done, settings, emit, should_stop, events
            )
    return failed


def resume_from(sink: JsonLinesLog, digest: str, on_resume: Callable[[str], None]) -> None:
    """Count as done only the sink's ok records made with these settings; say what resume found."""
    resume = Resume.of(sink.previous, digest)
    sink.done = set(resume.done)
    line = resume.summary()
    if line:
        on_resume(line)


def unopened_records(file, questions, fingerprint, done, error: DocreadError, settings: Settings) -> list[dict]:
    """A file that cannot be opened: one error record (page None) per question not in `done`."""
    sha = file_sha256(file)
    keyed = {q: record_key(file, sha, None, q) for q in questions}
    return [
        {**error_record(keyed[q], file, sha, None, q, error), "view": str(settings.view), "settings": fingerprint}
        for q in questions
        if keyed[q] not in done
    ]


def _batch_document(reader, document, questions, sha, fingerprint, done, settings, emit, should_stop, events) -> None:
    """The document's pages in groups of VISION_BATCH: one vision pass a group, then each page's
    questions on its own KV prefix, freed before the next page's."""
    for group in vision_groups(owed_pages(document, questions, sha, fingerprint, done)):
        if should_stop() or not answer_group(
            reader, document, group, questions, sha, settings, emit, should_stop, events
        ):
            return
        report_warnings(document, events)


def owed_pages(document, questions, sha, fingerprint, done) -> list[tuple]:
    """(page, questions still owed, {question: key}) for each page with a record not in `done`."""
    owed = []
    for page in document.pages:
        keyed = {q: record_key(document.name, sha, page.number, q) for q in questions}
        todo = [q for q in questions if keyed[q] not in done]
        if todo:
            owed.append((page, todo, keyed))
    return owed


def vision_groups(owed: Sequence) -> list[Sequence]:
    """The owed pages in runs of VISION_BATCH, one vision pass each (the Ray engine groups the same way,
    so both engines encode, and answer, identically)."""
    return [owed[start : start + VISION_BATCH] for start in range(0, len(owed), VISION_BATCH)]


def answer_group(reader, document, group, questions, sha, settings, emit, should_stop, events) -> bool:
    """One vision pass over the group's pages, then every owed question of each page, one record each
    through `emit`; False when `should_stop` ended it early. `questions` (all of the run's) shape the
    encoding, as in the local batch."""
    from docread.text.evidence import PageTexts, evidence_fields
    from docread.views.prompt import task_question

    texts = PageTexts(document, settings.text)
    prompts = [task_question(settings.task, q) for q in questions]
    try:
        encoded = encode_group(reader, document, [page for page, _, _ in group], prompts, settings)
    except DocreadError:  # a page of the group failed to render: each page alone finds out which
        encoded = None
    for index, (page, todo, keyed) in enumerate(group):
        for result in answer_page(
            reader,
            document,
            page,
            todo,
            settings,
            events=events,
            encoded=encoded[index] if encoded is not None else None,
        ):
            if result.answer is None:
                record = error_record(
                    keyed[result.question], document.name, sha, page.number, result.question, result.error
                )
            else:
                answer = result.answer
                record = {
                    "key": keyed[result.question],
                    "file": document.name,
                    "sha256": sha,
                    "page": page.number,
                    "question": result.question,
                    "answer": answer.answer,
                    "score": answer.score,
                    "status": "ok",
                    "error": None,
                    "degraded": result.degraded,
                    "model": answer.model,
                    "rows": answer.rows,
                    "cols": answer.cols,
                    "visual_tokens": answer.visual_tokens,
                    "timing_ms": answer.timing_ms,
                    **evidence_fields(
                        texts, page, answer.answer, on_error=lambda e: events.warning(f"no evidence: {e.message}")
                    ),
                }
            record["repaired"] = document.repaired  # MuPDF may repair a file late, on loading a page
            record["view"] = str(settings.view)
            record["settings"] = settings.digest(reader.name, reader.adapter)
            emit(record)
            if should_stop():
                return False
    return True


def error_record(key, file, sha, page, question, error: DocreadError) -> dict:
    return {
        "key": key,
        "file": file,
        "sha256": sha,
        "page": page,
        "question": question,
        "answer": None,
        "score": None,
        "status": "error",
        "error": error.to_json(),
        "degraded": False,
        "model": None,
        "rows": None,
        "cols": None,
        "visual_tokens": None,
        "timing_ms": {},
        "evidence": [],
        "grounded": False,
    }
