"""The engine interface of `batch`: a `Group` of owed pages of one open file goes in, its records come out.
Engines: `docread.batch.local` (a loaded model), `docread.batch.raydata` (Ray Data actors),
`docread.batch.remote` (a `docread serve`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from docread.document import open_for_reading
from docread.errors import DocreadError
from docread.events import Events
from docread.intake import Document, Limits
from docread.records import BatchRecord
from docread.settings import Settings

VISION_BATCH = 4  # pages of one file through the vision encoder in one pass (~52 views at 16 tiles)


@dataclass
class Owed:
    """One page's questions still owed, and each one's record key."""

    page: object  # a docread.intake Page
    questions: list[str]
    keys: dict[str, str]


@dataclass
class Group:
    """Up to VISION_BATCH pages of one open file, with what an engine needs to answer them as records."""

    document: Document
    owed: list[Owed]
    questions: list[str]  # all of the run's questions: they shape the encoding, as on a fresh run
    settings: Settings
    digest: str  # Settings.digest of the run: every record's `settings`
    data: bytes | None = None  # the file's bytes, for engines that send them (remote)
    events: Events = field(default_factory=Events)
    release: Callable[[], None] = lambda: None  # the engine is done with the group (its file closes with the last)

    def failed(self, owed: Owed, question: str, error: DocreadError | dict, **rest) -> dict:
        """The error record of one owed question of this group."""
        return BatchRecord.failed(
            owed.keys[question],
            self.document.name,
            self.document.sha256,
            owed.page.number,
            question,
            error,
            view=str(self.settings.view),
            settings=self.digest,
            repaired=self.document.repaired,
            **rest,
        ).to_json()


class Engine:
    """What answers a batch's groups. `model`/`adapter` name what answers (they are part of the records'
        `settings` digest); `answer` turns one group into its records; `run` answers a stream of groups (one at
        a time here; an engine may gather them and answer in parallel, yielding records in completion order) and
    calls each group's `release` when done with it: a file stays open until all its groups are released."""

    model: str
    adapter: str | None = None

    def open(
        self, file: str, settings: Settings, limits: Limits | None, events: Events
    ) -> tuple[Document, bytes | None]:
        """The file opened for reading (and its bytes, for engines that send them); DocreadError if it cannot."""
        return open_for_reading(file, settings=settings, limits=limits, events=events), None

    def answer(self, group: Group) -> Iterator[dict]:
        raise NotImplementedError

    def run(self, groups: Iterator[Group]) -> Iterator[dict]:
        for group in groups:
            try:
                yield from self.answer(group)
            finally:
                group.release()
