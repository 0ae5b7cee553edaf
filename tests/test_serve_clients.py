"""`ocr --server` and `batch --server` against the app in-process (tests/test_serve.py's loopback
uvicorn thread): the same records, output and exit codes as the local commands, minus wall-clock timing."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from kit.cli import docread  # noqa: E402
from kit.serving import KEY, http, image_bytes, serving, stable  # noqa: E402

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")  # conftest: the CLI loads each (model, options) once

TOKENS = "4"


@pytest.fixture(scope="module")
def url(tiny_reader):
    with serving(tiny_reader, api_key=KEY) as base:
        yield base


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import pymupdf

    folder = tmp_path_factory.mktemp("clients")
    pdf = pymupdf.open()
    for text in ("Invoice total: 42 EUR", "Signed by Ada Lovelace"):
        pdf.new_page(width=300, height=200).insert_text((20, 50), text, fontsize=14)
    pdf.save(folder / "two.pdf")
    (folder / "square.png").write_bytes(image_bytes(3))
    (folder / "bad.png").write_bytes(b"not an image at all")
    return folder


def run(*args: str):
    return docread(*args)


def local(tiny_llava) -> list[str]:
    return ["--model", str(tiny_llava), "--device", "cpu"]


def remote(url: str) -> list[str]:
    return ["--server", url, "--api-key", KEY]


def lines(text: str) -> list[dict]:
    return [stable(json.loads(line)) for line in text.splitlines() if line.strip()]


# -- ocr --server ------------------------------------------------------------------------------------
def test_ocr_server_json_equals_local(url, tiny_llava, files, reuse_loaded_models):
    args = ["ocr", str(files / "two.pdf"), "--json", "--max-new-tokens", TOKENS, "--max-slices", "0"]
    here, there = run(*args, *local(tiny_llava)), run(*args, *remote(url))
    assert (here.returncode, there.returncode) == (0, 0), there.output
    assert lines(there.stdout) == lines(here.stdout) and len(lines(here.stdout)) == 2


def test_ocr_server_prints_what_local_prints(url, tiny_llava, files, reuse_loaded_models):
    args = ["ocr", str(files / "square.png"), "--max-new-tokens", TOKENS, "--quiet"]
    here, there = run(*args, *local(tiny_llava)), run(*args, *remote(url))
    assert (here.returncode, there.returncode) == (0, 0), there.output
    assert there.stdout == here.stdout and here.stdout.strip()


def test_ocr_server_bad_file_and_bad_key(url, tiny_llava, files, reuse_loaded_models):
    bad = str(files / "bad.png")
    here, there = run("ocr", bad, *local(tiny_llava)), run("ocr", bad, *remote(url))
    assert here.returncode == there.returncode == 1
    assert there.stderr.startswith("error:") and "not a PDF or an image" in there.stderr
    wrong = run("ocr", bad, "--server", url, "--api-key", "wrong")
    assert wrong.returncode == 1 and "401" in wrong.stderr


# -- batch --server ----------------------------------------------------------------------------------
def test_batch_server_records_equal_local_and_resume(url, tiny_llava, files, tmp_path, reuse_loaded_models):
    questions = tmp_path / "q.txt"
    questions.write_text("What is the total?\nWho signed it?\n")
    paths = [str(files / name) for name in ("two.pdf", "square.png", "bad.png")]
    common = ["-Q", str(questions), "--max-new-tokens", TOKENS, "--max-slices", "0", "--quiet"]
    here = run("batch", *paths, *common, "-o", str(tmp_path / "local.jsonl"), *local(tiny_llava))
    there = run("batch", *paths, *common, "-o", str(tmp_path / "remote.jsonl"), *remote(url))
    assert here.returncode == there.returncode == 1, there.output  # bad.png: error records, the run goes on
    expected = lines((tmp_path / "local.jsonl").read_text())
    got = lines((tmp_path / "remote.jsonl").read_text())
    assert len(expected) == 2 * 2 + 2 + 2
    # the same tokens; scores to float noise (here pairs are batched across files, there page by page)
    for record in got + expected:
        record["score"] = None if record["score"] is None else round(record["score"], 4)
    assert sorted(got, key=lambda r: r["key"]) == sorted(expected, key=lambda r: r["key"])
    assert {r["status"] for r in got} == {"ok", "error"}
    # resume: nothing owed but the failed file's records, retried
    again = run("batch", *paths, *common, "-o", str(tmp_path / "remote.jsonl"), "--resume", *remote(url))
    assert again.returncode == 1
    resumed = lines((tmp_path / "remote.jsonl").read_text())
    assert {r["key"] for r in resumed} == {r["key"] for r in got}
    assert sum(r["status"] == "ok" for r in resumed) == sum(r["status"] == "ok" for r in got)


def test_batch_server_and_ray_refused(url, files, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("What?\n")
    args = ["batch", str(files / "square.png"), "-Q", str(questions), "-o", "-", "--engine", "ray", *remote(url)]
    result = run(*args)
    assert result.returncode == 2 and "--server and --engine ray" in result.stderr


def test_ocr_endpoint_lines_and_bad_fields(url, files):
    headers = {"Authorization": f"Bearer {KEY}"}
    upload = {"file": ("square.png", (files / "square.png").read_bytes())}
    ok = http().post(url + "/v1/documents/ocr", files=upload, data={"max_new_tokens": "2"}, headers=headers, timeout=60)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/x-ndjson")
    (record,) = [json.loads(line) for line in ok.text.splitlines()]  # no events unless asked
    assert record["status"] == "ok" and record["page"] == 1 and record["file"] == "square.png"
    bad = http().post(url + "/v1/documents/ocr", files=upload, data={"question": "x"}, headers=headers, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_value"
    none = http().post(url + "/v1/documents/ocr", data={"pages": "1"}, headers=headers, timeout=60)
    assert none.status_code == 400 and none.json()["error"]["code"] == "no_file"
