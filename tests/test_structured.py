"""Constrained decoding (docread.generate.grammar, llguidance): `ask --json-schema` answers JSON valid
under the schema, whatever a tiny random model would have said."""

from __future__ import annotations

import json

import pytest
from kit.cli import docread

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {
    "type": "object",
    "properties": {
        "total": {"type": "number"},
        "paid": {"type": "boolean"},
        "lines": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {"label": {"type": "string", "maxLength": 10}, "qty": {"type": "integer"}},
                "required": ["label", "qty"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["total", "paid", "lines"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("structured")
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "page.png")
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    (folder / "broken.json").write_text("{not json")
    return folder


def test_ask_json_schema_answers_valid_json_on_every_seed(files, tiny_llava, reuse_loaded_models):
    for seed in range(5):
        args = ["ask", str(files / "page.png"), "Totals?", "--json-schema", str(files / "schema.json"), "--json"]
        args += ["--model", str(tiny_llava), "--device", "cpu", "--max-new-tokens", "600"]
        args += ["--temperature", "1", "--seed", str(seed), "--quiet"]
        result = docread(*args)
        assert result.returncode == 0, result.output
        record = json.loads(result.stdout.splitlines()[0])
        jsonschema.validate(json.loads(record["answer"]), SCHEMA)


def test_ask_json_schema_refuses_a_file_that_is_not_json(files, tiny_llava):
    args = ["ask", str(files / "page.png"), "q", "--json-schema", str(files / "broken.json")]
    result = docread(*args, "--model", tiny_llava, "--device", "cpu")
    assert result.returncode == 2 and "--json-schema" in result.output and "Traceback" not in result.output
