"""What a text says, unit by unit, for the `normalized` and `fuzzy` matches (docs/method.md#matching):
each letter (casefolded, accents dropped), each number (its value: formats differ, digits never) and
each date (ISO 8601) is one unit; spaces, punctuation, currency signs and codes are no units."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from itertools import product

MAX_VARIANTS = 16  # readings of one text kept (each ambiguous number or date doubles them)
CURRENCY_CODES = {
    *"usd eur gbp chf jpy cny inr cad aud sek nok dkk pln czk rub brl mxn krw zar huf try".split(),
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
_DATE_DMY_WORDS = re.compile(rf"(?<![^\W\d_])(\d{{1,2}})(?:st|nd|rd|th)?\.?[\s-]*({_MONTH})\.?,?[\s-]*(\d{{4}})(?!\d)")
_DATE_MDY_WORDS = re.compile(rf"(?<![^\W\d_])({_MONTH})\.?[\s-]*(\d{{1,2}})(?:st|nd|rd|th)?,?[\s-]*(\d{{4}})(?!\d)")
_NUMBER = re.compile(r"\d[\d.,'’\u202f\u00a0]*\d|\d")
_GROUPING = ("'", "’", "\u202f", "\u00a0")


@dataclass(frozen=True)
class Unit:
    keys: frozenset[str]  # a letter; "N<value>" readings of a number; "D<iso>" readings of a date
    start: int  # where it is written in the text: text[start:end]
    end: int
    letter: bool


# -- numbers and dates ------------------------------------------------------------------------------
def number_readings(token: str) -> list[str]:
    """The plain decimal(s) a written number can mean: "1,234.56", "1.234,56", "1 234,56" and
    "1234.56" are all 1234.56; "1,234" is 1234 or 1.234."""
    sign = "-" if token.startswith("-") else ""
    body = token.lstrip("+-")
    for space in _GROUPING:
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


def well_formed(token: str) -> bool:
    """Whether a run of digits and separators is one written number: thousands groups of three digits
    (after a first group of one to three), at most one decimal separator, last."""
    body = token
    for space in _GROUPING:
        body = body.replace(space, ",")
    parts = re.split(r"[.,]", body)
    seps = re.findall(r"[.,]", body)
    if not seps:
        return True
    decimal = len(seps) > 1 and seps[-1] != seps[-2] or len(seps) == 1
    grouped = parts[1:-1] if decimal else parts[1:]
    if len(set(seps[:-1] if decimal else seps)) > 1:
        return False
    if grouped and (not 1 <= len(parts[0]) <= 3 or any(len(p) != 3 for p in grouped)):
        return False
    return not (decimal and len(seps) > 1 and seps[-1] in seps[:-1])


def _iso(y: int, m: int, d: int) -> str | None:
    try:
        return date(y, m, d).isoformat()
    except ValueError:
        return None


def _year(y: str) -> int:
    return int(y) + (2000 if int(y) < 70 else 1900) if len(y) == 2 else int(y)


def date_readings(m: re.Match) -> list[str]:
    """The real calendar dates (ISO) that a match of one of the date patterns can mean."""
    if m.re is _DATE_NUMERIC:
        a, _, b, c = m.groups()
        if len(a) == 4:
            return [d for d in [_iso(int(a), int(b), int(c))] if d] if len(c) <= 2 else []
        if len(c) == 3 or len(a) == 3:
            return []
        y = _year(c)
        return list(dict.fromkeys(d for d in (_iso(y, int(b), int(a)), _iso(y, int(a), int(b))) if d))
    if m.re is _DATE_DMY_WORDS:
        return [d for d in [_iso(int(m[3]), MONTHS[m[2]], int(m[1]))] if d]
    return [d for d in [_iso(int(m[3]), MONTHS[m[1]], int(m[2]))] if d]


DATE_PATTERNS = (_DATE_NUMERIC, _DATE_DMY_WORDS, _DATE_MDY_WORDS)


def typed_spans(text: str, kind: str) -> list[str]:
    """The spans of `text` written as a date (`kind` "date") or a number (else: sign, digits and their
    separators), as they stand, each once: what an extractive typed field may answer."""
    lowered = text.lower()
    source = lowered if len(lowered) == len(text) else text  # month names match in lower case
    if kind == "date":
        found = [text[m.start() : m.end()] for p in DATE_PATTERNS for m in p.finditer(source)]
    else:
        found = [m.group(0) for m in _SIGNED_NUMBER.finditer(text)]
    return list(dict.fromkeys(found))


_SIGNED_NUMBER = re.compile(r"(?<![\w-])-?(?:" + _NUMBER.pattern + r")(?![\w-])")  # not inside INV-2026-0412


def _dates(text: str) -> list[str]:
    """`text` with each date rewritten as ISO 8601, one variant per reading of an ambiguous date."""
    variants = [text]
    for pattern in DATE_PATTERNS:
        variants = [v for t in variants for v in _rewrite(t, pattern, date_readings)]
    return variants


def _rewrite(text: str, pattern: re.Pattern, readings) -> list[str]:
    parts, choices, end = [], [], 0
    for m in pattern.finditer(text):
        parts.append(text[end : m.start()])
        choices.append(readings(m) or [m.group()])
        end = m.end()
    if not choices:
        return [text]
    out = []
    for combo in product(*choices):
        out.append("".join(p + c for p, c in zip(parts, combo)) + text[end:])
        if len(out) >= MAX_VARIANTS:
            break
    return out


# -- units ---------------------------------------------------------------------------------------------
def fold(ch: str) -> str:
    """A letter as the normalized match compares it: compatibility form, accents dropped, casefolded."""
    return "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)).casefold()


def _lower(text: str) -> str:
    """Lowercase, position for position (a character whose lowercase is longer is kept)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def units(text: str) -> list[Unit]:
    """The units of `text` in order (see the module doc)."""
    low = _lower(text)
    taken = [False] * len(text)
    found: list[Unit] = []
    for pattern in DATE_PATTERNS:
        for m in pattern.finditer(low):
            readings = date_readings(m)
            if readings and not any(taken[m.start() : m.end()]):
                found.append(Unit(frozenset("D" + r for r in readings), m.start(), m.end(), False))
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    for m in _NUMBER.finditer(text):
        if any(taken[m.start() : m.end()]):
            continue
        found += _number_units(text, m)
    for m in re.finditer(r"[^\W\d_]+", text):
        if m.group().casefold() in CURRENCY_CODES and len(m.group()) == 3 and m.group().isascii():
            continue
        for i in range(m.start(), m.end()):
            if not taken[i] and not unicodedata.combining(text[i]):
                found += [Unit(frozenset(c), i, i + 1, True) for c in fold(text[i]) if c.strip()]
    return sorted(found, key=lambda u: u.start)


def _number_units(text: str, m: re.Match) -> list[Unit]:
    token, start = m.group(), m.start()
    if start and text[start - 1] in "-−" and (start < 2 or not text[start - 2].isalnum()):
        token, start = "-" + token, start - 1  # a minus sign, not a hyphen inside an identifier
    if not well_formed(token.lstrip("-")):
        runs = re.finditer(r"\d+", m.group())
        return [Unit(frozenset({"N" + r.group()}), m.start() + r.start(), m.start() + r.end(), False) for r in runs]
    if token.lstrip("-").isdigit():  # a bare integer is kept as written: leading zeros are digits too
        return [Unit(frozenset({"N" + token}), start, m.end(), False)]
    keys = {"N" + r for r in number_readings(token)}
    return [Unit(frozenset(keys), start, m.end(), False)]
