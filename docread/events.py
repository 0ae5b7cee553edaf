"""What a document read reports as it goes, so that nothing below the surfaces prints: a surface subclasses
`Events` and renders what it overrides (a terminal's spinner, a server's NDJSON events, a relay to a chat)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docread.errors import DocreadError


class Events:
    """The hooks of a read; each does nothing unless overridden."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the read (a reduced tile budget...)."""

    def page(self, number: int, index: int, total: int) -> None:
        """Page `number` (the `index`-th of `total` selected) is about to be read."""

    def question(self, question: str) -> None:
        """A streamed answer to `question` is about to start (single-page reads with `stream`)."""

    def chunk(self, text: str) -> None:
        """A piece of a streamed answer."""

    def answered(self, result: Any) -> None:
        """A question on a page is done (a `docread.document.PageAnswer`): answered, or failed with the page."""

    def failed(self, number: int, error: DocreadError) -> None:
        """Page `number` could not be read; the read goes on with the next page."""
