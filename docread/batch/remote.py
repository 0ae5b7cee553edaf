"""The remote batch engine (`batch --server`): a `docread serve` answers. Each file is read here to list its
pages (and for its identity: the same keys as a local batch); each owed page is one /v1/documents/ask
upload with the run's settings, and its answers become the same records a local run writes. The HTTP
client is used in one place, `server_client`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields

from docread.batch.engine import Engine, Group
from docread.errors import DocreadError
from docread.events import Events
from docread.intake import Document, Limits, open_bytes
from docread.records import Answer, BatchRecord
from docread.settings import Settings

# a refusal of the whole server, not of one page: the run stops
FATAL = {"server_unreachable", "invalid_api_key", "queue_full", "missing_extra", "server_error", "invalid_value"}

# (file name, its bytes, questions, settings) -> the server's NDJSON lines: answers and events
Ask = Callable[[str, bytes, Sequence[str], Settings], Iterator[dict]]


def server_client(server: str, api_key: str | None, limits: Limits | None) -> tuple[dict, Ask, Callable]:
    """The server's health (its model), how to ask it about a page, and how to read a file to send."""
    from docread.remote import ask_events, read_file, server_health

    def ask(name: str, data: bytes, questions: Sequence[str], settings: Settings) -> Iterator[dict]:
        options = {k: v for k, v in settings.changed().items() if k != "fast"}  # fast: the server's own choice
        options["password"] = settings.password
        return ask_events(server, name, list(questions), options, api_key=api_key, data=data)

    return server_health(server, api_key=api_key), ask, lambda file: read_file(file, limits)


class RemoteEngine(Engine):
    """Answers with the `docread serve` at `server`."""

    def __init__(self, server: str, *, api_key: str | None = None, limits: Limits | None = None):
        health, self.ask, self.read = server_client(server, api_key, limits)
        self.model, self.adapter = health["model"], health.get("adapter")

    def open(self, file: str, settings: Settings, limits: Limits | None, events: Events) -> tuple[Document, bytes]:
        from docread.document import report_warnings

        data = self.read(file)
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
        degraded, answers = False, {}
        try:
            page_settings = group.settings.replace(pages=str(owed.page.number))
            for line in self.ask(document.name, group.data, owed.questions, page_settings):
                if line.get("event") == "warning":
                    degraded |= "to fit GPU memory" in line["message"]
                    group.events.warning(line["message"])
                elif "event" not in line:
                    answers[line["question"]] = line
        except DocreadError as e:
            if e.code in FATAL:
                raise
            return [group.failed(owed, q, e) for q in owed.questions]
        records = []
        for question in owed.questions:
            got = answers.get(question)
            if got is None or got["status"] != "ok":
                error = got["error"] if got else {"code": "server_error", "message": "the server gave no answer"}
                records.append(group.failed(owed, question, error))
                continue
            answer = Answer(**{f.name: got[f.name] for f in fields(Answer)})
            record = BatchRecord.answered(
                owed.keys[question],
                document.sha256,
                answer,
                degraded=degraded,
                repaired=got["repaired"],
                view=str(group.settings.view),
                settings=group.digest,
            )
            record.file = document.name
            records.append(record.to_json())
        return records
