"""Settings and what is derived from it: loose values coerced and checked (naming the field), the CLI
options `@read_options` adds (flags, defaults, exclusions), and the server's request models (bounds)."""

from __future__ import annotations

from dataclasses import fields

import pytest
import typer
from typer.testing import CliRunner

from docread.cli.options import read_options, setting_flags
from docread.settings import SettingError, Settings


def test_from_mapping_coerces_form_strings_and_names_the_bad_field():
    s = Settings.from_mapping({"dpi": "150", "fast": "true", "seed": "", "pages": "auto", "text": "off"})
    assert (s.dpi, s.fast, s.seed, s.pages, str(s.text)) == (150.0, True, None, "auto", "off")
    for values, param in [({"dpi": "5"}, "dpi"), ({"view": "x"}, "view"), ({"nope": 1}, "nope")]:
        with pytest.raises(SettingError) as e:
            Settings.from_mapping(values)
        assert e.value.param == param


def command(**options):
    app = typer.Typer()
    seen = {}

    @app.command()
    @read_options(**options)
    def run(file: str, *, settings: Settings):
        seen["settings"] = settings

    @app.command()
    def other():  # a group of two: `run` is a subcommand as in docread
        pass

    return app, seen


def test_read_options_offers_every_field_with_its_flag_and_default():
    app, seen = command(auto_pages=True)
    result = CliRunner().invoke(app, ["run", "f", "--pages", "auto", "--fast", "-n", "3"])
    assert result.exit_code == 0, result.output
    assert seen["settings"] == Settings(pages="auto", fast=True, max_slices=3)
    help_text = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert all(setting_flags(f)[0] in help_text for f in fields(Settings))


def test_read_options_exclusions_defaults_and_fixed_values():
    app, seen = command(exclude=("task", "seed"), defaults={"max_new_tokens": 7}, fixed={"task": "ocr"})
    assert CliRunner().invoke(app, ["run", "f"]).exit_code == 0
    assert seen["settings"] == Settings(task="ocr", max_new_tokens=7)
    refused = CliRunner().invoke(app, ["run", "f", "--seed", "1"])
    assert refused.exit_code == 2 and "No such option" in refused.output
    auto = CliRunner().invoke(app, ["run", "f", "--pages", "auto"])
    assert auto.exit_code == 2 and "--pages" in auto.output


def test_request_models_take_bounds_and_defaults_from_settings():
    pytest.importorskip("fastapi")
    from docread.serve.protocol import ApiError, OcrForm, ReadOptions, ask_form
    from docread.settings import ONLY_OCR

    for f in fields(Settings):
        form = OcrForm if f.name in ONLY_OCR else ReadOptions  # ocr's own fields: only its form takes them
        schema = form.model_fields[f.name]
        assert schema.default == f.default and schema.description == f.metadata["help"]
    assert not set(ONLY_OCR) & set(ReadOptions.model_fields)
    assert OcrForm().settings().task == "ocr" and OcrForm().settings().max_new_tokens == 1024
    with pytest.raises(ApiError) as e:
        ask_form([("question", "q"), ("max_slices", "65")])
    assert (e.value.status, e.value.param) == (400, "max_slices")
