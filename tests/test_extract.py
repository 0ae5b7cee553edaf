"""`extract` (issue #13): typed parsing on hand cases (currencies, locales, dates), JSON Schema fields and
validation, null + error for answers that do not parse, and the CLI on the tiny model."""

from __future__ import annotations

import json

import pymupdf
import pytest
from kit import per_page
from kit.cli import docread

import docread.document as document_module
from docread.document import PageAnswer
from docread.errors import UsageError
from docread.extract import extract_document, field_spec, parse_value, schema_fields
from docread.results import Answer
from docread.settings import Settings

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

SCHEMA = {
    "type": "object",
    "properties": {
        "total": {"type": "number", "description": "What is the total amount?", "minimum": 0},
        "due": {"type": "string", "format": "date", "description": "When is the payment due?"},
        "paid": {"type": "boolean"},
        "items": {"type": "integer", "maximum": 10},
        "vendor": {"type": "string"},
    },
}


@pytest.mark.parametrize(
    "raw, kind, value",
    [
        ("$1,234.56", "number", 1234.56),
        ("1.234,56 €", "number", 1234.56),
        ("EUR 1 234,50", "number", 1234.5),
        ("CHF 1'234.00", "number", 1234.0),
        ("(12.50)", "number", -12.5),
        ("Total: 99", "integer", 99),
        ("March 15, 2024", "date", "2024-03-15"),
        ("15.03.2024", "date", "2024-03-15"),
        ("15 mars 2024", "date", "2024-03-15"),
        ("2024-03-15", "date", "2024-03-15"),
        ("13/04/24", "date", "2024-04-13"),
        ("Yes.", "boolean", True),
        ("no", "boolean", False),
        ("  ACME GmbH ", "string", "ACME GmbH"),
    ],
)
def test_typed_parsing(raw, kind, value):
    assert parse_value(raw, kind) == (value, None)


@pytest.mark.parametrize(
    "raw, kind, why",
    [
        ("about 3 or 4", "number", "several numbers"),
        ("n/a", "number", "no number"),
        ("12.5", "integer", "not an integer"),
        ("03/04/2024", "date", "ambiguous date"),
        ("31.02.2024", "date", "not a valid date"),
        ("soon", "date", "no date"),
        ("maybe", "boolean", "not a yes/no"),
        ("", "string", "empty answer"),
    ],
)
def test_unparseable_answers_give_null_and_why(raw, kind, why):
    value, error = parse_value(raw, kind)
    assert value is None and why in error


def test_field_specs_and_schema_fields():
    assert field_spec("due_date:date").question == "What is the due date?"
    assert field_spec("vendor").type == "string"
    with pytest.raises(UsageError):
        field_spec("total:money")
    fields = {f.name: f for f in schema_fields(SCHEMA)}
    assert fields["due"].type == "date" and fields["due"].question == "When is the payment due?"
    assert fields["items"].type == "integer" and fields["paid"].question == "What is the paid?"
    with pytest.raises(UsageError):
        schema_fields({"type": "object"})


@pytest.fixture
def invoice(tmp_path):
    doc = pymupdf.open()
    page = doc.new_page(width=300, height=400)
    page.insert_text((40, 60), "Total: $1,234.56  Due 15.03.2024", fontsize=11)
    doc.save(tmp_path / "inv.pdf")
    return tmp_path / "inv.pdf"


def test_extract_document_parses_validates_and_grounds(invoice, monkeypatch):
    said = {
        "What is the total amount?": "$1,234.56",
        "When is the payment due?": "15.03.2024",
        "What is the paid?": "perhaps",
        "What is the items?": "12",
        "What is the vendor?": "ACME",
    }

    def fake_answer_page(reader, document, page, questions, settings, **_):
        for q in questions:
            yield PageAnswer(
                q,
                page.number,
                Answer(document.name, page.number, q, said[q], -0.2, "stub", 0, 0, 0, 1, 1, 1, 1, 0, None, "eos"),
            )

    monkeypatch.setattr(document_module, "answer_pages", per_page(fake_answer_page))
    record = extract_document(
        None, str(invoice), schema_fields(SCHEMA), schema=SCHEMA, settings=Settings(text_prompt="off")
    )
    fields = record["fields"]
    assert record["file"] == str(invoice)
    assert fields["total"]["value"] == 1234.56 and fields["total"]["evidence"][0]["match"] == "exact"
    assert fields["due"]["value"] == "2024-03-15" and fields["due"]["page"] == 1 and fields["due"]["error"] is None
    assert fields["paid"]["value"] is None and "yes/no" in fields["paid"]["error"]
    assert fields["items"]["value"] is None and fields["items"]["error"].startswith("schema:")  # 12 > maximum 10
    assert fields["vendor"] == {"value": "ACME", "raw": "ACME", "page": 1, "score": -0.2, "evidence": [], "error": None}


def test_extract_cli_on_the_tiny_model(tiny_llava, invoice, tmp_path):
    out = tmp_path / "fields.jsonl"
    result = docread(
        "extract",
        invoice,
        tmp_path / "missing.pdf",
        "--field",
        "total:number",
        "--field",
        "vendor",
        "-o",
        out,
        "--model",
        tiny_llava,
        "--device",
        "cpu",
        "--max-slices",
        "0",
        "--max-new-tokens",
        "2",
    )
    assert result.returncode == 1  # the missing file (and, likely, a noise answer that is no number)
    record, missing = [json.loads(line) for line in out.read_text().splitlines()]
    assert missing["file"].endswith("missing.pdf") and missing["error"]["code"]  # its error record, as batch's
    assert set(record["fields"]) == set(missing["fields"]) == {"total", "vendor"} and record["error"] is None
    for f in record["fields"].values():
        assert set(f) == {"value", "raw", "page", "score", "evidence", "error"}
        assert (f["value"] is None) == (f["error"] is not None)
    assert "missing.pdf" in result.stderr
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    both = docread("extract", invoice, "--field", "x", "--schema", schema)
    assert both.returncode == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": 12}')
    assert docread("extract", invoice, "--schema", bad).returncode == 2


@pytest.mark.parametrize(
    "raw, kind, value",
    [
        ("1,234.50", "number", 1234.5),
        ("€ 1.234,50", "number", 1234.5),
        ("(12)", "number", -12.0),
        ("EUR 99.", "NUMBER", 99.0),
        ("2024-02-29", "Date", "2024-02-29"),
    ],
)
def test_whole_numbers_real_dates_and_any_case_type(raw, kind, value):
    assert parse_value(raw, kind) == (value, None)


@pytest.mark.parametrize(
    "raw, kind, why",
    [
        ("2024-02-30", "date", "not a valid date"),
        ("2024-13-45", "date", "not a valid date"),
        ("30.02.2024 or 01.03.2024", "date", "not a valid date"),
        ("from 01.03.2024 to 02.03.2025", "date", "several dates"),
        ("et3 the", "number", "not a number"),
        ("1.5k", "number", "not a number"),
        ("page 3 of the report", "integer", "not a number"),
        ("1,2,3", "number", "not a number"),
    ],
)
def test_no_value_is_guessed(raw, kind, why):
    value, error = parse_value(raw, kind)
    assert value is None and why in error


def test_field_types_any_case_and_duplicate_names_refused():
    from docread.extract import field_specs

    assert field_spec("total:Number").type == "number"
    assert [f.type for f in field_specs(["due:DATE", "vendor"])] == ["date", "string"]
    with pytest.raises(UsageError, match="'total' is given twice"):
        field_specs(["total:number", "vendor", "total:integer"])
    fields = schema_fields({"type": "object", "properties": {"n": {"type": "Integer"}}})
    assert fields[0].type == "integer"
