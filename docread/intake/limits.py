"""What one input may cost: the defaults of every limit (one home for them), the `Limits` of a
read, and the clock that counts the time intake spends on a file (never the model's)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from docread.errors import DocreadError

DEFAULT_DPI = 200.0
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own bomb threshold (2 x 89.5 MP), per page
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: far above any real scan, far below what a pipe of /dev/zero fills


@dataclass(frozen=True)
class Limits:
    """What one input file may cost."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # per page, at its nominal size (PDFs: at --dpi)
    timeout_s: float = DEFAULT_TIMEOUT_S  # intake's own time on the file: reading, opening, rendering its pages
    max_bytes: int = DEFAULT_MAX_BYTES  # the file's size, read from disk, a pipe or stdin


class Clock:
    """The time intake spends on one file, counted only inside intake calls: the model's work
    between two renders never uses up a file's --timeout."""

    def __init__(self, limit_s: float, name: str):
        self.limit_s, self.name, self.spent, self._since = limit_s, name, 0.0, None

    @contextmanager
    def running(self) -> Iterator[None]:
        self.check()
        self._since = time.monotonic()
        try:
            yield
        finally:
            self.spent += time.monotonic() - self._since
            self._since = None

    def left(self) -> float:
        current = 0.0 if self._since is None else time.monotonic() - self._since
        return self.limit_s - self.spent - current

    def check(self) -> None:
        if self.left() < 0:
            raise DocreadError(
                "timeout",
                f"{self.name}: took longer than {self.limit_s:g} s to read; raise --timeout, or split the file",
            )
