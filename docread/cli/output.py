"""How commands write: answers and JSON to stdout, diagnostics to stderr, user text never read as markup.

One problem is one line however narrow the terminal (or a pipe's 80 columns); control characters in
answers and file names are shown escaped on a terminal, never sent to it raw.
"""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import nullcontext

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all C0 but tab and newline, DEL, C1


def color_system() -> str | None:
    """Rich's colour system for docread's consoles: none at all with NO_COLOR (no bold or dim either)."""
    return None if os.environ.get("NO_COLOR") else "auto"


def safe_text(text: str) -> str:
    """`text` with control characters written as escapes (\\x1b), so a terminal shows, not obeys, them."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def one_line(text: str) -> str:
    """A diagnostic on one line: control characters escaped, newlines shown as ⏎."""
    return safe_text(str(text).replace("\r\n", "\n").replace("\n", " ⏎ "))


def write_out(text: str) -> None:
    """Answer text to stdout (escaped when stdout is a terminal; exact in a pipe), flushed."""
    sys.stdout.write(safe_text(text) if sys.stdout.isatty() else text)
    sys.stdout.flush()


def write_json(record: dict) -> None:
    """One JSON Lines record to stdout, flushed (a reader such as `head` gets it at once)."""
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class Diagnostics:
    """stderr for one command: notes and warnings (silenced by --quiet), errors (always shown), and a
    spinner on a terminal. Every message is plain text: brackets in file names or questions are
    printed as they are, never parsed as Rich markup."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True, color_system=color_system())
        self.quiet = quiet

    @property
    def is_terminal(self) -> bool:
        return self.console.is_terminal

    def _print(self, text: str, style: str | None, label: str = "") -> None:
        from rich.text import Text

        line = Text(label, style="bold red") if label else Text()
        line.append(one_line(text), style=style)
        self.console.print(line)

    def note(self, text: str, style: str = "dim") -> None:
        if not self.quiet:
            self._print(text, style)

    def warn(self, text: str) -> None:
        if not self.quiet:
            self._print(text, "yellow")

    def heading(self, text: str) -> None:
        if not self.quiet:
            self._print(text, "bold")

    def error(self, text: str) -> None:
        self._print(text, None, label="error: ")

    def status(self, text: str):
        """A spinner while a slow step runs, on a terminal only; a plain context elsewhere."""
        from rich.text import Text

        if self.quiet or not self.is_terminal:
            return nullcontext()
        return self.console.status(Text(one_line(text)))
