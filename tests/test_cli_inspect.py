"""`docread inspect` and the CLI's start: JSON Lines, error records, exit
codes, previews, and no torch at start-up."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pymupdf
import pytest
from kit import cli
from PIL import Image


def docread(*args):
    """In-process (kit.cli: the same entry point as `python -m docread`); the tests below that need a real
    process say why."""
    return cli.docread(*args, env={"COLUMNS": "200"})


def letter_pdf(path, pages=1):
    doc = pymupdf.open()
    for i in range(pages):
        doc.new_page(width=612, height=792).insert_text((72, 72), f"page {i + 1}")
    doc.save(path)
    return path


@pytest.mark.system
def test_help_version_and_inspect_never_import_torch(tmp_path):
    pdf = letter_pdf(tmp_path / "letter.pdf")
    # a fresh interpreter (what a start imports is only visible in a process of its own): each command in turn
    # (once torch is in, every later line says so: the first True names the culprit), then `python -m docread
    # --version` as runpy runs it for `-m`
    commands = (["--help"], ["inspect", "--help"], ["inspect", str(pdf), "--json"], ["bench", "--help"])
    code = (
        "import runpy, sys\nfrom docread.cli import app\n"
        f"for args in {commands!r}:\n"
        "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
        "    print('IMPORTED', args, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
        "import importlib.util\n"  # PyMuPDF without its layout analyser (ONNX), which stays importable
        "print('LAYOUT', 'pymupdf' in sys.modules, 'pymupdf.layout' in sys.modules)\n"
        "print('FINDS', importlib.util.find_spec('pymupdf.layout') is not None)\n"
        "sys.argv = ['docread', '--version']\n"
        "runpy.run_module('docread', run_name='__main__', alter_sys=True)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    imported = [line.rsplit(" ", 2)[1:] for line in run.stdout.splitlines() if line.startswith("IMPORTED ")]
    assert len(imported) == len(commands) and all(i == ["False", "False"] for i in imported), run.stdout
    assert run.returncode == 0 and run.stdout.splitlines()[-1].startswith("docread "), run.stderr
    assert "LAYOUT True False" in run.stdout.splitlines(), run.stdout  # inspect read the PDF; no layout model
    installed = importlib.util.find_spec("pymupdf.layout") is not None  # pymupdf-layout is an optional package
    assert f"FINDS {installed}" in run.stdout.splitlines(), run.stdout


def test_inspect_json_for_a_letter_page_and_an_image(tmp_path):
    pdf = letter_pdf(tmp_path / "letter.pdf", pages=2)
    png = tmp_path / "wide.png"
    Image.new("RGB", (2000, 500), "white").save(png)
    run = docread("inspect", pdf, png, "--json", "--pages", "1")
    assert run.returncode == 0, run.stderr
    first, second = map(json.loads, run.stdout.splitlines())
    assert {"file", "page", "width", "height", "rows", "cols", "tiles", "visual_tokens"} <= first.keys()
    assert (first["page"], first["rows"], first["cols"], first["tiles"]) == (1, 4, 3, 12)
    assert (first["width"], first["height"]) == (1008, 1304) and first["visual_tokens"] == 576 + 12 * 144
    assert first["dpi"] == 118.6
    assert (second["rows"], second["cols"], second["tiles"], second["dpi"]) == (
        2,
        6,
        12,
        None,
    )  # ceil(500/336), ceil(2000/336)


def test_inspect_table_and_max_slices_zero(tmp_path):
    pdf = letter_pdf(tmp_path / "letter.pdf")
    run = docread("inspect", pdf)
    assert run.returncode == 0 and "4x3" in run.stdout and "1008x1304" in run.stdout
    run = docread("inspect", pdf, "--max-slices", 0, "--json")
    record = json.loads(run.stdout)
    assert (record["tiles"], record["visual_tokens"]) == (0, 576)


def test_bad_files_become_error_records_and_the_run_goes_on(tmp_path):
    good = letter_pdf(tmp_path / "good.pdf")
    bad = tmp_path / "bad.pdf"
    bad.write_text("<html>not a pdf</html>")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    run = docread("inspect", bad, good, empty, "--json")
    assert run.returncode == 1
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(bad), str(good), str(empty)]
    assert records[0]["error"]["code"] == "unsupported" and records[0]["page"] is None
    assert records[1]["tiles"] == 12
    assert records[2]["error"]["code"] == "empty"
    assert "Traceback" not in run.stderr

    table = docread("inspect", bad, good)
    assert table.returncode == 1 and "bad.pdf" in table.stderr and "4x3" in table.stdout
    assert len([line for line in table.stderr.splitlines() if line.startswith("error")]) == 1


def test_usage_errors_exit_2(tmp_path):
    run = docread("inspect", letter_pdf(tmp_path / "a.pdf"), "--max-slices", -1)
    assert run.returncode == 2
    run = docread("inspect", tmp_path / "a.pdf", "--pages", "x")
    assert run.returncode in (1, 2) and "--pages" in run.stdout + run.stderr


def test_preview_file_and_folder(tmp_path):
    pdf = letter_pdf(tmp_path / "letter.pdf", pages=2)
    run = docread("inspect", pdf, "--pages", "2", "--preview", tmp_path / "grid.png")
    assert run.returncode == 0, run.stderr
    picture = Image.open(tmp_path / "grid.png")
    assert picture.width == 3 * 336 + 24 + 336 and picture.height == 4 * 336
    assert picture.getpixel((336, 200))[0] > 180 and picture.getpixel((336, 200))[1] < 80  # a red tile border
    run = docread("inspect", pdf, "--preview", tmp_path / "previews", "--json")
    assert run.returncode == 0
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["letter-p1.png", "letter-p2.png"]
    assert json.loads(run.stdout.splitlines()[0])["preview"].endswith("letter-p1.png")


@pytest.mark.system
def test_stdin_and_folder(tmp_path):
    png = tmp_path / "docs" / "scan.png"
    png.parent.mkdir()
    Image.new("RGB", (672, 672), "white").save(png)
    letter_pdf(tmp_path / "docs" / "sub.pdf")
    run = docread("inspect", tmp_path / "docs", "--json")
    files = [json.loads(line)["file"] for line in run.stdout.splitlines()]
    assert files == [str(png), str(tmp_path / "docs" / "sub.pdf")]
    assert json.loads(run.stdout.splitlines()[0])["tiles"] == 4  # 2S x 2S: exactly 2x2
    data = png.read_bytes()
    # a real process: the image's bytes reach `inspect -` through an actual pipe on stdin
    run = subprocess.run(
        [sys.executable, "-m", "docread", "inspect", "-", "--json"], input=data, capture_output=True, timeout=60
    )
    assert run.returncode == 0 and json.loads(run.stdout)["file"] == "-"


@pytest.mark.system
def test_an_installed_wheel_finds_its_presets(tmp_path):
    """Built and unpacked as pip installs it (no source checkout beside it), docread still knows its
    presets: models/*.toml ship as docread/_presets."""
    import zipfile

    # real processes: pip builds the wheel, and a fresh interpreter imports only the unpacked wheel

    root = Path(__file__).resolve().parent.parent
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("docread-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = "from docread.model.presets import list_presets; print(sorted(p.name for p in list_presets()))"
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['llava-1.5-7b', 'llava-1.6-vicuna-7b']"
