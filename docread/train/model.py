"""What a training run holds: the model made trainable per stage, its optimizer, schedule, data and loss.

`prepare` loads the base through `docread.load` (4-bit on CUDA), attaches LoRA for stage 2, makes exactly the
stage's parameters trainable (in fp32) and wraps all in one `Trainee` module that `accelerate` can make
data-parallel. `evaluate` gives the held-out loss and multiple-choice accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from docread.errors import UsageError
from docread.train.data import IGNORE, Batch, Collator, Example, choice_tokens, read_examples

if TYPE_CHECKING:
    from docread.train.config import TrainConfig

ADAM_BETAS = (0.9, 0.999)
EVAL_BATCH = 16  # held-out examples per forward pass (no gradients kept)
NamedParams = list[tuple[str, nn.Parameter]]


def schedule(total: int, warmup: float):
    """Learning-rate factor of step s (0-based): linear warm-up over ceil(warmup * total) steps,
    then cosine to zero. Warm-up starts at 1/w, not 0, so no step is wasted."""
    ramp = math.ceil(warmup * total)

    def factor(s: int) -> float:
        if s < ramp:
            return (s + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * (s - ramp) / max(1, total - ramp)))

    return factor


class Trainee(nn.Module):
    """The llava-hf model and docread's modules as one module; forward gives the summed loss.

    Holds the base without moving or casting it (a 4-bit base must never be `.to()`'d)."""

    def __init__(self, llava: nn.Module, parts: nn.Module, hires):
        super().__init__()
        self.llava = llava
        self.parts = parts  # HiResModules
        self.hires = hires  # HiResLlava: runs the pieces in order (not a module: owns nothing)

    def forward(self, batch: Batch, positions: Sequence[tuple[int, int]] = ()):
        """(summed cross-entropy over the answer tokens, their count, logits (P, V) at `positions`)."""
        hires = self.hires
        pixels = batch.pixels.to(next(hires.vision.parameters()).dtype)  # (V, 3, S, S)
        sequences = hires.image_embeddings(pixels, batch.grids) if batch.grids else []
        embeds = hires.embed_prompt(batch.input_ids, sequences)  # (B, T, D)
        hidden = hires.language_model(
            inputs_embeds=embeds, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state  # (B, T, D)
        targets = batch.labels[:, 1:]  # (B, T-1): position t predicts token t+1
        mask = targets != IGNORE
        logits = hires.lm_head(hidden[:, :-1][mask]).float()  # (K, V): the head only where the loss is taken
        loss = F.cross_entropy(logits, targets[mask], reduction="sum")
        picked = None
        if positions:
            rows, cols = zip(*positions)
            picked = hires.lm_head(hidden[list(rows), list(cols)]).float()  # (P, V)
        return loss, int(mask.sum()), picked


class Order:
    """The endless sample stream: epoch after epoch, each a permutation seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, None

    def __call__(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator).tolist()
        return self._perm[position % self.n]


@dataclass
class Run:
    """A prepared run: model, optimizer, schedule and data, on this process."""

    config: TrainConfig
    accelerator: object
    reader: object  # the DocReader the base was loaded as
    trainee: Trainee
    model: nn.Module  # trainee, DDP-wrapped under several processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    names: list[str]  # trainable parameters, in optimizer order (adapter-style names)
    trainable: list[nn.Parameter]
    base_names: list[str]  # llava parameters the adapter stores
    lora_config: dict | None
    examples: list[Example]
    eval_examples: list[Example]
    collate: Collator
    order: Order
    total: int  # optimizer steps
    global_batch: int  # examples per optimizer step, all processes together
    autocast_dtype: torch.dtype | None
    step: int = 0  # optimizer steps done

    @property
    def llava(self) -> nn.Module:
        return self.trainee.llava

    @property
    def parts(self) -> nn.Module:
        return self.trainee.parts

    @property
    def device(self) -> torch.device:
        return self.reader.base.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def save_adapter(self, path: Path) -> Path:
        from docread.model.adapters import save_adapter

        config = self.config
        note = {
            "stage": config.stage,
            "full": config.full,
            "base": config.model,
            "global_view": config.global_view,
            "step": self.step,
            "examples": len(self.examples),
        }
        return save_adapter(
            path,
            self.parts,
            self.llava,
            lora_config=self.lora_config,
            base_parameters=self.base_names,
            training=note,
            base_model=self.reader.preset.base,
        )


def _groups(config: TrainConfig, llava: nn.Module, parts: nn.Module) -> list[tuple[NamedParams, float]]:
    """The stage's trainable parameters, by learning rate (the main one first)."""
    hires = [(f"hires.{n}", p) for n, p in parts.named_parameters() if config.sra or not n.startswith("adapters.")]
    lora = [(f"lora.{n}", p) for n, p in llava.named_parameters() if "lora_" in n]
    if config.full:
        base = [(f"base.{n}", p) for n, p in llava.named_parameters() if "lora_" not in n]
        return [(base + lora + hires, config.main_lr)]
    if config.stage == 1:
        sampler = [(n, p) for n, p in hires if n.startswith("hires.sampler.")]
        projector = [(f"base.{n}", p) for n, p in llava.named_parameters() if ".multi_modal_projector." in f".{n}"]
        return [(sampler + projector, config.main_lr)]
    return [(lora, config.main_lr), (hires, config.lr_rest)]


def _device_and_precision(config: TrainConfig, accelerator) -> tuple[torch.device, torch.dtype | None]:
    from docread.model.weights import resolve_device

    if accelerator.num_processes > 1:
        if config.device not in ("auto", accelerator.device.type):
            raise UsageError(
                f"--device {config.device}: under accelerate launch each process takes its own device; "
                "leave --device auto"
            )
        device = accelerator.device
    else:
        device = resolve_device(config.device)
    precision = config.precision
    if device.type == "cuda":
        if precision == "fp32":
            raise UsageError(
                "--precision fp32 on CUDA: docread trains with bf16 autocast on GPUs (fp32 weights "
                "for what it trains); use --precision auto"
            )
        if not torch.cuda.is_bf16_supported():
            raise UsageError(
                "training on this GPU needs bf16 (NVIDIA Ampere or newer); use --device cpu for tiny models"
            )
    return device, (torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None)


def _lora(config: TrainConfig, llava: nn.Module) -> dict | None:
    """Stage 2's LoRA: the one the start adapter brought, else a new one."""
    import json

    from docread.model.adapters import adapter_contents, attach_lora

    if config.full or config.stage == 1:
        return None
    if any("lora_" in n for n, _ in llava.named_parameters()):
        metadata, _ = adapter_contents(config.adapter)
        return json.loads(metadata.get("lora_config", "{}"))
    return attach_lora(llava, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)


def prepare(config: TrainConfig, accelerator) -> Run:
    """Load the base, make the stage's parameters trainable, and build optimizer, schedule and data."""
    import docread
    from docread.model.adapters import adapter_contents

    examples = read_examples(
        config.data, config.images, open_ended=config.open_ended, tasks=config.tasks, seed=config.seed
    )  # before the model: bad data fails in a second
    eval_examples = read_examples(config.eval, config.images) if config.eval else []
    device, autocast_dtype = _device_and_precision(config, accelerator)
    torch.manual_seed(config.seed)  # the new modules' and LoRA's initialisation: same seed, same run
    reader = docread.load(
        config.model,
        adapter=config.adapter,
        device=str(device),
        quant="none" if config.full else config.quant,
        global_view=config.global_view,
    )
    llava, parts, hires = reader.base.model, reader.hires.modules, reader.hires
    lora_config = _lora(config, llava)
    groups = _groups(config, llava, parts)
    trainable = [p for named, _ in groups for _, p in named]
    for p in trainable:
        p.data = p.data.float()  # fp32 master weights; autocast computes in bf16 where it runs
        p.requires_grad_(True)
    started = adapter_contents(config.adapter)[1] if config.adapter else []
    base_names = sorted(
        {n[len("base.") :] for named, _ in groups for n, _ in named if n.startswith("base.")}
        | {k[len("base.") :] for k in started if k.startswith("base.")}
    )
    checkpointing = config.checkpointing if config.checkpointing is not None else device.type == "cuda"
    if checkpointing:
        llava.model.language_model.activation_checkpointing_enable()
        llava.model.vision_tower.activation_checkpointing_enable()
        hires.gradient_checkpointing = True
    trainee = Trainee(llava, parts, hires).train()
    optimizer = torch.optim.AdamW(
        [{"params": [p for _, p in named], "lr": lr} for named, lr in groups], betas=ADAM_BETAS, weight_decay=0.0
    )
    global_batch = config.batch_size * config.grad_accum * accelerator.num_processes
    total = config.max_steps or max(1, -(-int((config.epochs or 1.0) * len(examples)) // global_batch))
    factor = schedule(total, config.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor] * len(groups))
    model = accelerator.prepare_model(trainee, device_placement=False)
    torch.manual_seed(config.seed + accelerator.process_index)  # dropout: its own masks on each process
    return Run(
        config=config,
        accelerator=accelerator,
        reader=reader,
        trainee=trainee,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        names=[n for named, _ in groups for n, _ in named],
        trainable=trainable,
        base_names=base_names,
        lora_config=lora_config,
        examples=examples,
        eval_examples=eval_examples,
        collate=_collator(reader, config),
        order=Order(len(examples), config.seed),
        total=total,
        global_batch=global_batch,
        autocast_dtype=autocast_dtype,
    )


def _collator(reader, config: TrainConfig) -> Collator:
    base, preset, tokenizer = reader.base, reader.preset, reader.base.tokenizer
    eos = reader.eos_token_ids[0]
    return Collator(
        tokenizer=tokenizer,
        template=reader.template,
        image_token_id=base.image_token_id,
        eos_id=eos,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        size=preset.size,
        patch=preset.patch,
        k=preset.k,
        max_slices=preset.max_slices if config.max_slices is None else config.max_slices,
        context=reader.context,
        mean=base.image_mean,
        std=base.image_std,
        global_view=config.global_view,
    )


@torch.no_grad()
def evaluate(run: Run, examples: Sequence[Example]) -> tuple[float, int, int, list[dict]]:
    """(summed loss over answer tokens, their count, multiple-choice items right, {id, prediction,
    scores} per multiple-choice item).

    A multiple-choice item is scored in the same pass as its loss: the log-probability of each
    choice's distinguishing token after the prefix all choices share (for letters: the letter)."""
    trainee, collate = run.trainee, run.collate
    was_training = trainee.training
    trainee.eval()
    loss_sum, tokens, right, predictions = 0.0, 0, 0, []
    try:
        for start in range(0, len(examples), EVAL_BATCH):
            chunk = examples[start : start + EVAL_BATCH]
            batch = collate(chunk).to(run.device)
            scored = [
                (b, *choice_tokens(collate.tokenizer, collate.template, e, collate.image_token_id))
                for b, e in enumerate(chunk)
                if e.choices
            ]
            positions = [(b, batch.answer_starts[b] + shared - 1) for b, shared, _ in scored]
            with run.autocast():
                loss, count, picked = trainee(batch, positions)
            loss_sum, tokens = loss_sum + float(loss), tokens + count
            for (b, _, distinct), logits in zip(scored, picked if picked is not None else []):
                scores = torch.log_softmax(logits, -1)[distinct].tolist()
                choice = chunk[b].choices[max(range(len(scores)), key=scores.__getitem__)]
                right += choice == chunk[b].turns[0][1]
                predictions.append({"id": chunk[b].id, "prediction": choice, "scores": [round(s, 4) for s in scores]})
    finally:
        trainee.train(was_training)
    return loss_sum, tokens, right, predictions
