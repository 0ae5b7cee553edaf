"""`docread batch --engine ray` on a local two-CPU Ray with the tiny checkpoint: the same records as the
local engine, resumed from a torn log, through a reader actor that dies; and a missing Ray."""

import builtins
import json
import os

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
def test_ray_resumes_a_torn_log_through_a_dying_reader_with_the_local_records(
    tiny_llava, tiny_reader, folder, tmp_path, cluster
):
    """One Ray job, all that can go wrong at once (each Ray run starts readers that import torch and load
    the model). The log is what a driver killed mid-run leaves: its first answers, then a torn line (a real
    SIGKILL of `batch` is tests/test_cli_read.py's; resuming is the engines' shared core). `--resume` on
    Ray writes only what is owed, and the first reader to take a group dies at once (as if killed) and is
    restarted. Every record is there once, and equals the local engine's: each group of pages is encoded as
    locally."""
    local_out = tmp_path / "local.jsonl"
    with record_log(str(local_out), resume=False) as sink:  # conftest's tiny_reader: load(tiny_llava, cpu, none)
        run_batch(
            tiny_reader,
            [str(folder / n) for n in ("a.pdf", "b.png", "c.pdf", "d.pdf")],
            QUESTIONS,
            sink,
            settings=Settings(max_new_tokens=3, max_slices=1),
        )
    local_lines = local_out.read_text().splitlines()
    done = [line for line in local_lines if '"status": "ok"' in line][:5]
    out = tmp_path / "ray.jsonl"
    out.write_text("\n".join(done) + '\n{"key": "torn", "file": "x')  # killed in the middle of a line
    cluster.unlink()  # armed: the first reader to take a group exits at once
    result = docread(
        "batch",
        folder,
        "-Q",
        questions_file(tmp_path),
        "-o",
        out,
        "--model",
        tiny_llava,
        *OPTIONS,
        "--engine",
        "ray",
        "--workers",
        "1",
        "--resume",
    )
    assert cluster.exists()  # a reader did die
    assert result.returncode == 1, result.output  # the corrupt file: error records, the job went on
    records = records_of(out)  # every line parses: the torn one is gone
    assert len(records) == len({r["key"] for r in records}) == (5 + 1 + 1 + 1) * 2  # each once
    local, remote = without_timing(json.loads(line) for line in local_lines), without_timing(records)
    assert local.keys() == remote.keys()
    # the same tokens; scores to float noise (a Ray actor runs torch on its own thread count: sums in another order)
    differ = {
        key: {name: (value, remote[key].get(name)) for name, value in record.items() if value != remote[key].get(name)}
        for key, record in local.items()
    }
    assert all(set(d) <= {"score"} for d in differ.values()), differ
    assert all(remote[k]["score"] == pytest.approx(local[k]["score"], rel=1e-5) for k, d in differ.items() if d)
    corrupt = [r for r in remote.values() if r["file"].endswith("c.pdf")]
    assert [r["status"] for r in corrupt] == ["error", "error"] and corrupt[0]["error"]["code"] == "corrupt"
    assert "9 answers, 2 errors" in result.stderr and result.stdout == ""  # Ray's own prints go to stderr
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


def test_a_reader_whose_model_fails_to_load_says_why_in_one_line(folder, tmp_path):
    """The reader actor loads its model when its first group comes: a model that is not there is a
    ReaderFailed with docread's own line, which the driver turns into `a reader could not start: ...`."""
    from docread.batch.raydata import ReaderFailed, _GroupReader, _reader_failure

    reader = _GroupReader(
        model=str(tmp_path / "absent"),
        adapter=None,
        device="cpu",
        quant="none",
        offline=True,
        questions=QUESTIONS,
        settings=Settings(),
        limits=None,
        digest="d",
        batch_size=1,
    )  # nothing loaded yet: a reader lost before its first group costs no load
    group = json.dumps({"file": str(folder / "b.png"), "sha256": "0" * 64, "owed": [[1, {"What?": "k1"}]]})
    with pytest.raises(ReaderFailed) as failed:
        reader({"group": [group]})
    message = str(failed.value)
    assert "absent" in message and "\n" not in message
    wrapped = RuntimeError(f"ray.exceptions.RayTaskError: {ReaderFailed.__name__}: {message}")
    assert _reader_failure(wrapped) == message  # as Ray carries it across processes: as text
