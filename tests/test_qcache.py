"""The quantized cache on the tiny checkpoint, 4-bit on CPU: the first load writes an entry, the next
reads it (same greedy tokens), a damaged or stale entry is rebuilt, `docread models list/clear` see it."""

import json

import numpy as np
import pytest
from kit import cli
from PIL import Image

import docread
from docread.model import qcache

pytestmark = pytest.mark.needs("bitsandbytes")  # imported when a test runs, not at collection
QUESTION = "What is written here?"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCREAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(qcache.CACHE_SWITCH_ENV, raising=False)
    return tmp_path / "cache" / "quantized"


def page():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 240, 3), dtype=np.uint8))


def load_and_ask(folder):
    reader = docread.load(str(folder), device="cpu", quant="4bit")
    stream = reader.stream(page(), QUESTION, max_new_tokens=6)
    text = "".join(stream)
    return reader.base.load_report, stream.tokens, text


def only_entry(cache):
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return entry


def test_first_load_writes_the_entry_and_the_second_reads_it(tiny_llava_next, cache):
    first, tokens, text = load_and_ask(tiny_llava_next)
    assert first["qcache"] == "written" and "save_s" in first
    entry = only_entry(cache)
    assert entry.name.endswith(first["qcache_key"]) and "-4bit-" in entry.name
    assert (entry / qcache.MANIFEST).is_file() and not list(entry.glob("*.bin"))
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    second, tokens_again, text_again = load_and_ask(tiny_llava_next)
    assert second["qcache"] == "hit" and second["qcache_path"] == str(entry)
    assert tokens_again == tokens and text_again == text and len(tokens) == 6


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "delete", "stale_key", "bad_manifest"])
def test_a_damaged_or_stale_entry_is_rebuilt_never_loaded(tiny_llava_next, cache, damage, caplog):
    _, tokens, _ = load_and_ask(tiny_llava_next)
    entry = only_entry(cache)
    weights = next(entry.glob("*.safetensors"))
    if damage == "truncate":
        with weights.open("r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif damage == "delete":
        weights.unlink()
    elif damage == "stale_key":
        manifest = json.loads((entry / qcache.MANIFEST).read_text())
        (entry / qcache.MANIFEST).write_text(json.dumps({**manifest, "key": "0" * 64}))
    else:
        (entry / qcache.MANIFEST).write_text("{not json")
    assert qcache.verify(entry, "0" * 64 if damage != "stale_key" else "1" * 64) is not None
    with caplog.at_level("WARNING", logger="docread.model.qcache"):
        report, tokens_again, _ = load_and_ask(tiny_llava_next)
    assert report["qcache"] == "rebuilt" and "rebuilding" in caplog.text
    assert tokens_again == tokens
    assert qcache.verify(only_entry(cache), json.loads((entry / qcache.MANIFEST).read_text())["key"]) is None
    assert load_and_ask(tiny_llava_next)[0]["qcache"] == "hit"


def test_a_changed_base_gets_a_new_key(tiny_llava_next, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_llava_next, tmp_path / "copy")
    before = qcache.base_revision(copy)
    assert before == qcache.base_revision(copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "note": "edited"}))
    assert qcache.base_revision(copy) != before


def test_switch_off_neither_reads_nor_writes_and_refresh_rebuilds(tiny_llava_next, cache, monkeypatch):
    monkeypatch.setenv(qcache.CACHE_SWITCH_ENV, "off")
    report, _, _ = load_and_ask(tiny_llava_next)
    assert report["qcache"] == "off" and not cache.exists()
    monkeypatch.setenv(qcache.CACHE_SWITCH_ENV, "refresh")
    assert [load_and_ask(tiny_llava_next)[0]["qcache"] for _ in range(2)] == ["written", "rebuilt"]


def test_unquantized_loads_do_not_use_the_cache(tiny_llava_next, cache):
    reader = docread.load(str(tiny_llava_next), device="cpu", quant="none")
    assert reader.base.load_report["qcache"] == "n/a" and not cache.exists()


def test_models_list_and_clear_show_and_remove_entries(tiny_llava_next, cache):

    load_and_ask(tiny_llava_next)
    entry = only_entry(cache)
    listed = cli.docread("models", "list", "--json")
    assert listed.returncode == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    (quantized,) = [row for row in rows if row.get("kind") == "quantized"]
    assert quantized["name"] == entry.name and quantized["size"] > 0 and entry.name.endswith(quantized["key"])
    table = cli.docread("models", "list")
    assert table.returncode == 0 and "quantized" in table.stdout
    missing = cli.docread("models", "clear", "no-such-entry")
    assert missing.returncode != 0 and entry.exists()
    cleared = cli.docread("models", "clear", entry.name)
    assert cleared.returncode == 0, cleared.output
    assert entry.name in cleared.stdout and not entry.exists()
    assert cli.docread("models", "clear").returncode == 0


def test_safetensors_check_spots_a_cut_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(10, 10)}, str(path))
    assert qcache._safetensors_whole(path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 1)
    assert not qcache._safetensors_whole(path)
    path.write_bytes(b"\xff" * 16)
    assert not qcache._safetensors_whole(path)
