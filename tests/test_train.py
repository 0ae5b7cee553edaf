"""`docread train` on the tiny random checkpoint, on CPU: it learns, it trains exactly the stage's
parameters, its adapter reloads to the same logits, a resumed run equals an uninterrupted one,
and the command line's adapter is one `docread ask` loads."""

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from kit import cli
from kit.forked import GROUP, Forked
from PIL import Image

import docread
from docread.model.adapters import read_adapter
from docread.train import TrainConfig, start, steps, train
from docread.train.data import IGNORE, Example, encode, read_examples

pytestmark = [pytest.mark.usefixtures("forkserver"), pytest.mark.xdist_group(GROUP)]

QUESTIONS = ["What is written here?", "What is the total?", "Describe the chart.", "When is it due?"]
ANSWERS = ["twelve apples", "the total is 42", "a red invoice", "net 30 days"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on shared cores run many times faster on one thread; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four noise images (each cut into 2x2 tiles at --max-slices 4) with one question each."""
    root = tmp_path_factory.mktemp("train-data")
    rng = np.random.default_rng(0)
    records = []
    for i, (question, answer) in enumerate(zip(QUESTIONS, ANSWERS)):
        pixels = rng.integers(0, 256, (500 + 40 * i, 600, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
        records.append(
            {
                "id": f"s{i}",
                "image": f"{i}.png",
                "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
            }
        )
    (root / "train.json").write_text(json.dumps(records))
    return root / "train.json"


def config(tiny_llava, data, out, **options) -> TrainConfig:
    defaults = dict(
        stage=2,
        max_steps=3,
        batch_size=2,
        lora_r=4,
        lora_alpha=8,
        max_slices=4,
        device="cpu",
        log_every=1,
        lr=1e-2,
        lr_rest=1e-2,
    )
    return TrainConfig(model=str(tiny_llava), data=data, output=out, **{**defaults, **options})


def checksums(module: torch.nn.Module) -> dict[str, str]:
    return {
        name: hashlib.sha256(p.detach().float().numpy().tobytes()).hexdigest() for name, p in module.named_parameters()
    }


def losses(out: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


# -- data ----------------------------------------------------------------------------------------
def test_labels_cover_only_the_answers(tiny_llava, tmp_path):
    reader = docread.load(str(tiny_llava), device="cpu", quant="none")
    tokenizer = reader.base.tokenizer
    example = Example("c", tmp_path / "x.png", (("What is the total?", "42 dollars"), ("And the date?", "May 4")))
    eos = reader.eos_token_ids[0]
    encoded = encode(tokenizer, reader.template, example, reader.base.image_token_id, eos)
    assert encoded.ids.count(reader.base.image_token_id) == 1
    answers = [t for t, label in zip(encoded.ids, encoded.labels) if label != IGNORE]
    assert [t for t in encoded.labels if t != IGNORE] == answers and answers.count(eos) == 2
    assert tokenizer.decode(answers, skip_special_tokens=True).split() == ["42", "dollars", "May", "4"]
    assert "total" in tokenizer.decode(encoded.ids[: encoded.answer_start])  # the question is context only
    # the first turn's prompt is exactly what `ask` feeds the model
    from docread.views.processor import prompt_ids

    asked = prompt_ids(tokenizer, reader.template, "What is the total?", reader.base.image_token_id)
    assert encoded.ids[: encoded.answer_start] == asked


def test_entitygrid_questions_are_read_directly(tmp_path):
    from docread.bench.entitygrid import generate

    list(generate(tmp_path / "eg", n=12, seed=0, size=56))
    mc = read_examples(tmp_path / "eg" / "questions.jsonl")
    assert len(mc) == 12 and all(e.image.is_file() and e.choices == ("A", "B", "C", "D") for e in mc)
    assert all(e.turns[0][1] in "ABCD" and "A. " in e.turns[0][0] for e in mc)
    named = read_examples(tmp_path / "eg" / "questions.jsonl", open_ended=1.0, tasks=("recognition",))
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "eg" / "questions.jsonl").read_text().splitlines())}
    assert len(named) == 4 and not any(e.choices for e in named)
    assert all(e.turns[0][1] == records[e.id]["entities"][0]["name"] for e in named)
    assert not any("A. " in e.turns[0][0] for e in named)  # asked for the name, no options to copy from


# -- learning ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_overfits_a_handful_of_examples(tiny_llava, data, tmp_path):
    # the global view alone: learning is the point here (the tiles are trained by the tests below)
    options = dict(max_steps=12, batch_size=4, warmup=0.0, lr=3e-2, lr_rest=3e-2, max_slices=0)
    list(train(config(tiny_llava, data, tmp_path / "out", **options)))
    logged = losses(tmp_path / "out")
    assert [s for s, _ in logged] == list(range(1, 13))
    first, last = logged[0][1], logged[-1][1]
    assert last <= 0.1 * first, f"loss {first:.3f} -> {last:.3f}: fell less than 90%"


STAGES = {  # options, and which of the trainee's parameters (llava.* / parts.*) must change
    "stage1": (dict(stage=1), lambda n: "sampler." in n or "multi_modal_projector." in n),
    "stage2": (dict(stage=2), lambda n: "lora_" in n or n.startswith("parts.")),
    "stage2-no-sra": (
        dict(stage=2, sra=False),
        lambda n: "lora_" in n or (n.startswith("parts.") and not n.startswith("parts.adapters.")),
    ),
}


@pytest.mark.parametrize("stage", STAGES)
def test_only_the_stages_parameters_change(tiny_llava, data, tmp_path, stage):
    options, intended = STAGES[stage]
    run = start(config(tiny_llava, data, tmp_path / "out", **options))
    before = checksums(run.trainee)
    list(steps(run))  # 3 steps: zero-initialised outputs (SRA, SMS, lora_B) move first, the rest next
    after = checksums(run.trainee)
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {n for n in before if intended(n)}, (sorted(changed ^ {n for n in before if intended(n)}))[:5]
    assert any("vision_tower" in n for n in before) and not any("vision_tower" in n for n in changed)


# -- files ---------------------------------------------------------------------------------------
def logits_of(reader, collate_batch):
    """Logits of a batch through a reader's public pieces (not the trainer's code)."""
    hires = reader.hires
    with torch.no_grad():
        sequences = hires.image_embeddings(collate_batch.pixels, collate_batch.grids)
        embeds = hires.embed_prompt(collate_batch.input_ids, sequences)
        hidden = hires.language_model(
            inputs_embeds=embeds, attention_mask=collate_batch.attention_mask
        ).last_hidden_state
        return hires.lm_head(hidden)


@pytest.mark.parametrize("options", [dict(stage=1), dict(stage=2), dict(full=True)], ids=["stage1", "stage2", "full"])
def test_adapter_reloads_to_the_same_logits(tiny_llava, data, tmp_path, options):
    out = tmp_path / "out"
    run = start(config(tiny_llava, data, out, **options))
    list(steps(run))
    run.trainee.eval()
    batch = run.collate(run.examples[:2])
    trained = logits_of(run.reader, batch)
    loaded = docread.load(str(tiny_llava), adapter=out, device="cpu", quant="none")
    assert torch.equal(logits_of(loaded, batch), trained)
    plain = docread.load(str(tiny_llava), device="cpu", quant="none")
    assert not torch.allclose(logits_of(plain, batch), trained)  # training really changed the model


@pytest.mark.slow
def test_resume_continues_bit_for_bit(tiny_llava, data, tmp_path):
    base = dict(max_steps=4, save_every=2, lora_dropout=0.3)  # dropout: the RNG state must be restored too
    whole = config(tiny_llava, data, tmp_path / "whole", **base)
    list(train(whole))
    cut = config(tiny_llava, data, tmp_path / "cut", **base)
    for event in train(cut):
        if getattr(event, "step", 0) == 3:
            break  # killed during step 3: the checkpoint of step 2 survives, step 3 is lost
    resumed = list(train(replace(cut, resume=True)))
    assert resumed[0].step == 3
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "adapter.safetensors")) for d in ("whole", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (read_adapter(tmp_path / d)[1] for d in ("whole", "cut"))  # LoRA too, from peft's file
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(docread.DocreadError, match="--resume"):
        list(train(cut))  # the folder holds a run: refusing beats overwriting it
    more = list(train(replace(cut, resume=True, max_steps=5)))  # a finished run goes on to a raised --max-steps
    assert [e.step for e in more] == [5, 5, 5] and losses(tmp_path / "cut")[-1][0] == 5  # step, checkpoint, adapter


def test_qlora_path_with_bf16_and_checkpointing_runs_on_cpu(tiny_llava, data, tmp_path):
    """The CUDA recipe's pieces (4-bit NF4 LLM, bf16 autocast, activation checkpointing) on CPU."""
    import bitsandbytes as bnb

    run = start(
        config(tiny_llava, data, tmp_path / "out", quant="4bit", precision="bf16", checkpointing=True, max_steps=2)
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in run.llava.modules())
    before = checksums(run.trainee)
    events = list(steps(run))
    assert all(np.isfinite(e.loss) for e in events if hasattr(e, "loss"))
    after = checksums(run.trainee)
    assert any(before[n] != after[n] for n in before if "lora_" in n)


def test_activation_checkpointing_changes_nothing_but_memory(tiny_llava, data, tmp_path):
    """Recomputing the LLM, CLIP and SRA layers in backward gives the very same training."""
    from safetensors.torch import load_file

    for name, on in (("plain", False), ("checkpointed", True)):
        list(train(config(tiny_llava, data, tmp_path / name, checkpointing=on, max_steps=2)))
    a, b = (load_file(str(tmp_path / d / "adapter.safetensors")) for d in ("plain", "checkpointed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = (read_adapter(tmp_path / d)[1] for d in ("plain", "checkpointed"))  # LoRA too, from peft's file
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "plain") == losses(tmp_path / "checkpointed")


# -- command line --------------------------------------------------------------------------------
COMMON = [
    "--stage",
    2,
    "--max-steps",
    2,
    "--batch-size",
    1,
    "--lora-r",
    4,
    "--lora-dropout",
    0,
    "--max-slices",
    4,
    "--device",
    "cpu",
    "--log-every",
    1,
]


@pytest.fixture(scope="module")
def cli_run(tiny_llava, data, tmp_path_factory):
    """`docread train` in-process on one thread (this module's; the torchrun ranks below run on one too, so the
    sums agree to the bit): 2 steps of 2 examples (1 per micro-step, 2 micro-steps)."""
    out = tmp_path_factory.mktemp("cli") / "out"
    command = ["train", "--model", tiny_llava, "--data", data, *COMMON, "--grad-accum", 2, "-o", out]
    return command, out, cli.docread(*command)


def test_cli_trains_an_adapter_that_ask_loads(tiny_llava, data, cli_run):
    _, out, run = cli_run
    assert run.returncode == 0, run.stderr
    assert str(out / "adapter.safetensors") in run.stdout and "\x1b[" not in run.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all({"step", "loss", "lr"} <= r.keys() for r in records)
    ask = cli.docread(
        "ask",
        data.parent / "0.png",
        QUESTIONS[0],
        "--model",
        tiny_llava,
        "--adapter",
        out,
        "--max-slices",
        4,
        "--max-new-tokens",
        3,
        "--json",
    )
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["tiles"] == 4


@pytest.mark.system
@pytest.mark.weight(20)  # two processes: its module goes to a worker early
def test_two_processes_train_as_one_with_gradient_accumulation(tiny_llava, data, tmp_path, cli_run):
    """Data-parallel (2 CPU processes, gloo; on GPUs the same code runs under `accelerate launch` or torchrun)
    equals one process accumulating the same two examples per step, to the bit. The ranks are `docread train`
    in two processes of their own, with the environment torchrun gives its ranks; forked from this one (kit:
    `Forked`), so they do not import torch and transformers again."""
    import socket

    from safetensors.torch import load_file

    _, one, _ = cli_run
    with socket.socket() as s:  # rank 0's rendezvous port, as torchrun --standalone picks one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = ["train", "--model", tiny_llava, "--data", data, *COMMON, "-o", tmp_path / "two"]
    world = dict(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", OMP_NUM_THREADS="1", **world)
    ranks = [Forked(command, env=dict(env, RANK=str(r), LOCAL_RANK=str(r), GROUP_RANK="0")) for r in (0, 1)]
    codes = [rank.wait(timeout=300) for rank in ranks]
    assert codes == [0, 0], [rank.stderr[-2000:] for rank in ranks]
    assert (tmp_path / "two" / "checkpoint" / "rng-1.safetensors").is_file()  # each process's RNG is kept
    a, b = (load_file(str(d / "adapter.safetensors")) for d in (tmp_path / "two", one))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (read_adapter(d)[1] for d in (tmp_path / "two", one))  # LoRA too, from peft's file
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "two") == losses(one)


def test_an_adapter_trained_without_the_global_view_loads_that_way(tiny_llava, data, tmp_path):
    out = tmp_path / "tiles"
    for _ in train(config(tiny_llava, data, out, max_steps=1, global_view=False)):
        pass
    reader = docread.load(str(tiny_llava), device="cpu", quant="none", adapter=out)
    assert reader.global_view is False
    answer = reader.ask(data.parent / "0.png", QUESTIONS[0], max_new_tokens=2, max_slices=4)
    assert answer.visual_tokens == 4 * 16 and answer.image_tokens == 4 * 17  # tiles alone, no SEP_A
    with pytest.raises(docread.DocreadError) as e:
        docread.load(str(tiny_llava), device="cpu", quant="none", adapter=out, global_view=True)
    assert e.value.code == "bad_adapter"
