"""What a batch record is and whether it is owed: its key (file, content hash, page, question), and on
`--resume` which keys are done for these settings. The `settings` digest is a field of each record, not
part of its key: runs with other settings append rows that `settings` tells apart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field


def record_key(file: str, sha256: str | None, page: int | None, question: str) -> str:
    """A record's identity: file (path and content hash: two copies of a file are two files; an edited
    file is a new one), page and question."""
    text = json.dumps([file, sha256, page, question], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_sha256(path: str) -> str | None:
    """The content hash of a file that could not be opened as a document (None if unreadable)."""
    if path == "-":
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


@dataclass
class Resume:
    """What a log already holds, seen from one run's settings: the keys done (an ok record with this
    digest), and counts for the summary line."""

    digest: str
    done: set[str] = field(default_factory=set)
    other_settings: int = 0  # records of runs with other settings: kept, and not counted as done
    retrying: int = 0  # keys whose records for these settings all failed: asked again

    @classmethod
    def of(cls, records: Iterable[dict], digest: str) -> Resume:
        state = cls(digest)
        failed = set()
        for record in records:
            if record.get("settings") != digest:
                state.other_settings += 1
            elif record.get("status") == "ok":
                state.done.add(record["key"])
            else:
                failed.add(record["key"])
        state.retrying = len(failed - state.done)
        return state

    def summary(self) -> str | None:
        """The line `batch --resume` prints (None when the log held nothing)."""
        if not (self.done or self.other_settings or self.retrying):
            return None
        parts = [f"resuming: {len(self.done)} records done"]
        if self.other_settings:
            parts.append(f"{self.other_settings} with other settings kept, redone for these settings")
        if self.retrying:
            parts.append(f"retrying {self.retrying} failed")
        return "; ".join(parts)
