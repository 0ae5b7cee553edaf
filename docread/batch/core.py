"""Many files, pages and questions into records, once for every engine: the keys owed, the loop over files
(a file that cannot be opened becomes error records), groups of up to VISION_BATCH pages of one file handed
to an engine (`Engine`: local, Ray or remote), each record written whole as it arrives, stop requests.

`run_batch` drives the `batch` command. Nothing here prints: progress goes to `on_record`, the resume
summary to `on_resume`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from docread.batch.engine import VISION_BATCH, Engine, Group, Owed
from docread.batch.keys import Resume, file_sha256, record_key
from docread.batch.local import LocalEngine
from docread.document import report_warnings
from docread.errors import DocreadError
from docread.events import Events
from docread.intake import Document, Limits
from docread.jsonlines import JsonLinesLog
from docread.records import BatchRecord
from docread.settings import Settings


def run_batch(
    engine: Engine,
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
    """Write one record per (file, page, question) not yet done for these settings in `sink`; returns how many
    failed. A file or page that fails becomes error records; the run goes on. `engine` may be a loaded
    `DocReader` (the local engine)."""
    engine = _as_engine(engine)
    digest = settings.digest(engine.model, engine.adapter)
    resume = Resume.of(sink.previous, digest)
    if resume.summary():
        on_resume(resume.summary())
    written: set[str] = set()  # an engine may answer a group twice (a Ray reader restarted): write once
    failed = 0

    def emit(record: dict) -> None:
        nonlocal failed
        if record["key"] in written:
            return
        written.add(record["key"])
        failed += record["status"] == "error"
        sink.write(record)
        on_record(record)

    work = _groups(
        engine, files, questions, settings, digest, resume.done, limits, events or Events(), emit, should_stop
    )
    records = engine.run(work)
    try:
        for record in records:
            emit(record)
            if should_stop():
                break
    finally:
        records.close()
    return failed


def _groups(engine, files, questions, settings, digest, done, limits, events, emit, should_stop) -> Iterator[Group]:
    """Each file's owed pages in groups of VISION_BATCH, the file open while its groups are answered; the
    error records of a file that cannot be opened go straight to `emit`."""
    questions = list(questions)
    for file in files:
        if should_stop():
            return
        try:
            document, data = engine.open(file, settings, limits, events)
        except DocreadError as e:
            for record in unopened_records(file, questions, digest, done, e, settings):
                emit(record)
            continue
        held = _Held(document)
        try:
            for owed in vision_groups(owed_pages(document, questions, done)):
                held.groups += 1
                yield Group(document, list(owed), questions, settings, digest, data, events, held.release)
                report_warnings(document, events)
                if should_stop():
                    return
        finally:
            held.listed()


class _Held:
    """An open file and its groups an engine still holds: closed when all are listed and released (an engine
    may hold a file's groups while it reads the next files: `batch --batch-size` packs pairs across files)."""

    def __init__(self, document: Document):
        self.document, self.groups, self.done_listing = document, 0, False

    def release(self) -> None:
        self.groups -= 1
        self._close_when_done()

    def listed(self) -> None:
        self.done_listing = True
        self._close_when_done()

    def _close_when_done(self) -> None:
        if self.done_listing and self.groups <= 0:
            self.document.close()


def unopened_records(file, questions, digest, done, error: DocreadError, settings: Settings) -> list[dict]:
    """A file that cannot be opened: one error record (page None) per question not in `done`."""
    sha = file_sha256(file)
    keyed = {q: record_key(file, sha, None, q) for q in questions}
    return [
        BatchRecord.failed(keyed[q], file, sha, None, q, error, view=str(settings.view), settings=digest).to_json()
        for q in questions
        if keyed[q] not in done
    ]


def owed_pages(document: Document, questions: Sequence[str], done: set[str]) -> list[Owed]:
    """Each page with a question whose record is not in `done`."""
    owed = []
    for page in document.pages:
        keyed = {q: record_key(document.name, document.sha256, page.number, q) for q in questions}
        todo = [q for q in questions if keyed[q] not in done]
        if todo:
            owed.append(Owed(page, todo, keyed))
    return owed


def vision_groups(owed: Sequence) -> list[Sequence]:
    """The owed pages in runs of VISION_BATCH, one vision pass each (every engine groups the same way, so
    all encode, and answer, identically)."""
    return [owed[start : start + VISION_BATCH] for start in range(0, len(owed), VISION_BATCH)]


def record_log(path: str, *, resume: bool) -> JsonLinesLog:
    """The batch output: records keyed by `key` (see `record_key`), appended; `run_batch` counts done only
    the ok records of the run's settings."""
    return JsonLinesLog(path, key_field="key", resume=resume)


def _as_engine(engine) -> Engine:
    return engine if isinstance(engine, Engine) else LocalEngine(engine)
