"""Grounding an answer, not a string (docs/method.md#matching): the whole answer, else its values
(numbers with their currency or unit, dates, identifiers, quoted text) and its longest content span,
each searched on the page; `grounded` is true only when every value is found."""

from __future__ import annotations

import re
from dataclasses import dataclass

from docread.text.match import find
from docread.text.pagetext import PageText
from docread.text.units import DATE_PATTERNS, date_readings

MAX_SPAN_WORDS = 40  # longer answers: only their values and the whole answer are searched
STOPWORDS = set(
    "a an the is are was were be been being of to in on at for and or it its this that these those as by "
    "with from which who what there here than then so not no yes i we you he she they his her their our "
    "your my me us them do does did has have had will would can could should may might must".split()
)
_QUOTED = re.compile(r"[\"“«‘]([^\"”»’]{2,}?)[\"”»’]")
_IDENTIFIER = re.compile(r"(?<![\w-])(?=[\w/-]*\d)(?=[\w/-]*[A-Za-z/-])[A-Za-z0-9]+(?:[-/][A-Za-z0-9]+)*(?![\w-])")
_BEFORE = r"(?:(?<![A-Za-z])[A-Z]{3}\s?|[$€£¥₹]\s?)?"  # a currency code or sign
_AFTER = r"(?:\s?(?:%|‰|[€$£¥₹]|(?:kg|g|mg|t|km|m|cm|mm|l|ml|h|min|s|pcs|kWh|MB|GB|TB|[A-Z]{3})(?![\w])))?"
_AMOUNT = re.compile(_BEFORE + r"(?:[-+−]?\d[\d.,'’\u202f\u00a0]*\d|\d)" + _AFTER)
_BARE_NUMBER = re.compile(r"[-+−]?\d[\d.,'’\u202f\u00a0]*\d|\d")


@dataclass(frozen=True)
class Part:
    text: str
    role: str  # answer | value | span
    bare: str | None = None  # a value's number without its currency or unit, searched when the whole is not found


def values(answer: str) -> list[Part]:
    """The values an answer states, in order: quoted text, dates, identifiers, numbers (with currency
    or unit)."""
    taken = [False] * len(answer)
    found: list[tuple[int, Part]] = []

    def take(start: int, end: int, part: Part) -> None:
        if not any(taken[start:end]):
            taken[start:end] = [True] * (end - start)
            found.append((start, part))

    for m in _QUOTED.finditer(answer):
        take(m.start(), m.end(), Part(m[1].strip(), "value"))
    low = answer.lower()
    for pattern in DATE_PATTERNS:
        for m in pattern.finditer(low):
            if date_readings(m):
                take(m.start(), m.end(), Part(answer[m.start() : m.end()], "value"))
    for m in _IDENTIFIER.finditer(answer):
        if re.search(r"[A-Za-z]", m.group()) or re.search(r"\d[-/]\d", m.group()):
            take(m.start(), m.end(), Part(m.group(), "value"))
    for m in _AMOUNT.finditer(answer):
        text = m.group().strip()
        bare = _BARE_NUMBER.search(text).group()
        take(m.start(), m.end(), Part(text, "value", bare if bare != text else None))
    return [part for _, part in sorted(found, key=lambda f: f[0])]


def _content(words: list[str]) -> list[str]:
    cleaned = (w.strip(".,;:!?()\"'“”").casefold() for w in words)
    return [w for w in cleaned if len(w) > 1 and w not in STOPWORDS]


def ground(text: PageText | None, answer: str | None) -> tuple[list[dict], bool | None]:
    """`(evidence, grounded)` for an answer on its page: each item an occurrence record with the `part`
    of the answer it grounds and its `role`; grounded None when the page has no text to check."""
    if text is None or text.source == "none" or not (text.words or text.chars):
        return [], None
    answer = " ".join((answer or "").split()).rstrip(".")
    if not answer:
        return [], False
    whole = find(text, answer)
    if whole:
        return _records(text, Part(answer, "answer"), whole), True
    out, grounded = [], True
    parts = values(answer)
    for part in parts:
        hits = find(text, part.text) or (find(text, part.bare) if part.bare else [])
        out += _records(text, part, hits)
        grounded &= bool(hits)
    span, hits = _longest_span(text, answer, {p.text for p in parts})
    if span is not None:
        out += _records(text, Part(span, "span"), hits)
    if not parts:
        content = _content(answer.split())
        grounded = span is not None and len(_content(span.split())) * 2 > len(content)
    return out, grounded


def _longest_span(text: PageText, answer: str, skip: set[str]):
    """The longest run of the answer's words (holding a content word) found on the page: only runs of
    words each found on their own are tried, longest first."""
    words = answer.split()
    if len(words) > MAX_SPAN_WORDS:
        return None, []
    present = [bool(find(text, w, fuzzy=False)) for w in words]
    windows = [
        (i, j)
        for i in range(len(words))
        for j in range(i + 1, len(words) + 1)
        if (i, j) != (0, len(words)) and all(present[i:j])
    ]
    windows.sort(key=lambda w: -len(" ".join(words[w[0] : w[1]])))
    for i, j in windows:
        span = " ".join(words[i:j]).strip(".,;:!?")
        if span in skip or not _content(words[i:j]):
            continue
        hits = find(text, span, fuzzy=False)
        if hits:
            return span, hits
    return None, []


def _records(text: PageText, part: Part, hits) -> list[dict]:
    return [{**o.to_json(text), "part": part.text, "role": part.role} for o in hits]
