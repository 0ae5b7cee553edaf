"""`extract` under grammars (docread.extract with docread.generate.grammar): each typed field's answer is
decoded under its type's grammar, so it parses whatever a tiny random model would have said; a schema with
nested objects and arrays is generated whole and validates."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

from docread.extract import TYPE_PATTERNS, extract_document, field_specs, is_nested  # noqa: E402
from docread.generate.grammar import NUMBER_BOUND, NUMBER_STEP, bounded  # noqa: E402
from docread.reading import LocalReader, RemoteReader  # noqa: E402
from docread.settings import Settings  # noqa: E402

NESTED = {
    "type": "object",
    "properties": {
        "vendor": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12}},
            "required": ["name"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {"qty": {"type": "integer"}, "paid": {"type": "boolean"}},
                "required": ["qty", "paid"],
                "additionalProperties": False,
            },
        },
        "total": {"type": "number"},
        "due": {"type": "string", "format": "date"},
    },
    "required": ["vendor", "items", "total", "due"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("extract_grammar") / "page.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


def sampled(seed: int, tokens: int) -> Settings:
    return Settings(max_slices=0, max_new_tokens=tokens, temperature=1.0, seed=seed, text="off")


def test_typed_fields_always_parse_under_their_grammar(tiny_reader, page):
    fields = field_specs(["total:number", "count:integer", "due:date", "paid:boolean"])
    kinds = {"total": float, "count": int, "due": str, "paid": bool}
    for seed in range(4):
        record = extract_document(tiny_reader, page, fields, settings=sampled(seed, 32))
        for name, field in record["fields"].items():
            assert field["error"] is None, (seed, name, field)
            assert isinstance(field["value"], kinds[name]), (seed, name, field)
            kind = next(f.type for f in fields if f.name == name)
            assert re.fullmatch(TYPE_PATTERNS[kind], field["raw"]), (seed, name, field["raw"])


def test_without_a_grammar_the_same_model_gives_values_that_do_not_parse(tiny_reader, page):
    """The check above can fail: free answers of the random model are not numbers or dates."""
    fields = field_specs(["total:number", "due:date"])
    free = extract_document(RawOnly(tiny_reader), page, fields, settings=sampled(0, 12))
    assert any(f["error"] for f in free["fields"].values())


class RawOnly(LocalReader):
    """A local reader that ignores constraints: what extract gives without the structured extra."""

    def __init__(self, model):
        super().__init__(model)

    def ask(self, source, questions, *, settings, limits=None, events=None, stream=False, constrain=None):
        return super().ask(source, questions, settings=settings, limits=limits, events=events, stream=stream)


def test_a_nested_schema_is_generated_whole_and_validates_on_20_seeds(tiny_reader, page):
    assert is_nested(NESTED)
    for seed in range(20):
        record = extract_document(tiny_reader, page, [], schema=NESTED, settings=sampled(seed, 160))
        fields = record["fields"]
        assert set(fields) == set(NESTED["properties"])
        assert all(f["error"] is None for f in fields.values()), (seed, fields)
        whole = {name: f["value"] for name, f in fields.items()}
        jsonschema.validate(whole, NESTED)
        assert json.loads(fields["total"]["raw"]) == whole  # one answer, the whole object


def test_unbounded_numbers_are_kept_within_float_range():
    schema = bounded(NESTED)
    total = {"type": "number", "minimum": -NUMBER_BOUND, "maximum": NUMBER_BOUND, "multipleOf": NUMBER_STEP}
    assert schema["properties"]["total"] == total
    assert schema["properties"]["items"]["items"]["properties"]["qty"]["maximum"] == NUMBER_BOUND
    assert bounded({"type": "integer", "minimum": 0}) == {"type": "integer", "minimum": 0, "maximum": NUMBER_BOUND}
    assert NESTED["properties"]["total"] == {"type": "number"}  # the caller's schema is left as it was


def test_a_server_cannot_take_a_grammar(page):
    reader = RemoteReader.__new__(RemoteReader)  # no server is contacted: the refusal comes first
    with pytest.raises(Exception) as refused:
        extract_document(reader, page, [], schema=NESTED, settings=Settings())
    assert "drop --server" in str(refused.value)
