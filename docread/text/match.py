"""Where a text occurs among a page's words: `exact` (the words as written), `normalized` (case,
whitespace, currency signs and codes, number formats, dates) or `fuzzy` (OCR noise: at most one edit
per FUZZY_CHARS characters). A match spanning lines gets one box per line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from itertools import product

from docread.text.pagetext import Box, PageText, Word

FUZZY_CHARS = 5  # one edit allowed per 5 characters of the normalized text (4 chars: none)
SPAN_SLACK = 2  # a match may take up to this many more words than the query has
MAX_VARIANTS = 16  # readings of one text kept (each ambiguous number or date doubles them)
KINDS = ("exact", "normalized", "fuzzy")  # best first
_EDGE = "\"'“”‘’«»()[]{}<>.,:;!?*"
CURRENCY_CODES = {
    "usd",
    "eur",
    "gbp",
    "chf",
    "jpy",
    "cny",
    "inr",
    "cad",
    "aud",
    "sek",
    "nok",
    "dkk",
    "pln",
    "czk",
    "rub",
    "brl",
    "mxn",
    "krw",
    "zar",
    "huf",
    "try",
}
MONTHS = {
    m: i
    for i, names in enumerate(
        [
            ("jan", "january", "janvier", "januar", "enero"),
            ("feb", "february", "février", "fevrier", "februar", "febrero"),
            ("mar", "march", "mars", "märz", "marz", "marzo"),
            ("apr", "april", "avril", "abril"),
            ("may", "mai", "mayo"),
            ("jun", "june", "juin", "juni", "junio"),
            ("jul", "july", "juillet", "juli", "julio"),
            ("aug", "august", "août", "aout", "agosto"),
            ("sep", "sept", "september", "septembre", "septiembre"),
            ("oct", "october", "octobre", "oktober", "octubre"),
            ("nov", "november", "novembre", "noviembre"),
            ("dec", "december", "décembre", "decembre", "dezember", "diciembre"),
        ],
        start=1,
    )
    for m in names
}
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_DATE_NUMERIC = re.compile(r"(?<![\d.])(\d{1,4})([./-])(\d{1,2})\2(\d{2,4})(?![\d])")
_DATE_DMY_WORDS = re.compile(rf"(?<!\w)(\d{{1,2}})(?:st|nd|rd|th)?\.?[\s-]*({_MONTH})\.?,?[\s-]*(\d{{4}})(?!\d)")
_DATE_MDY_WORDS = re.compile(rf"(?<!\w)({_MONTH})\.?[\s-]*(\d{{1,2}})(?:st|nd|rd|th)?,?[\s-]*(\d{{4}})(?!\d)")
_NUMBER = re.compile(r"[+-]?\d[\d.,'’\u202f\u00a0]*\d|\d")


@dataclass
class Occurrence:
    """One place a text occurs: the page words matched, how, and their boxes (one per line)."""

    page: int
    query: str
    match: str  # exact | normalized | fuzzy
    words: list[Word]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def lines(self) -> list[tuple[str, Box]]:
        by_line: dict[int, list[Word]] = {}
        for word in self.words:
            by_line.setdefault(word.line, []).append(word)
        return [(" ".join(w.text for w in ws), union(w.bbox for w in ws)) for ws in by_line.values()]

    @property
    def bbox(self) -> Box:
        return union(w.bbox for w in self.words)

    def to_json(self, text: PageText) -> dict:
        return {
            "page": self.page,
            "text": self.text,
            "bbox": list(self.bbox),
            "bbox_px": text.px(self.bbox),
            "match": self.match,
            "lines": [{"text": t, "bbox": list(b), "bbox_px": text.px(b)} for t, b in self.lines()],
        }


def union(boxes) -> Box:
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


# -- normalization ----------------------------------------------------------------------------------
def exact_key(text: str) -> str:
    """The words as written, surrounding punctuation and spacing aside."""
    return " ".join(w.strip(_EDGE) for w in text.split() if w.strip(_EDGE))


def normalize(text: str) -> list[str]:
    """Every reading of `text` as one key (spaces removed): casefolded, currency dropped, dates as ISO
    8601, numbers as plain decimals. An ambiguous "1,234" or "03/04/2024" gives each reading."""
    text = unicodedata.normalize("NFKC", text).casefold()
    variants = [text]
    for rewrite in (_dates, _numbers):
        variants = list(dict.fromkeys(v for text in variants for v in rewrite(text)))[:MAX_VARIANTS]
    return list(dict.fromkeys(_squash(v) for v in variants))


def _squash(text: str) -> str:
    kept = []
    for word in text.split():
        word = "".join(ch for ch in word if unicodedata.category(ch) != "Sc").strip(_EDGE + "-")
        if word and word not in CURRENCY_CODES:
            kept.append(word)
    return "".join(kept)


def _rewrite(text: str, pattern: re.Pattern, readings) -> list[str]:
    """`text` with each match of `pattern` replaced by each of its readings (all combinations)."""
    parts, choices, end = [], [], 0
    for m in pattern.finditer(text):
        options = readings(m) or [m.group()]
        parts.append(text[end : m.start()])
        choices.append(options)
        end = m.end()
    if not choices:
        return [text]
    tail = text[end:]
    out = []
    for combo in product(*choices):
        out.append("".join(p + c for p, c in zip(parts, combo)) + tail)
        if len(out) >= MAX_VARIANTS:
            break
    return out


def _iso(y: int, m: int, d: int) -> str | None:
    try:
        return date(y, m, d).isoformat()
    except ValueError:
        return None


def _year(y: str) -> int:
    return int(y) + (2000 if int(y) < 70 else 1900) if len(y) == 2 else int(y)


def _dates(text: str) -> list[str]:
    def numeric(m):
        a, _, b, c = m.groups()
        if len(a) == 4:
            return [d for d in [_iso(int(a), int(b), int(c))] if d] if len(c) <= 2 else []
        if len(c) == 3:
            return []
        y = _year(c)
        return list(dict.fromkeys(d for d in (_iso(y, int(b), int(a)), _iso(y, int(a), int(b))) if d))

    def dmy(m):
        return [d for d in [_iso(int(m[3]), MONTHS[m[2]], int(m[1]))] if d]

    def mdy(m):
        return [d for d in [_iso(int(m[3]), MONTHS[m[1]], int(m[2]))] if d]

    variants = [text]
    for pattern, readings in ((_DATE_NUMERIC, numeric), (_DATE_DMY_WORDS, dmy), (_DATE_MDY_WORDS, mdy)):
        variants = [v for t in variants for v in _rewrite(t, pattern, readings)]
    return variants


def number_readings(token: str) -> list[str]:
    """The plain decimal(s) a written number can mean: "1,234.56", "1.234,56", "1 234,56" and
    "1234.56" are all 1234.56; "1,234" is 1234 or 1.234."""
    sign = "-" if token.startswith("-") else ""
    body = token.lstrip("+-")
    for space in ("'", "’", "\u202f", "\u00a0"):
        body = body.replace(space, "")
    commas, dots = body.count(","), body.count(".")
    if commas and dots:
        decimal = "," if body.rfind(",") > body.rfind(".") else "."
        groups = [body.replace("." if decimal == "," else ",", "").replace(",", ".")]
    elif commas or dots:
        sep = "," if commas else "."
        head, _, tail = body.rpartition(sep)
        thousands = body.replace(sep, "")
        as_decimal = head.replace(sep, "") + "." + tail
        if (commas or dots) > 1:
            groups = [thousands]
        elif len(tail) == 3 and 1 <= len(head) <= 3:
            groups = [thousands, as_decimal]
        else:
            groups = [as_decimal]
    else:
        groups = [body]
    out = []
    for g in groups:
        try:
            value = Decimal(sign + g)
        except InvalidOperation:
            continue
        out.append(f"{value.normalize():f}" if value == value.to_integral_value() or "." in g else g)
    return list(dict.fromkeys(out))


def _numbers(text: str) -> list[str]:
    return _rewrite(text, _NUMBER, lambda m: number_readings(m.group()))


# -- matching -------------------------------------------------------------------------------------
def find(text: PageText, query: str, *, fuzzy: bool = True) -> list[Occurrence]:
    """Every non-overlapping occurrence of `query` in the page's words, best kind first then in
    reading order."""
    from rapidfuzz.distance import Levenshtein

    words = text.words
    q_exact = exact_key(query)
    q_norm = [k for k in normalize(query) if k]
    if not q_exact or not q_norm:
        return []
    allowed = len(q_norm[0]) // FUZZY_CHARS if fuzzy else 0
    longest = len(query.split()) + SPAN_SLACK
    candidates = []  # (rank, distance, length, start, end, kind)
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + longest) + 1):
            span = " ".join(w.text for w in words[i:j])
            if exact_key(span) == q_exact:
                candidates.append((0, 0, j - i, i, j))
                continue
            keys = normalize(span)
            if set(keys) & set(q_norm):
                candidates.append((1, 0, j - i, i, j))
            elif allowed and keys:
                if len(keys[0]) > len(q_norm[0]) + allowed:
                    break
                distance = Levenshtein.distance(keys[0], q_norm[0], score_cutoff=allowed)
                if distance <= allowed:
                    candidates.append((2, distance, j - i, i, j))
    taken = [False] * len(words)
    found = []
    for rank, _, _, i, j in sorted(candidates):
        if not any(taken[i:j]):
            taken[i:j] = [True] * (j - i)
            found.append(Occurrence(text.page, query, KINDS[rank], words[i:j]))
    return sorted(found, key=lambda o: (KINDS.index(o.match), words.index(o.words[0])))
