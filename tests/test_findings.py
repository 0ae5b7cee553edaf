"""A new user's findings (issue #23): --highlight's path checked first, folder and format; context
overflow advice naming its cause; a closed stdout ending batch cleanly; third-party noise kept off
stderr; --help and usage errors; locate's empty texts; train --resume with a raised --max-steps."""

from __future__ import annotations

import pymupdf
import pytest
from kit.cli import docread

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

QUESTION = "What is the total?"
FAST = ("--device", "cpu", "--max-slices", "0", "--max-new-tokens", "2")


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("findings") / "two.pdf"
    doc = pymupdf.open()
    for text in ("Total: 12.50 EUR", "Signed by Ada"):
        doc.new_page(width=200, height=200).insert_text((20, 60), text, fontsize=14)
    doc.save(path)
    return path


# -- --highlight -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "named"),
    [("missing/dir/x.png", "does not exist"), ("out.gif", ".png, .jpg"), ("out", ".png, .jpg")],
)
def test_highlight_path_is_checked_before_the_model_loads(pdf, tmp_path, where, named):
    target = tmp_path / where
    run = docread("ask", pdf, QUESTION, "--model", tmp_path / "no-such-model", "--highlight", target)
    assert run.returncode == 2, run.output
    (line,) = run.stderr.strip().splitlines()
    assert str(target) in line and named in line and "model" not in line  # the model was never looked for


def test_highlight_suffix_picks_the_format_and_a_folder_gets_each_page(pdf, tiny_llava, tmp_path):
    jpg = tmp_path / "out.jpg"
    run = docread("ask", pdf, QUESTION, "--model", tiny_llava, *FAST, "--pages", "1-2", "--highlight", jpg)
    assert run.returncode == 0, run.output
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name
    folder = tmp_path / "pages"
    run = docread("ask", pdf, QUESTION, "--model", tiny_llava, *FAST, "--pages", "1-2", "--highlight", f"{folder}/")
    assert run.returncode == 0, run.output
    assert sorted(p.name for p in folder.iterdir()) == ["page-1.png", "page-2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in folder.iterdir())
    again = docread("ask", pdf, QUESTION, "--model", tiny_llava, *FAST, "--pages", "2", "--highlight", folder)
    assert again.returncode == 0 and "page-2.png" in again.stderr  # an existing folder, named without /
