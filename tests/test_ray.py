"""`docread batch --engine ray` on a local two-CPU Ray with the tiny checkpoint: the same records as the
local engine, a driver killed and resumed, a reader actor that dies, and a missing Ray."""

import builtins
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pymupdf
import pytest
from kit.cli import docread
from PIL import Image

from docread.batch.core import record_log, run_batch
from docread.batch.raydata import FAIL_ONCE_ENV, run_batch_ray
from docread.settings import Settings

# one local Ray cluster: one worker; Ray is imported when a test runs (conftest's `needs`), not at collection
pytestmark = [pytest.mark.system, pytest.mark.xdist_group("ray"), pytest.mark.needs("ray", "ray.data")]
HEAVY = pytest.mark.weight(60)  # tens of seconds each, one after another: the module goes to a worker first

QUESTIONS = ["What is the total?", "Who signed it?"]
OPTIONS = ["--max-new-tokens", "3", "--max-slices", "1"]


def make_pdf(path, texts):
    doc = pymupdf.open()
    for text in texts:
        doc.new_page(width=300, height=300).insert_text((30, 60), text, fontsize=18)
    doc.save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two small PDFs (6 pages: two vision groups), an image and a corrupt file."""
    root = tmp_path_factory.mktemp("docs")
    make_pdf(root / "a.pdf", [f"line {i}: {i * 7}" for i in range(5)])
    make_pdf(root / "d.pdf", ["total: 12.50"])
    Image.new("RGB", (300, 200), (250, 250, 250)).save(root / "b.png")
    (root / "c.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 50)
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray for the module (the in-process runs and the subprocess driver join it); its workers
    inherit FAIL_ONCE_ENV, disarmed (the marker exists) until a test removes the marker."""
    import ray

    marker = tmp_path_factory.mktemp("ray") / "died"
    marker.touch()
    os.environ[FAIL_ONCE_ENV] = str(marker)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield marker
    ray.shutdown()
    del os.environ[FAIL_ONCE_ENV]


def questions_file(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("\n".join(QUESTIONS) + "\n")
    return path


def records_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(records):
    return {r["key"]: {k: v for k, v in r.items() if k != "timing_ms"} for r in records}


@HEAVY
def test_ray_records_equal_local_through_a_dying_reader_and_a_killed_driver(
    tiny_llava, tiny_reader, folder, tmp_path, cluster
):
    """One Ray job, all that can go wrong at once (each Ray run starts readers that import torch and load
    the model: one job is cheaper than three, one reader cheaper than two). A real driver process (joined to
    the module's Ray) is SIGKILLed once its first answer is written, a torn line is added, and `--resume`
    finishes on Ray; the first reader to take a group dies at once (as if killed) and is restarted.
    Every answer is written once, and equals the local engine's: each group of pages is encoded as locally."""
    import ray

    options = ["--max-new-tokens", "16", "--max-slices", "2"]
    local_out = tmp_path / "local.jsonl"
    with record_log(str(local_out), resume=False) as sink:  # conftest's tiny_reader: load(tiny_llava, cpu, none)
        run_batch(
            tiny_reader,
            [str(folder / n) for n in ("a.pdf", "b.png", "c.pdf", "d.pdf")],
            QUESTIONS,
            sink,
            settings=Settings(max_new_tokens=16, max_slices=2),
        )
    out = tmp_path / "ray.jsonl"
    args = [
        "batch",
        str(folder),
        "-Q",
        str(questions_file(tmp_path)),
        "-o",
        str(out),
        "--model",
        str(tiny_llava),
        *options,
        "--engine",
        "ray",
        "--workers",
        "1",
    ]
    cluster.unlink()  # armed: the first reader to take a group exits at once
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "docread",
            *args,
            "--ray-address",
            ray.get_runtime_context().gcs_address,
        ],
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300  # a safety bound: the wait ends when an answer is there (or the run)
    while time.time() < deadline and proc.poll() is None and '"status": "ok"' not in _text(out):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the driver alone, as a crash would
    proc.wait()
    with contextlib.suppress(ProcessLookupError):  # then anything else in its group (Ray ends its readers)
        os.killpg(proc.pid, signal.SIGKILL)
    answered = _text(out).count('"status": "ok"')
    with open(out, "ab") as f:  # as if killed in the middle of writing a line
        f.write(b'{"key": "torn", "file": "x')
    assert 1 <= answered < 14, answered  # killed in the middle of the job

    result = docread(*args, "--resume")
    assert cluster.exists()  # a reader did die (in the killed run or this one)
    assert result.returncode == 1, result.output  # the corrupt file: error records, the job went on
    records = records_of(out)  # every line parses: no torn line
    answers = [r for r in records if r["status"] == "ok"]
    assert len(answers) == len({r["key"] for r in answers}) == (5 + 1 + 1) * 2  # each answer once
    local = without_timing(records_of(local_out))
    remote = without_timing(records)  # the last record of a key: a file's errors are retried on resume
    assert len(local) == (5 + 1 + 1 + 1) * 2 and local.keys() == remote.keys()
    # the same tokens; scores to float noise (a Ray actor runs torch on its own thread count: sums in another order)
    differ = {
        key: {name: (value, remote[key].get(name)) for name, value in record.items() if value != remote[key].get(name)}
        for key, record in local.items()
    }
    assert all(set(d) <= {"score"} for d in differ.values()), differ
    assert all(remote[k]["score"] == pytest.approx(local[k]["score"], rel=1e-5) for k, d in differ.items() if d)
    corrupt = [r for r in remote.values() if r["file"].endswith("c.pdf")]
    assert [r["status"] for r in corrupt] == ["error", "error"] and corrupt[0]["error"]["code"] == "corrupt"
    assert f"{14 - answered} answers, 2 errors" in result.stderr and result.stdout == ""  # Ray's prints: stderr
    assert "\x1b[" not in result.stderr and "Warning" not in result.stderr  # off a terminal: no colour, no warnings


def _text(path) -> str:
    return path.read_text() if path.exists() else ""


def test_missing_ray_is_one_clear_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    Image.new("RGB", (50, 50)).save(tmp_path / "p.png")
    result = docread(
        "batch", tmp_path / "p.png", "-Q", questions_file(tmp_path), "-o", tmp_path / "out.jsonl", "--engine", "ray"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --engine ray needs Ray Data: pip install 'docread[ray]' (or 'ray[data]>=2.9')"
    ]


def test_ray_options_need_the_ray_engine(tmp_path):
    result = docread("batch", tmp_path, "-Q", questions_file(tmp_path), "-o", tmp_path / "out.jsonl", "--workers", "2")
    assert result.returncode == 2 and "need --engine ray" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_more_readers_than_the_cluster_holds_fail_at_once(tiny_llava, folder, tmp_path, cluster):
    from docread.errors import UsageError

    with record_log(str(tmp_path / "out.jsonl"), resume=False) as sink, pytest.raises(UsageError, match="has 0"):
        run_batch_ray(
            [str(folder / "b.png")],
            QUESTIONS,
            sink,
            settings=Settings(),
            model=str(tiny_llava),
            workers=2,
            gpus_per_worker=1,
        )


def test_a_group_whose_file_changed_or_vanished_is_error_records(folder, tmp_path):
    """In a reader, before any model call: a file edited since the driver hashed it, or gone."""
    from docread.batch.raydata import answer_owed

    owed = [[1, {"What?": "k1", "Who?": "k2"}], [2, {"Who?": "k3"}]]
    changed = answer_owed(
        None,
        {"file": str(folder / "a.pdf"), "sha256": "0" * 64, "owed": owed, "digest": "d"},
        ["What?", "Who?"],
        Settings(),
    )
    gone = answer_owed(
        None,
        {"file": str(tmp_path / "gone.pdf"), "sha256": "0" * 64, "owed": owed, "digest": "d"},
        ["What?"],
        Settings(),
    )
    assert [(r["key"], r["page"], r["status"], r["error"]["code"]) for r in changed] == [
        ("k1", 1, "error", "changed"),
        ("k2", 1, "error", "changed"),
        ("k3", 2, "error", "changed"),
    ]
    assert {r["error"]["code"] for r in gone} == {"not_found"} and len(gone) == 3
    assert {r["settings"] for r in changed + gone} == {"d"}
