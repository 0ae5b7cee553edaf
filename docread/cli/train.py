"""`docread train`: the two-stage HiRes-LLaVA training recipe.

One GPU: `docread train ...` (QLoRA). Several GPUs or nodes, data-parallel:
`accelerate launch --num_processes N -m docread train ...` (same options; --batch-size is per GPU).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from docread.cli.options import Adapter, Device, MaxSlices, Model, Offline, Quant, stderr_console
from docread.errors import UsageError
from docread.train.config import LOG_EVERY, LORA_ALPHA, LORA_DROPOUT, LORA_R, REST_LR, SAVE_EVERY, WARMUP

app = typer.Typer()

# -- options of `train` ---------------------------------------------------------------------------
Data = Annotated[
    Path, typer.Option("--data", help="LLaVA conversations (.json / .jsonl) or an EntityGrid questions.jsonl.")
]
Output = Annotated[Path, typer.Option("--output", "-o", help="Folder for the adapter, checkpoints and log.jsonl.")]
Stage = Annotated[
    Optional[int],
    typer.Option(
        "--stage", help="1: sampler + projector (lr 1e-3). 2: SRA + sampler + separators + LoRA (lr 2e-4 / 2e-5)."
    ),
]
Images = Annotated[
    Optional[Path],
    typer.Option("--images", help="Folder the data's image paths are relative to (default: the data file's folder)."),
]
Full = Annotated[
    bool,
    typer.Option(
        "--full", help="Train every weight instead of a stage's parts (tiny models from scratch; --quant none)."
    ),
]
Epochs = Annotated[Optional[float], typer.Option("--epochs", min=0.0, help="Passes over the data (default 1).")]
MaxSteps = Annotated[Optional[int], typer.Option("--max-steps", min=1, help="Optimizer steps, instead of --epochs.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Examples per GPU (process) per micro-step.")]
GradAccum = Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-steps per optimizer step.")]
Lr = Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Stage 1 and --full: 1e-3; stage 2: LoRA's, 2e-4.")]
LrRest = Annotated[float, typer.Option("--lr-rest", min=0.0, help="Stage 2: SRA, sampler and separators.")]
Warmup = Annotated[float, typer.Option("--warmup", min=0.0, max=0.99, help="Share of steps warming up; then cosine.")]
LoraR = Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank (stage 2).")]
LoraAlpha = Annotated[int, typer.Option("--lora-alpha", min=1, help="LoRA alpha (stage 2).")]
LoraDropout = Annotated[float, typer.Option("--lora-dropout", min=0.0, max=0.9, help="LoRA dropout (stage 2).")]
Sra = Annotated[
    bool, typer.Option("--sra/--no-sra", help="Train the SliceRestore Adapters (--no-sra: they stay the identity).")
]
GlobalView = Annotated[
    bool,
    typer.Option("--global-view/--no-global-view", help="--no-global-view: tiles alone (the fragmentation ablation)."),
]
OpenEnded = Annotated[
    float,
    typer.Option(
        "--open-ended",
        min=0.0,
        max=1.0,
        help="EntityGrid: share of recognition items asked for the name, not a letter.",
    ),
]
Tasks = Annotated[
    Optional[str], typer.Option("--tasks", help="EntityGrid: tasks to train on, e.g. recognition,counting.")
]
Eval = Annotated[
    Optional[Path], typer.Option("--eval", help="Held-out examples: loss, and the accuracy of multiple-choice items.")
]
EvalEvery = Annotated[int, typer.Option("--eval-every", min=0, help="Steps between evaluations (0: at the end).")]
SaveEvery = Annotated[
    int, typer.Option("--save-every", min=0, help="Steps between checkpoints (one at the end always).")
]
LogEvery = Annotated[int, typer.Option("--log-every", min=1, help="Steps between log.jsonl lines.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last checkpoint.")]
TrainSeed = Annotated[int, typer.Option("--seed", help="New modules' and LoRA's initialisation, data order, dropout.")]
Precision = Annotated[str, typer.Option("--precision", help="auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32.")]
Checkpointing = Annotated[
    Optional[bool],
    typer.Option("--checkpointing/--no-checkpointing", help="Activation checkpointing (default: on CUDA)."),
]


@app.command(
    epilog="Example: docread train --model llava-1.5-7b --data llava_v1_5_mix665k.json --images data/ "
    "--stage 2 --adapter stage1/ -o stage2/ --batch-size 4 --grad-accum 32"
)
def train(
    data: Data,
    output: Output,
    stage: Stage = None,
    model: Model = None,
    images: Images = None,
    adapter: Adapter = None,
    full: Full = False,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = 1,
    grad_accum: GradAccum = 1,
    lr: Lr = None,
    lr_rest: LrRest = REST_LR,
    warmup: Warmup = WARMUP,
    lora_r: LoraR = LORA_R,
    lora_alpha: LoraAlpha = LORA_ALPHA,
    lora_dropout: LoraDropout = LORA_DROPOUT,
    max_slices: MaxSlices = None,
    sra: Sra = True,
    global_view: GlobalView = True,
    open_ended: OpenEnded = 0.0,
    tasks: Tasks = None,
    eval_file: Eval = None,
    eval_every: EvalEvery = 0,
    save_every: SaveEvery = SAVE_EVERY,
    log_every: LogEvery = LOG_EVERY,
    resume: Resume = False,
    seed: TrainSeed = 0,
    device: Device = "auto",
    quant: Quant = "auto",
    precision: Precision = "auto",
    checkpointing: Checkpointing = None,
    offline: Offline = False,
):
    """Train HiRes-LLaVA's parts on conversations about images; writes an adapter for --adapter."""
    from docread.model.presets import DEFAULT_MODEL
    from docread.train.config import TrainConfig

    if stage is None and not full:
        raise UsageError("--stage: choose 1 (sampler + projector) or 2 (SRA + sampler + separators + LoRA)")
    from docread.formats.entitygrid import TASKS

    chosen = tuple(t.strip() for t in tasks.split(",")) if tasks else None
    if chosen and set(chosen) - set(TASKS):
        raise UsageError(f"--tasks {tasks!r}: choose among {', '.join(TASKS)}")
    _offline_when_here(model or DEFAULT_MODEL, offline)
    config = TrainConfig(
        model=model or DEFAULT_MODEL,
        data=data,
        output=output,
        stage=stage or 2,
        images=images,
        adapter=adapter,
        full=full,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        lr_rest=lr_rest,
        warmup=warmup,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        sra=sra,
        global_view=global_view,
        max_slices=max_slices,
        open_ended=open_ended,
        tasks=chosen,
        eval=eval_file,
        eval_every=eval_every,
        save_every=save_every,
        log_every=log_every,
        seed=seed,
        device=device,
        quant=quant,
        precision=precision,
        checkpointing=checkpointing,
        resume=resume,
    )
    _render(config)


def _offline_when_here(model: str, offline: bool) -> None:
    """Training never needs the hub once the base weights are here (a local folder, or the HF cache): it
    runs offline then, as with --offline, so no library it loads asks the hub for anything (before any
    Hugging Face library is imported, which reads HF_HUB_OFFLINE once)."""
    from docread.model.presets import resolve_preset
    from docread.model.weights import cached_folder

    if not offline and cached_folder(resolve_preset(model).base) is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"


def _render(config) -> None:
    """Drive the training generator: a progress bar on a terminal, evaluations and the result as lines."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from docread.train.loop import Evaluated, Saved, Step, train

    err = stderr_console()
    progress = (
        Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(),
            console=err,
        )
        if err.is_terminal
        else None
    )
    task = None
    final = None
    with progress or nullcontext():
        for event in train(config):
            if isinstance(event, Step) and progress is not None:
                status = f"loss {event.loss:.4f} · lr {event.lr:.2e} · {event.samples_per_s:.1f} samples/s"
                if task is None:
                    task = progress.add_task("training", total=event.total, completed=event.step, status=status)
                progress.update(task, completed=event.step, status=status)
            elif isinstance(event, Evaluated):
                accuracy = "" if event.accuracy is None else f" · multiple-choice accuracy {100 * event.accuracy:.1f}%"
                err.print(f"step {event.step}: eval loss {event.loss:.4f} on {event.n} examples{accuracy}")
            elif isinstance(event, Saved) and event.path.suffix == ".safetensors":
                final = event
    if final is not None:
        sys.stdout.write(
            f"wrote {final.path} after {final.step} steps; use it with: docread ask FILE QUESTION "
            f"--model {config.model} --adapter {final.path.parent}\n"
        )
