"""Where a text occurs in a page's character stream (docs/method.md#matching): `exact` (the characters
as written, spacing aside), else `normalized` (unit by unit: letters without case or accents, numbers
and dates by value), else `fuzzy` (a few letter edits; digits never). A match gets one box per line.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from docread.text.pagetext import Box, PageText, is_rtl, logical_chars
from docread.text.units import Unit, number_readings, units  # noqa: F401 (number_readings: re-exported)

FUZZY_CHARS = 5  # one letter edit allowed per 5 letters of the text (under 5 letters: none)
MAX_HITS = 200  # occurrences of one text kept per page
KINDS = ("exact", "normalized", "fuzzy")  # best first; a weaker kind is tried only when no better one hit
_EDGE = "\"'“”‘’«»()[]{}<>.,:;!?*"
_OTHER = "\ue0ff"  # a number or date of the page that is none of the query's (fuzzy alignment)
_MASK = "\ue0fe"  # a page stretch already matched


@dataclass
class Occurrence:
    """One place a text occurs: how it matched, the page's text there and its boxes (one per line)."""

    page: int
    query: str
    match: str  # exact | normalized | fuzzy
    text: str
    line_boxes: list[tuple[str, Box]]
    start: int = 0  # position in the page's character stream (reading order)

    def lines(self) -> list[tuple[str, Box]]:
        return list(self.line_boxes)

    @property
    def bbox(self) -> Box:
        return union(b for _, b in self.line_boxes)

    def to_json(self, text: PageText) -> dict:
        return {
            "page": self.page,
            "text": self.text,
            "bbox": list(self.bbox),
            "bbox_px": text.px(self.bbox),
            "match": self.match,
            "lines": [{"text": t, "bbox": list(b), "bbox_px": text.px(b)} for t, b in self.line_boxes],
        }


def union(boxes) -> Box:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


# -- the page's character stream ---------------------------------------------------------------------
class Stream:
    """A page's characters in reading order as one string (lines joined by newlines), each with its box
    and line; built once per page and kept on the PageText."""

    def __init__(self, text: PageText):
        chars, boxes, lines = [], [], []
        previous = None
        for ch, box, line in _page_chars(text):
            if previous is not None and line != previous:
                chars.append("\n"), boxes.append(None), lines.append(previous)
            previous = line
            for c in unicodedata.normalize("NFKC", ch) or " ":
                if unicodedata.category(c) == "Cf":  # bidi marks, soft hyphens, joiners: no text
                    continue
                chars.append(" " if c.isspace() else c), boxes.append(box), lines.append(line)
        self.text, self.boxes, self.lines = "".join(chars), boxes, lines
        self.solid = [i for i, c in enumerate(self.text) if not c.isspace()]
        self.solid_text = "".join(self.text[i] for i in self.solid)
        self.units = units(self.text)

    @classmethod
    def of(cls, text: PageText) -> Stream:
        key = ("stream", len(text.words), len(text.chars))
        if key not in text.cache:
            text.cache.clear()
            text.cache[key] = cls(text)
        return text.cache[key]

    def occurrence(self, page: int, query: str, kind: str, start: int, end: int) -> Occurrence:
        """The occurrence covering stream[start:end]: its text and one box per line (a column of
        one-character lines, as vertical text often is stored, is one box)."""
        groups: list[tuple[list[int], int]] = []
        for i in range(start, end):
            if self.boxes[i] is None or self.text[i].isspace():
                continue
            if groups and groups[-1][1] == self.lines[i]:
                groups[-1][0].append(i)
            else:
                groups.append(([i], self.lines[i]))
        merged: list[list[int]] = []
        for members, _ in groups:
            if merged and _columns(self, merged[-1], members):
                merged[-1] += members
            else:
                merged.append(members)
        line_boxes = [(self._span(m), union(self.boxes[i] for i in m)) for m in merged]
        text = " ".join(t for t, _ in line_boxes) if len(merged) > 1 else line_boxes[0][0]
        return Occurrence(page, query, kind, text, line_boxes, start)

    def _span(self, members: list[int]) -> str:
        if len({self.lines[i] for i in members}) > 1:  # a vertical column: its characters in order
            return "".join(self.text[i] for i in members)
        return self.text[members[0] : members[-1] + 1]


def _page_chars(text: PageText):
    if text.chars:
        yield from ((c.ch, c.bbox, c.line) for c in text.chars)
        return
    previous = None
    for word in text.words:  # OCR words: each word's box shared among its characters
        if previous == word.line:
            yield " ", word.bbox, word.line
        previous = word.line
        x0, y0, x1, y1 = word.bbox
        n = max(1, len(word.text))
        for k, ch in enumerate(word.text):
            if x1 - x0 >= y1 - y0 or n == 1:
                yield ch, (x0 + (x1 - x0) * k / n, y0, x0 + (x1 - x0) * (k + 1) / n, y1), word.line
            else:
                yield ch, (x0, y0 + (y1 - y0) * k / n, x1, y0 + (y1 - y0) * (k + 1) / n), word.line


def _columns(stream: Stream, above: list[int], below: list[int]) -> bool:
    """Whether two line groups are one vertical column: both one character wide, stacked."""
    a, b = union(stream.boxes[i] for i in above), union(stream.boxes[i] for i in below)
    wide = max(stream.boxes[i][2] - stream.boxes[i][0] for i in above + below)
    tall = max(stream.boxes[i][3] - stream.boxes[i][1] for i in above + below)
    narrow = a[2] - a[0] <= 1.5 * wide and b[2] - b[0] <= 1.5 * wide
    overlap = min(a[2], b[2]) - max(a[0], b[0]) >= 0.5 * min(a[2] - a[0], b[2] - b[0])
    return narrow and overlap and -0.5 * tall <= b[1] - a[3] <= tall


# -- boundaries ----------------------------------------------------------------------------------------
def _spaced(ch: str) -> bool:
    """A letter of a script that puts spaces between words (not CJK, kana, Thai...)."""
    return ch.isalpha() and unicodedata.east_asian_width(ch) not in ("W", "F") and not 0x0E00 <= ord(ch) <= 0x1000


def _joined(a: str, b: str) -> bool:
    """Whether a match may not end between `a` and `b`: inside a number, or inside a word (a lower to
    upper case change, as in glued `InvoiceNumber`, counts as a word break)."""
    if a.isdigit() and b.isdigit():
        return True
    return _spaced(a) and _spaced(b) and not (a.islower() and b.isupper())


def _bounded(stream: Stream, start: int, end: int) -> bool:
    s = stream.text
    return not (start > 0 and _joined(s[start - 1], s[start])) and not (end < len(s) and _joined(s[end - 1], s[end]))


# -- matching ----------------------------------------------------------------------------------------
def find(text: PageText, query: str, *, fuzzy: bool = True) -> list[Occurrence]:
    """Every non-overlapping occurrence of `query` on the page, in reading order, all of the best kind
    found (exact, else normalized, else fuzzy)."""
    query = " ".join(query.split())
    key = "".join(c for c in unicodedata.normalize("NFKC", query) if unicodedata.category(c) != "Cf")
    if not key.strip(_EDGE) or not (text.words or text.chars):
        return []
    stream = Stream.of(text)
    # a right-to-left text copied in visual order (as some viewers and extractors give it) is tried too
    keys = [key, _visual(key)] if is_rtl(key) else [key]
    for kind, search in (("exact", _exact), ("normalized", _normalized), ("fuzzy", _fuzzy)):
        if kind == "fuzzy" and not fuzzy:
            break
        for k in keys:
            spans = search(stream, k)
            if spans:
                return [stream.occurrence(text.page, query, kind, a, b) for a, b in spans]
    return []


def _visual(text: str) -> str:
    return "".join(c for c, _ in logical_chars([(c, (i, 0, i + 1, 1)) for i, c in enumerate(text)]))


def _exact(stream: Stream, query: str) -> list[tuple[int, int]]:
    needle = "".join(query.split()).strip(_EDGE)
    spans, at = [], 0
    while len(spans) < MAX_HITS:
        k = stream.solid_text.find(needle, at)
        if k < 0:
            break
        start, end = stream.solid[k], stream.solid[k + len(needle) - 1] + 1
        if _bounded(stream, start, end):
            spans.append((start, end))
            at = k + len(needle)
        else:
            at = k + 1
    return spans


def _normalized(stream: Stream, query: str) -> list[tuple[int, int]]:
    wanted, have = units(query), stream.units
    if not wanted:
        return []
    spans, i = [], 0
    while i <= len(have) - len(wanted) and len(spans) < MAX_HITS:
        if all(w.keys & h.keys for w, h in zip(wanted, have[i : i + len(wanted)])):
            start, end = have[i].start, have[i + len(wanted) - 1].end
            if _bounded(stream, start, end):
                spans.append((start, end))
                i += len(wanted)
                continue
        i += 1
    return spans


def _symbols(wanted: list[Unit], have: list[Unit]) -> tuple[str, str]:
    """The query's and the page's units as strings for alignment: a letter is itself, each number or
    date of the query a private character, a page number or date equal to one of them that character,
    any other `_OTHER`."""
    private: dict[frozenset, str] = {}
    for u in wanted:
        if not u.letter and not any(u.keys & k for k in private):
            private[u.keys] = chr(0xE000 + len(private))

    def symbol(u: Unit) -> str:
        if u.letter:
            return next(iter(u.keys))
        return next((c for k, c in private.items() if u.keys & k), _OTHER)

    return "".join(map(symbol, wanted)), "".join(map(symbol, have))


def _fuzzy(stream: Stream, query: str) -> list[tuple[int, int]]:
    """Approximate occurrences (rapidfuzz's partial alignment, then Levenshtein edit operations): at
    most one letter edit per FUZZY_CHARS letters of spaced scripts, and no edit that touches a number, a
    date or a character of a script without spaces (a CJK character is a word: never forgiven)."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.fuzz import partial_ratio_alignment

    wanted, have = units(query), stream.units
    allowed = sum(u.letter and _spaced(next(iter(u.keys))) for u in wanted) // FUZZY_CHARS
    if not allowed or len(wanted) > len(have):
        return []
    needle, page = _symbols(wanted, have)
    cutoff = 100 * (1 - allowed / len(needle)) - 1e-6
    spans: list[tuple[int, int]] = []
    for _ in range(MAX_HITS):
        hit = partial_ratio_alignment(needle, page, score_cutoff=cutoff)
        if hit is None or hit.score < cutoff:
            break
        bounded = lambda a, b: a < b and _bounded(stream, have[a].start, have[b - 1].end)  # noqa: E731
        a, b = _best_window(needle, page, hit.dest_start, hit.dest_end, allowed, bounded)
        ops = Levenshtein.editops(needle, page[a:b])
        letters_only = all(
            (op.tag == "insert" or _spaced(needle[op.src_pos]))
            and (op.tag == "delete" or _spaced(page[a + op.dest_pos]))
            for op in ops
        )
        if len(ops) <= allowed and letters_only and bounded(a, b):
            spans.append((have[a].start, have[b - 1].end))
        page = page[:a] + _MASK * (max(b, hit.dest_end) - a) + page[max(b, hit.dest_end) :]
    return sorted(spans)


def _best_window(needle: str, page: str, start: int, end: int, slack: int, bounded) -> tuple[int, int]:
    """The window near page[start:end] closest to `needle` (Levenshtein) among those that start and end
    at word boundaries, the longest of equals."""
    from rapidfuzz.distance import Levenshtein

    best = None
    for a in range(max(0, start - slack), min(len(page), start + slack) + 1):
        for b in range(max(a + 1, end - slack), min(len(page), end + slack) + 1):
            if _MASK in page[a:b]:
                continue
            key = (not bounded(a, b), Levenshtein.distance(needle, page[a:b]), -(b - a))
            if best is None or key < best[0]:
                best = (key, a, b)
    return (best[1], best[2]) if best else (start, start)
