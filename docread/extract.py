"""`extract`: named, typed fields out of a document, one question each. `extract_document` asks them all
(one `ask` call): with a model loaded here and the structured extra, each typed field's answer is decoded
under its type's grammar (number, integer, date, boolean), so it parses; a schema with nested objects or
arrays is generated whole under the schema. Each best answer is parsed to its type (one that does not
parse gives `value: null` and an `error`), with its evidence, and the values are checked against the
JSON Schema when the fields came from one."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

from docread.errors import UsageError
from docread.text.units import CURRENCY_CODES, DATE_PATTERNS, date_readings, number_readings, well_formed

_NUMBER_IN_TEXT = re.compile(
    r"\(?[+-]?\d{1,3}(?: \d{3})+(?:[.,]\d+)?\)?"  # 1 234,50: spaces between thousands
    r"|\(?[+-]?\d[\d.,'’\u202f\u00a0]*\d\)?|\(?[+-]?\d\)?"
)
_CODES = "|".join(sorted(CURRENCY_CODES))
_WHOLE_NUMBER = re.compile(  # the whole answer is one number: a label, currency, sign and unit aside
    rf"^(?:[^\d:]{{1,40}}:\s*)?(?:(?i:{_CODES})\s?|[$€£¥₹]\s?)?"
    r"(?P<num>\(?[+\-−]?(?:\d{1,3}(?:[ \u202f\u00a0]\d{3})+(?:[.,]\d+)?|\d[\d.,'’\u202f\u00a0]*\d|\d)\)?)"
    rf"\s?(?:(?i:{_CODES})|[$€£¥₹]|%)?\.?$"
)
TRUE_WORDS = {"yes", "y", "true", "1", "ja", "oui", "si", "sí", "checked", "x"}
FALSE_WORDS = {"no", "n", "false", "0", "nein", "non", "unchecked", "none"}


class FieldType(StrEnum):
    string = "string"
    number = "number"
    integer = "integer"
    date = "date"  # ISO 8601 out: YYYY-MM-DD
    boolean = "boolean"


# the grammar each typed field's answer is decoded under (llguidance regular expressions, whole answer)
TYPE_PATTERNS = {
    FieldType.number: r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,6})?",
    FieldType.integer: r"-?(0|[1-9][0-9]{0,14})",
    FieldType.date: (  # real calendar days: 30-day months, February to 28, the 29th in years divisible by 4
        r"[12][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
        r"|02-(0[1-9]|1[0-9]|2[0-8]))|[12][0-9]([02468][048]|[13579][26])-02-29"
    ),
    FieldType.boolean: r"(true|false)",
}
WHOLE_QUESTION = "Fill in this JSON object from the document; its fields: {fields}."


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    question: str


def field_spec(spec: str) -> Field:
    """`NAME[:TYPE]` (string by default), asked as "What is the NAME?" (underscores as spaces)."""
    name, _, kind = spec.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"--field {spec!r}: give a name, as NAME or NAME:TYPE")
    try:
        kind = FieldType(kind.strip().lower() or "string")
    except ValueError:
        raise UsageError(f"--field {spec!r}: type {kind!r} is not one of {', '.join(FieldType)}") from None
    return Field(name, kind, f"What is the {name.replace('_', ' ')}?")


def field_specs(specs: Sequence[str]) -> list[Field]:
    """Each `--field` spec parsed; a name given twice is a UsageError (the later one would replace it)."""
    fields = [field_spec(spec) for spec in specs]
    names = [f.name for f in fields]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--field {twice[0]!r} is given twice: name each field once")
    return fields


def schema_fields(schema: dict) -> list[Field]:
    """Fields of a JSON Schema object: its properties, typed from `type` (and `format: date`), asked
    by their `description` when they have one."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        raise UsageError('--schema: the schema needs an object with "properties" (one per field)')
    fields = []
    for name, prop in props.items():
        kinds = prop.get("type", "string")
        kinds = [k for k in (kinds if isinstance(kinds, list) else [kinds]) if k != "null"] or ["string"]
        kind = "date" if prop.get("format") == "date" else str(kinds[0]).lower()
        if kind not in FieldType.__members__:
            raise UsageError(f"--schema: property {name!r} has type {kind!r}; use one of {', '.join(FieldType)}")
        question = prop.get("description") or f"What is the {name.replace('_', ' ')}?"
        fields.append(Field(name, FieldType(kind), question))
    return fields


def load_schema(path: Path) -> dict:
    try:
        schema = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--schema {path}: cannot read it as JSON ({e})") from None
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise UsageError(f"--schema {path}: not a valid JSON Schema ({e.message})") from None
    return schema


# -- typed parsing -----------------------------------------------------------------------------------
def parse_value(raw: str | None, kind: str) -> tuple[Any, str | None]:
    """`raw` as `kind`: (value, None), or (None, why it does not parse)."""
    text = (raw or "").strip()
    if not text:
        return None, "empty answer"
    kind = FieldType(str(kind).lower())
    if kind == FieldType.string:
        return text, None
    if kind in (FieldType.number, FieldType.integer):
        return _parse_number(text, integer=kind == FieldType.integer)
    if kind == FieldType.date:
        return _parse_date(text)
    word = text.casefold().strip(".!")
    if word in TRUE_WORDS or word.split()[0].strip(",.") in TRUE_WORDS:
        return True, None
    if word in FALSE_WORDS or word.split()[0].strip(",.") in FALSE_WORDS:
        return False, None
    return None, f"not a yes/no answer: {text[:60]!r}"


def _parse_number(text: str, *, integer: bool) -> tuple[Any, str | None]:
    """The answer as a number when the whole answer is one (`1,234.50`, `€ 1.234,50`, `(12)`, `Total: 99`);
    a number inside prose or with a suffix (`et3 the`, `1.5k`) is refused, not guessed."""
    whole = _WHOLE_NUMBER.match(text)
    if whole is None:
        found = [m.group() for m in _NUMBER_IN_TEXT.finditer(text)]
        if not found:
            return None, f"no number in {text[:60]!r}"
        if len(found) > 1:
            return None, f"several numbers in {text[:60]!r}: {', '.join(found[:4])}"
        return None, f"not a number: {text[:60]!r} (the answer must be the number itself, with its currency or unit)"
    token = whole["num"]
    negative = token.startswith("(") and token.endswith(")")  # accounting: (12.50) is -12.50
    body = token.strip("()").replace("−", "-").replace(" ", "")
    if token.count("(") != token.count(")") or not well_formed(body.lstrip("+-")):
        return None, f"not a number: {token!r}"
    readings = number_readings(body)
    if not readings:
        return None, f"not a number: {token!r}"
    value = float(readings[0]) * (-1 if negative else 1)  # "1,234": thousands, as invoices write it
    if integer:
        if value != int(value):
            return None, f"not an integer: {token!r}"
        return int(value), None
    return value, None


def _parse_date(text: str) -> tuple[Any, str | None]:
    """The one real calendar date in the answer, as ISO 8601 (`2024-02-30` is refused, not rolled over)."""
    low, taken, matches = text.casefold(), set(), []
    for pattern in DATE_PATTERNS:
        for m in pattern.finditer(low):
            if not taken & set(range(m.start(), m.end())):
                taken |= set(range(m.start(), m.end()))
                matches.append(m)
    if not matches:
        return None, f"no date in {text[:60]!r}"
    if any(not date_readings(m) for m in matches):
        return None, f"not a valid date: {text[:60]!r}"
    if len(matches) > 1:
        return None, f"several dates in {text[:60]!r}"
    readings = date_readings(matches[0])
    if len(readings) > 1:
        return None, f"ambiguous date {text[:40]!r}: {' or '.join(sorted(readings))}"
    return readings[0], None


# -- a document ---------------------------------------------------------------------------------------
def extract_document(
    reader,
    source,
    fields: Sequence[Field],
    *,
    schema: dict | None = None,
    settings=None,
    limits=None,
    events=None,
) -> dict:
    """`{"file", "fields": {NAME: {value, raw, page, score, evidence, error}}}` for one document, read by
    `reader` (a `docread.reading.Reader`, local or remote; a loaded DocReader is read locally). A `schema`
    with nested objects or arrays is generated whole (`fields` unused). A file that cannot be opened
    raises; a page that fails leaves its fields to the other pages."""
    from docread.reading import LocalReader, Reader
    from docread.records import FieldRecord
    from docread.settings import EXTRACT_DEFAULTS, Settings

    if not isinstance(reader, Reader):
        reader = LocalReader(reader)
    settings = settings or Settings(**EXTRACT_DEFAULTS)
    if schema is not None and is_nested(schema):
        return _extract_whole(reader, source, schema, settings, limits, events)
    questions = [" ".join(f.question.split()) for f in fields]
    constrain = _typed_grammars(reader, fields, questions, spans=settings.extractive)
    results = reader.ask(source, questions, settings=settings, limits=limits, events=events, constrain=constrain)
    by_question = {r.question: r for r in results}
    out = {}
    for f, question in zip(fields, questions):
        best = by_question[question].best
        if best is None:
            result = by_question[question]
            error = result.errors[0][1].message if result.errors else "no answer"
            out[f.name] = FieldRecord.failed(error).to_json()
            continue
        value, error = parse_value(best.answer, f.type)
        out[f.name] = FieldRecord(value, best.answer, best.page, best.score, best.evidence, error).to_json()
    file = results[0].file if results else str(source)
    if schema is not None:
        check_against(schema, out)
    return {"file": file, "fields": out, "error": None}


def failed_document(file: str, names: Sequence[str], error) -> dict:
    """extract's record of a file that could not be read (as `batch` writes one): every field null with
    the file's error message, and `error` {code, message}."""
    from docread.records import ErrorRecord, FieldRecord

    fields = {name: FieldRecord.failed(error.message).to_json() for name in names}
    return {"file": file, "fields": fields, "error": ErrorRecord.of(error).to_json()}


def is_nested(schema: dict) -> bool:
    """Whether a schema's properties hold objects or arrays (then it is generated whole)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return False
    kinds = [p.get("type") for p in props.values() if isinstance(p, dict)]
    flat = [k for kind in kinds for k in (kind if isinstance(kind, list) else [kind])]
    return any(k in ("object", "array") for k in flat)


def _typed_grammars(reader, fields: Sequence[Field], questions: Sequence[str], spans: bool = False) -> dict | None:
    """Each typed field's question -> its constraint, when a model here decodes (else None: free answers,
    parsed afterwards; a server cannot take a grammar): its type's grammar (llguidance installed), or with
    `spans` (--extractive) for number, integer and date fields a `TypedSpan`: a span of the page's numbers
    or dates as written there ("$1,234.56" gives "1,234.56"; "14 March 2026"), parsed after decoding."""
    from docread.reading import LocalReader
    from docread.text.spans import TypedSpan

    model = reader.model if isinstance(reader, LocalReader) else None
    if getattr(model, "base", None) is None:
        return None
    as_spans = (FieldType.number, FieldType.integer, FieldType.date) if spans else ()
    out: dict = {
        q: TypedSpan(f.type.value, partial(_parses, kind=f.type))
        for f, q in zip(fields, questions)
        if f.type in as_spans
    }
    typed = [(f, q) for f, q in zip(fields, questions) if f.type in TYPE_PATTERNS and f.type not in as_spans]
    if typed and importlib.util.find_spec("llguidance") is not None:
        from docread.generate.grammar import regex_grammar

        tokenizer, eos = model.base.tokenizer, model.eos_token_ids
        out |= {q: regex_grammar(tokenizer, TYPE_PATTERNS[f.type], eos) for f, q in typed}
    return out or None


def _parses(answer: str, kind: str) -> bool:
    return parse_value(answer, kind)[1] is None


def _extract_whole(reader, source, schema: dict, settings, limits, events) -> dict:
    """A nested schema's object generated in one answer under the schema's grammar; each top-level property
    becomes a field record (its value the parsed JSON, `raw` the whole answer)."""
    from docread.generate.grammar import json_grammar
    from docread.reading import LocalReader
    from docread.records import FieldRecord

    if not isinstance(reader, LocalReader):
        raise UsageError(
            "--schema with nested objects or arrays is generated under the schema by a model loaded here; "
            "drop --server (a server cannot take a grammar)"
        )
    model = reader.model
    grammar = json_grammar(model.base.tokenizer, schema, model.eos_token_ids, param="--schema")
    settings = settings.replace(extractive=False)  # the object is JSON, not a span of the page: its grammar rules
    names = ", ".join(schema["properties"])
    question = WHOLE_QUESTION.format(fields=names)
    (result,) = reader.ask(source, [question], settings=settings, limits=limits, events=events, constrain=grammar)
    best, out = result.best, {}
    if best is None:
        error = result.errors[0][1].message if result.errors else "no answer"
        return {
            "file": result.file,
            "fields": {name: FieldRecord.failed(error).to_json() for name in schema["properties"]},
            "error": None,
        }
    try:
        whole, error = json.loads(best.answer), None
    except ValueError:  # the answer ran out of --max-new-tokens before the object closed
        whole, error = {}, f"the answer was cut at --max-new-tokens {settings.max_new_tokens} before the JSON closed"
    for name in schema["properties"]:
        present = isinstance(whole, dict) and name in whole
        why = error or (None if present else "not in the answer")
        value = whole.get(name) if present else None
        out[name] = FieldRecord(value, best.answer, best.page, best.score, [], why).to_json()
    check_against(schema, out)
    return {"file": result.file, "fields": out, "error": None}


def check_against(schema: dict, fields: dict) -> None:
    """Validate the parsed values (nulls aside: they already carry their error) with jsonschema; a value
    that breaks the schema becomes null with the validator's message as its error."""
    from jsonschema import Draft202012Validator

    values = {name: f["value"] for name, f in fields.items() if f["value"] is not None}
    for error in Draft202012Validator(schema).iter_errors(values):
        name = error.path[0] if error.path else None
        if name in fields:
            fields[name]["value"] = None
            fields[name]["error"] = f"schema: {error.message}"
