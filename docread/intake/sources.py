"""Where input comes from: paths and folders (walked for supported files), stdin, pipes and
devices, read whole but bounded in bytes and in time; and which pages `--pages` selects."""

from __future__ import annotations

import os
import re
import select
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

from docread.errors import DocreadError, UsageError
from docread.intake.limits import Clock, Limits

READ_CHUNK = 4 << 20  # bytes per read: checks of size and time between chunks


# -- page selection ----------------------------------------------------------------------------
_PART = re.compile(r"(?P<back>-\d+)|(?P<first>\d+)(?:(?P<dash>-)(?P<last>\d*))?")


def _page_ranges(spec: str) -> list[tuple[str, int, int | None]]:
    """`--pages` as (part, first, last) ranges; first < 0 counts from the end, last None = to the end."""
    ranges = []
    for part in (p.strip() for p in spec.split(",")):
        match = _PART.fullmatch(part)
        if match is None:
            raise UsageError(f"--pages {spec!r}: {part!r} is not a page; use numbers and ranges like 1,3-5,-1")
        if match["back"]:
            ranges.append((part, int(part), int(part)))
            continue
        first = int(match["first"])
        last = first if not match["dash"] else int(match["last"]) if match["last"] else None
        if last is not None and last < first:
            raise UsageError(f"--pages {spec!r}: the range {part!r} is reversed; write it as {last}-{first}")
        ranges.append((part, first, last))
    return ranges


def validate_pages_spec(spec: str | None) -> None:
    """Check `--pages` syntax before any file or model is opened (UsageError, exit 2)."""
    if spec is not None and spec.strip() not in ("", "all"):
        _page_ranges(spec)


def parse_pages(spec: str | None, count: int, *, name: str | None = None) -> list[int]:
    """1-based page numbers for `--pages` like "1,3-5,-1" ("-1" = last, "4-" = 4 to the end).

    Bad syntax is a UsageError; pages the file lacks are its `bad_pages` error (checked before any
    range is expanded, so "1-99999999999" costs nothing)."""
    if spec is None or spec.strip() in ("", "all"):
        return list(range(1, count + 1))
    chosen: dict[int, None] = {}  # ordered, without repeats
    for part, first, last in _page_ranges(spec):
        if first < 0:
            first = last = count + 1 + first
        last = count if last is None else last
        if not 1 <= first <= last <= count:
            raise DocreadError(
                "bad_pages",
                f"--pages {part}: {name or 'the file'} has {count} page{'s' if count != 1 else ''} (1-{count})",
            )
        chosen.update(dict.fromkeys(range(first, last + 1)))
    return list(chosen)


# -- finding files -----------------------------------------------------------------------------
def supported_suffixes() -> set[str]:
    from PIL import Image

    return {".pdf"} | {s.lower() for s in Image.registered_extensions()}


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given, folders walked recursively (supported files only, sorted), `-` kept."""
    files: list[str] = []
    suffixes = None
    for raw in paths:
        path = Path(raw)
        if raw == "-" or not path.is_dir():
            files.append(raw)
            continue
        suffixes = suffixes or supported_suffixes()
        found = sorted(
            (
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not found:
            raise DocreadError("no_documents", f"{raw}: no PDF or image files in this folder (searched recursively)")
        files += [str(p) for p in found]
    return files


# -- reading bytes -----------------------------------------------------------------------------
def read_input(path: str, limits: Limits, clock: Clock) -> bytearray:
    """The whole input, bounded: at most `limits.max_bytes`, and within the clock even from a pipe,
    a FIFO or a device that never ends or never writes."""
    if path == "-" and _stdin_is_a_stream():
        data = _read_stream(path, sys.stdin.buffer, limits, clock)
    else:
        fd = _stdin_fd() if path == "-" else _open_fd(path)
        try:
            data = _read_fd(path, fd, limits, clock)
        finally:
            if path != "-":
                os.close(fd)
    if not data:
        raise DocreadError("empty", f"{path}: the file is empty (0 bytes); re-export or re-download it")
    return data


def _stdin_is_a_stream() -> bool:
    """stdin replaced by an in-memory stream (a notebook, a test runner): no descriptor to wait on."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return False
    try:
        sys.stdin.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return True
    return False


def _read_stream(name: str, stream, limits: Limits, clock: Clock) -> bytearray:
    data = bytearray()
    while chunk := stream.read(READ_CHUNK):
        clock.check()
        data += chunk
        if len(data) > limits.max_bytes:
            raise _over(name, limits)
    return data


def _over(name: str, limits: Limits) -> DocreadError:
    return DocreadError(
        "too_large", f"{name}: over {limits.max_bytes:,} bytes, docread's limit for one input; split or compress it"
    )


def _stdin_fd() -> int:
    try:
        fd = sys.stdin.fileno()  # sys.stdin is None when started with stdin closed (`<&-`)
        os.fstat(fd)
    except (AttributeError, ValueError, OSError):
        raise DocreadError("unreadable", "stdin is closed: pipe a file in or name a path") from None
    return fd


def _open_fd(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO without a writer must not block open()
        is_folder = stat.S_ISDIR(os.fstat(fd).st_mode)
    except FileNotFoundError:
        raise DocreadError("not_found", f"{path}: no such file; check the path") from None
    except PermissionError:
        raise DocreadError("unreadable", f"{path}: permission denied; check the file's permissions") from None
    except OSError as e:
        raise DocreadError("unreadable", f"{path}: cannot be read ({e.strerror or e})") from None
    if is_folder:
        os.close(fd)
        raise DocreadError("unreadable", f"{path} is a folder: name a file, or use `docread batch` for folders")
    return fd


def _read_fd(name: str, fd: int, limits: Limits, clock: Clock) -> bytearray:
    waits = not stat.S_ISREG(os.fstat(fd).st_mode)  # pipes, FIFOs, ttys, devices may never answer
    data = bytearray()
    while True:
        clock.check()
        if waits and not select.select([fd], [], [], max(0.0, clock.left()))[0]:
            clock.check()
            continue  # woken early: wait the rest
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            continue
        except OSError as e:
            raise DocreadError("unreadable", f"{name}: cannot be read ({e.strerror or e})") from None
        if not chunk:
            return data
        data += chunk
        if len(data) > limits.max_bytes:
            raise _over(name, limits)
