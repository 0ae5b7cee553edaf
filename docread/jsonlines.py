"""JSON Lines on disk. Output: an append-only log that survives any kill (one complete line per write,
the file locked to one writer; on resume a torn last line is cut off and nothing else is ever rewritten),
used by `batch` (keyed by `key`) and the benchmark runners (keyed by `id`). Input: `read_json_or_lines`
for files that may be one JSON document or JSON Lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from docread.errors import DocreadError, UsageError


class JsonLinesLog:
    """Append records to `path` (`-` = stdout); `.done` holds the `key_field` values already there.

    The file is locked for the run (a second writer fails at once instead of duplicating records).
    With `resume`, every complete line must be a record of this kind, or the file is refused: it is
    not docread output, and appending to it would damage it. The log is append-only: records `retry`
    selects (failed ones) stay where they are but do not count as done, so their work is done again and
    its new record appended (a key's last record is its current one); `.retried` counts those keys.
    `.previous` holds every record found on resume, for callers that count done their own way.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        key_field: str,
        resume: bool = False,
        retry: Callable[[dict], bool] = lambda record: False,
    ):
        self.key_field = key_field
        self.path = str(path)
        self.done: set[str] = set()
        self.retried = 0
        self.previous: list[dict] = []
        if self.path == "-":
            self.fd = os.dup(1)
            return
        target = Path(path)
        self.fd = _open_locked(target)
        try:
            if os.fstat(self.fd).st_size:
                if not resume:
                    raise UsageError(
                        f"{target} already holds records: pass --resume to continue that run, "
                        "or remove the file to start over",
                        code="output_exists",
                    )
                self._resume(target, retry)
        except BaseException:
            os.close(self.fd)
            raise

    def _resume(self, target: Path, retry: Callable[[dict], bool]) -> None:
        data = _read_all(self.fd, target)
        records, complete = _parse_records(data, target, self.key_field)
        self.previous = records
        self.done = {str(r[self.key_field]) for r in records if not retry(r)}
        self.retried = len({str(r[self.key_field]) for r in records if retry(r)} - self.done)
        if complete != len(data):  # a line torn by a kill: cut it off (the work it held is done again)
            _truncate(self.fd, target, complete)

    def write(self, record: dict) -> None:
        line = _line(record)
        written = 0
        try:
            while written < len(line):  # one O_APPEND write per line; loop only on a partial write
                written += os.write(self.fd, line[written:])
        except BrokenPipeError:  # stdout's reader left (`-o - | head`): the command ends cleanly, as ask does
            raise
        except OSError as e:
            raise DocreadError(
                "unwritable",
                f"cannot write {self.path}: {e.strerror or e}; the records before "
                "this one are kept: free space (or fix the target) and rerun with --resume",
            ) from None
        self.done.add(str(record[self.key_field]))

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> JsonLinesLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode()


def _open_locked(target: Path) -> int:
    """Open `target` for appending, holding an exclusive lock (one writer per output file)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise DocreadError("unwritable", f"cannot write {target}: {e.strerror or e}") from None
    _lock(fd, target)
    return fd


def _lock(fd: int, target: Path) -> None:
    try:
        import fcntl
    except ImportError:  # no flock on this platform: nothing to guard with
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"{target} is being written by another docread run: wait for it to finish, or choose another output file",
            code="output_locked",
        ) from None
    except OSError:  # devices and some network file systems cannot be locked: write unguarded
        pass


def _read_all(fd: int, target: Path) -> bytes:
    try:
        with open(target, "rb") as f:
            return f.read()
    except OSError as e:
        raise DocreadError("unreadable", f"cannot read {target} to resume: {e.strerror or e}") from None


def _parse_records(data: bytes, target: Path, key_field: str) -> tuple[list[dict], int]:
    """The records of a docread JSON Lines file and the length of its complete part; refuses any
    other file. A last line cut short by a kill is dropped (the work it held is done again)."""
    complete = data[: data.rfind(b"\n") + 1]
    tail = data[len(complete) :]
    if tail and not tail.lstrip().startswith(b"{"):
        raise _not_ours(target, "its last line is not a JSON record")
    records = []
    for number, line in enumerate(complete.split(b"\n")[:-1], 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or key_field not in record:
            raise _not_ours(target, f"line {number} is not a record with {key_field!r}")
        records.append(record)
    return records, len(complete)


def _not_ours(target: Path, why: str) -> UsageError:
    return UsageError(
        f"{target} is not docread output ({why}); --resume would damage it: choose another output file",
        code="output_not_records",
    )


def _truncate(fd: int, target: Path, length: int) -> None:
    """Cut `target` to its first `length` bytes (a torn last line): the only change resume makes to a log."""
    try:
        os.ftruncate(fd, length)
    except OSError as e:
        raise DocreadError("unwritable", f"cannot cut the torn last line of {target}: {e.strerror or e}") from None


def read_json_or_lines(path: Path):
    """A JSON document, or the list of objects of a JSON Lines file.

    Decided by content, so that a JSON Lines file of a single line (which is also one JSON
    document) reads as the records it holds: a top-level object with "data" is a container
    and is returned as it is; any other top-level object is one record, returned as [record].
    A UTF-8 byte-order mark (Windows editors write one) is ignored.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DocreadError("not_found", f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DocreadError("unreadable", f"cannot read {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        return [data] if isinstance(data, dict) and "data" not in data else data
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DocreadError("bad_json", f"{path} line {number}: not JSON ({e.msg})") from None
    return records
