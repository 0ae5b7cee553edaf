"""Adapter files in the ecosystem's layout: LoRA as peft writes it (peft's own loader reads it), beside
docread's HiRes parts; the single-file layout of earlier adapters still loads. Safetensors only."""

import json

import pytest
import torch

import docread
from docread.model.adapters import (
    ADAPTER_FILE,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    adapter_contents,
    attach_lora,
    docread_name,
    peft_name,
    save_adapter,
)

TOKENS = [[1, 5, 9, 17, 33, 65, 129]]


@pytest.fixture(scope="module")
def trained(tiny_llava):
    """A reader whose LoRA and HiRes parts are moved off their initialisation, as training would."""
    reader = docread.load(str(tiny_llava), device="cpu", quant="none")
    config = attach_lora(reader.base.model, r=4, alpha=8)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in reader.base.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        for p in reader.hires.modules.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01)
    return reader, config


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS)).logits


def lora_of(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_names_round_trip_between_docread_and_peft():
    name = "model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"
    assert peft_name(name) == "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
    assert docread_name(peft_name(name)) == name


def test_a_folder_gets_peft_files_that_peft_itself_loads(tiny_llava, trained, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import LlavaForConditionalGeneration

    reader, config = trained
    path = save_adapter(
        tmp_path / "adapter", reader.hires.modules, reader.base.model, lora_config=config, base_model=str(tiny_llava)
    )
    assert path == tmp_path / "adapter" / ADAPTER_FILE
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([ADAPTER_FILE, PEFT_CONFIG, PEFT_WEIGHTS])
    saved = json.loads((path.parent / PEFT_CONFIG).read_text())
    assert saved["peft_type"] == "LORA" and (saved["r"], saved["lora_alpha"]) == (4, 8)
    assert saved["base_model_name_or_path"] == str(tiny_llava)
    with safe_open(str(path), framework="pt") as f:
        assert not any(k.startswith("lora.") for k in f.keys())  # LoRA lives in peft's file only
    ours = lora_of(reader.base.model)
    base = LlavaForConditionalGeneration.from_pretrained(str(tiny_llava), dtype=torch.float32).eval()
    plain = logits(base)
    peft_model = PeftModel.from_pretrained(base, str(path.parent)).eval()
    theirs = {n.removeprefix("base_model.model."): p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert theirs.keys() == ours.keys()  # the language model's linears only: CLIP's q_proj is not targeted
    assert all(torch.equal(theirs[n], ours[n]) for n in ours)
    expected = logits(reader.base.model)
    assert torch.allclose(logits(peft_model), expected, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the LoRA really changes the model


def test_both_layouts_reload_to_the_same_model(tiny_llava, trained, tmp_path):
    reader, config = trained
    expected = logits(reader.base.model)
    (tmp_path / "single").mkdir()
    folder = save_adapter(tmp_path / "peft", reader.hires.modules, reader.base.model, lora_config=config).parent
    single = save_adapter(
        tmp_path / "single" / ADAPTER_FILE, reader.hires.modules, reader.base.model, lora_config=config
    )  # the layout every adapter had before peft's files
    assert sorted(p.name for p in single.parent.iterdir()) == [ADAPTER_FILE]
    names = {a: set(adapter_contents(a)[1]) for a in (folder, single.parent)}
    assert names[folder] == names[single.parent] and any(n.startswith("lora.") for n in names[folder])
    for adapter in (folder, single.parent, single):
        again = docread.load(str(tiny_llava), device="cpu", quant="none", adapter=adapter)
        assert lora_of(again.base.model).keys() == lora_of(reader.base.model).keys()
        assert torch.allclose(logits(again.base.model), expected, atol=1e-6), adapter
        for (name, a), (_, b) in zip(
            reader.hires.modules.state_dict().items(), again.hires.modules.state_dict().items()
        ):
            assert torch.equal(a, b), name


def test_an_adapter_without_lora_writes_no_peft_files(trained, tmp_path):
    reader, _ = trained
    path = save_adapter(tmp_path / "hires-only", reader.hires.modules)
    assert [p.name for p in path.parent.iterdir()] == [ADAPTER_FILE]
