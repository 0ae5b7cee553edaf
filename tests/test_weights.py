"""The weights resolver: local folders, the HF cache, offline and unreachable hubs, pickle refusal."""

import shutil
import socket
from pathlib import Path

import pytest

from docread.errors import DocreadError, UsageError
from docread.model import weights


def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("docread tried the network")

    monkeypatch.setattr(socket, "create_connection", refuse)


def put_in_cache(checkpoint: Path, repo_id: str) -> Path:
    """Lay a checkpoint out in the HF cache exactly as `hf download` would."""
    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(checkpoint, repo / "snapshots" / revision, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_local_folder_is_used_as_is(tiny_llava, monkeypatch):
    no_network(monkeypatch)
    assert weights.resolve_weights(str(tiny_llava)) == Path(tiny_llava)


def test_hub_id_is_found_in_the_hf_cache_offline(tiny_llava, monkeypatch):
    no_network(monkeypatch)
    snapshot = put_in_cache(tiny_llava, "docread-tests/tiny-llava")
    assert weights.resolve_weights("docread-tests/tiny-llava").resolve() == snapshot.resolve()
    base = weights.load_base("docread-tests/tiny-llava", device="cpu", quant="none")
    assert type(base.model).__name__ == "LlavaForConditionalGeneration"
    assert base.image_mean == (0.5, 0.4, 0.3) and base.image_std == (0.2, 0.25, 0.3)  # the checkpoint's own
    assert base.tokenizer.convert_ids_to_tokens(base.image_token_id) == "<image>"
    assert base.quant == "none" and str(base.device) == "cpu"
    assert not any(p.requires_grad for p in base.model.parameters())


def test_missing_weights_offline_fail_without_touching_the_network(monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(DocreadError) as e:
        weights.resolve_weights("llava-hf/llava-1.5-7b-hf", offline=True)
    assert e.value.code == "weights_missing"
    assert "hf download llava-hf/llava-1.5-7b-hf" in e.value.message and "--model" in e.value.message


def test_missing_weights_with_unreachable_hub_fail_fast(monkeypatch):
    monkeypatch.setattr(weights, "_endpoint", lambda: "https://hub.docread-test.invalid")
    with pytest.raises(DocreadError) as e:
        weights.resolve_weights("llava-hf/llava-1.5-7b-hf", offline=False)
    assert e.value.code == "hub_unreachable" and "hub.docread-test.invalid" in e.value.message


def test_pickle_weights_are_refused(tmp_path, tiny_llava):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_llava / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not loaded, ever")
    with pytest.raises(DocreadError) as e:
        weights.resolve_weights(str(folder))
    assert e.value.code == "unsafe_weights" and "safetensors" in e.value.message


def test_folder_without_config_and_other_model_types(tmp_path, tiny_llava):
    with pytest.raises(DocreadError) as e:
        weights.resolve_weights(str(tmp_path))
    assert e.value.code == "weights_missing" and "config.json" in e.value.message
    other = tmp_path / "bert"
    shutil.copytree(tiny_llava, other)
    (other / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(DocreadError) as e:
        weights.load_base(str(other), device="cpu")
    assert e.value.code == "unsupported_model" and "'bert'" in e.value.message


@pytest.mark.parametrize("name", ["not a model", "weights.safetensors", "a/b/c"])
def test_names_that_are_no_model_are_usage_errors(name):
    with pytest.raises(UsageError):
        weights.resolve_weights(name, offline=True)


def test_device_and_quant_choices():
    import torch

    cpu = weights.resolve_device("cpu")
    assert weights.resolve_quant("auto", cpu) == "none"
    assert weights.resolve_quant("4bit", cpu) == "4bit"
    assert weights.resolve_quant("auto", torch.device("cuda", 0)) == "4bit"
    assert weights.compute_dtype(cpu) == torch.float32
    with pytest.raises(UsageError, match="choose auto, none, 8bit, 4bit"):
        weights.resolve_quant("3bit", cpu)
    with pytest.raises(UsageError, match="choose auto, cpu, cuda"):
        weights.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DocreadError) as e:
            weights.resolve_device("cuda:0")
        assert e.value.code == "no_cuda"


def test_four_bit_config_keeps_vision_projector_and_head_in_half_precision():
    import torch

    config = weights.quantization_config("4bit", torch.bfloat16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert set(weights.NOT_QUANTIZED) <= set(config.llm_int8_skip_modules)


def test_cli_reports_missing_weights_in_one_line(tmp_path):
    from kit.cli import docread
    from PIL import Image

    image = tmp_path / "page.png"
    Image.new("RGB", (64, 64), "white").save(image)
    for model in ([], ["--model", "llava-1.5-7b"]):  # the session's HF cache holds no llava-hf model (conftest)
        run = docread("ask", image, "what is this?", *model)
        assert run.returncode == 1, run.stderr
        assert run.stdout == ""
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: llava-hf/"), run.stderr
        assert "not in the HF cache" in lines[0] and "Traceback" not in run.stderr
