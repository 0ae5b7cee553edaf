"""Seeded fuzzing at intake: truncated, bit-flipped and spliced PDFs and images from several
producers each end as records (pages or errors with a known code), never as a traceback, each in
bounded time; through `inspect_paths`, rendering, and `run_batch` with a tiny model."""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit import fuzz

from docread.intake import Limits
from docread.model.presets import resolve_preset

N_FILES = 520  # mutated files through inspect and render
LIMITS = Limits(max_pixels=4_000_000, timeout_s=10)  # a flipped header may declare a huge page: keep decodes cheap
PER_FILE_S = 5.0  # generous on a shared 2-core machine; a typical file takes ~5 ms
MAGICS = [b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"GIF89a"]


@pytest.fixture(scope="module")
def seeds():
    return fuzz.build_seeds()


@pytest.fixture(scope="module")
def corpus(seeds, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    paths = []
    for name, data in fuzz.mutations(seeds, N_FILES, seed=10):
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return folder, paths


def assert_records(records: list[dict], file: str) -> None:
    assert records, f"{file}: no record"
    for record in records:
        if "error" in record:
            assert record["error"]["code"] in fuzz.KNOWN_CODES, (file, record)
            assert "\n" not in record["error"]["message"]
        else:
            assert record["page"] >= 1 and record["tiles"] >= 1, (file, record)


def test_seeds_are_valid_files(seeds, tmp_path):
    assert {name.rsplit(".", 1)[1] for name in seeds} >= {"pdf", "png", "jpg", "tif", "gif", "webp", "bmp"}
    for name, data in seeds.items():
        (tmp_path / name).write_bytes(data)
        assert set(fuzz.check_file(str(tmp_path / name), LIMITS)) == {"ok"}, name


def test_every_mutated_file_gets_records_in_bounded_time(corpus):
    preset = resolve_preset(None)
    outcomes = set()
    for path in corpus[1]:
        start = time.perf_counter()
        assert_records(list(fuzz.inspect_one(str(path), preset, LIMITS)), str(path))
        rendered = fuzz.check_file(str(path), LIMITS)  # and every page rendered, small
        assert rendered and set(rendered) <= fuzz.KNOWN_CODES | {"ok"}, (path, rendered)
        assert time.perf_counter() - start < PER_FILE_S, path
        outcomes.update(rendered)
    assert "ok" in outcomes and len(outcomes) >= 4  # the mutations reach both good and several bad ends


def test_a_folder_of_mutated_files(corpus):
    from docread.inspection import inspect_paths

    folder, paths = corpus
    records = list(inspect_paths([str(folder)], preset=resolve_preset(None), dpi=20, limits=LIMITS))
    assert {r["file"] for r in records} == {str(p) for p in paths}
    for record in records:
        assert_records([record], record["file"])


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=600))
def test_any_bytes_behind_a_magic_number_open_or_fail_cleanly(tmp_path, magic, body):
    path = tmp_path / "input.bin"
    path.write_bytes(magic + body)
    outcomes = fuzz.check_file(str(path), LIMITS)  # a DocreadError is fine; anything else escapes
    assert outcomes and set(outcomes) <= fuzz.KNOWN_CODES | {"ok"}


@pytest.mark.slow
def test_batch_gives_every_file_records(tiny_reader, seeds, tmp_path):
    from docread.batch.core import Settings, record_log, run_batch

    files = []
    for name, data in list(fuzz.mutations(seeds, 16, seed=3)) + list(seeds.items())[:3]:
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)))
    files.append(str(tmp_path / "broken.pdf"))
    reader = tiny_reader  # conftest: docread.load(tiny_llava, device="cpu", quant="none"), once a session
    out = tmp_path / "out.jsonl"
    sink = record_log(str(out), resume=False)
    failed = run_batch(
        reader, files, ["What?"], sink, settings=Settings(max_new_tokens=2, max_slices=1, dpi=20), limits=LIMITS
    )
    sink.close()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["file"] for r in records} == set(files)
    assert failed == sum(r["status"] == "error" for r in records) >= 1
    for record in records:
        assert record["status"] == "ok" or record["error"]["code"] in fuzz.KNOWN_CODES, record
