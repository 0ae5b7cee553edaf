"""docread's records: what each command writes as JSON. The JSON Lines log itself is `docread.jsonlines`."""

from __future__ import annotations

from docread.jsonlines import JsonLinesLog, read_json_or_lines

__all__ = ["JsonLinesLog", "read_json_or_lines"]
