"""The remote batch engine (`batch --server`): a `docread serve` answers, through the same
`docread.reading.RemoteReader` that `ask --server` uses. Each file is read here to list its pages (and for
its identity: the same keys as a local batch); each owed page is one upload with the run's settings, and
its answers become the same records a local run writes."""

from __future__ import annotations

from collections.abc import Iterator

from docread.batch.engine import Engine, Group
from docread.errors import DocreadError
from docread.events import Events
from docread.intake import Document, Limits, open_bytes
from docread.reading import RemoteReader, Upload
from docread.records import BatchRecord
from docread.settings import Settings

# a refusal of the whole server, not of one page: the run stops
FATAL = {"server_unreachable", "invalid_api_key", "queue_full", "missing_extra", "server_error", "invalid_value"}


class _PageEvents(Events):
    """A page's events from the server: warnings passed on, a re-encoding to fit GPU memory noted."""

    def __init__(self, events: Events):
        self.events, self.degraded = events, False

    def warning(self, message: str) -> None:
        self.degraded |= "to fit GPU memory" in message
        self.events.warning(message)


class RemoteEngine(Engine):
    """Answers with a `docread serve`: `reader` (a RemoteReader), or the one at `server`."""

    def __init__(
        self,
        reader: RemoteReader | str,
        *,
        api_key: str | None = None,
        limits: Limits | None = None,
    ):
        self.reader = reader if isinstance(reader, RemoteReader) else RemoteReader(reader, api_key)
        self.limits = limits
        self.model, self.adapter = self.reader.name, self.reader.adapter

    def open(self, file: str, settings: Settings, limits: Limits | None, events: Events) -> tuple[Document, bytes]:
        from docread.document import report_warnings
        from docread.remote import read_file

        data = read_file(file, self.limits)
        document = open_bytes(
            data, file, pages=settings.pages, password=settings.password, dpi=settings.dpi, limits=limits
        )
        report_warnings(document, events)
        return document, data

    def answer(self, group: Group) -> Iterator[dict]:
        for owed in group.owed:
            yield from self._page(group, owed)

    def _page(self, group: Group, owed) -> list[dict]:
        """One page's owed questions asked of the server, as batch records."""
        document = group.document
        events = _PageEvents(group.events)
        try:
            page_settings = group.settings.replace(pages=str(owed.page.number))
            upload = Upload(document.name, group.data)
            results = self.reader.ask(upload, owed.questions, settings=page_settings, events=events)
        except DocreadError as e:
            if e.code in FATAL:
                raise
            return [group.failed(owed, q, e) for q in owed.questions]
        answers = {r.question: r for r in results}
        records = []
        for question in owed.questions:
            got = answers.get(" ".join(question.split()))
            if got is None or got.best is None:
                error = got.errors[0][1] if got and got.errors else DocreadError("server_error", "no answer")
                records.append(group.failed(owed, question, error))
                continue
            record = BatchRecord.answered(
                owed.keys[question],
                document.sha256,
                got.best,
                degraded=events.degraded,
                repaired=got.repaired,
                view=str(group.settings.view),
                settings=group.digest,
            )
            record.file = document.name
            records.append(record.to_json())
        return records
