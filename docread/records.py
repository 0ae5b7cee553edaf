"""JSON records on disk. Output: append-only JSON Lines that survive any kill (one complete line
per write, flushed; on resume a torn last line is cut off and the keys already written are
collected), used by `batch` (keyed by `key`) and the benchmark runners (keyed by `id`). Input:
`read_json_or_lines` for files that may be one JSON document or JSON Lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from docread.errors import DocreadError, UsageError


class JsonLinesLog:
    """Write records to `path` (`-` = stdout); `.done` holds the `key_field` values already there."""

    def __init__(self, path: str | Path, *, key_field: str, resume: bool = False):
        self.key_field = key_field
        self.done: set[str] = set()
        if str(path) == "-":
            self.fd = os.dup(1)
            return
        target = Path(path)
        if target.is_file() and target.stat().st_size:
            if not resume:
                raise UsageError(f"{target} already holds records: pass --resume to continue that run, "
                                 "or remove the file to start over", code="output_exists")
            self.done = _repair_and_read_keys(target, key_field)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise DocreadError("unwritable", f"cannot write {target}: {e.strerror or e}") from None

    def write(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        written = 0
        while written < len(line):  # one O_APPEND write per line; loop only on a partial write
            written += os.write(self.fd, line[written:])
        self.done.add(str(record[self.key_field]))

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "JsonLinesLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _repair_and_read_keys(path: Path, key_field: str) -> set[str]:
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):  # killed mid-line: drop the torn tail
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    keys = set()
    for line in complete.decode("utf-8", errors="replace").splitlines():
        try:
            keys.add(str(json.loads(line)[key_field]))
        except (ValueError, KeyError, TypeError):
            continue  # a damaged line: its work is done again, the later line wins
    return keys


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
