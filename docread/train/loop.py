"""The training loop (docs/method.md#training): start or resume a run, take its steps, evaluate, checkpoint.

`train()` is a generator of events (Step, Evaluated, Saved) on the main process; the CLI renders
them and nothing here prints. Several processes (`accelerate launch`) train data-parallel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from docread.errors import UsageError
from docread.model.adapters import ADAPTER_FILE as FINAL  # OUT/adapter.safetensors (+ peft's LoRA files)
from docread.train import checkpoint
from docread.train.config import TrainConfig
from docread.train.model import Run, evaluate, prepare

__all__ = ["Step", "Evaluated", "Saved", "start", "steps", "train"]

MAX_GRAD_NORM = 1.0  # LLaVA's (the HF Trainer default)
LOG_FILE = "log.jsonl"  # OUT/log.jsonl: one JSON object per logged step or evaluation
CONFIG_FILE = "train_config.json"  # OUT/train_config.json: the options a --resume must repeat
EVAL_FILE = "eval-predictions.jsonl"  # OUT/eval-predictions.jsonl: {id, prediction, scores} of the last evaluation
RUN_NEUTRAL = ("resume", "save_every", "log_every", "eval", "eval_every")  # options a resumed run may change


@dataclass(frozen=True)
class Step:
    """An optimizer step done."""

    step: int  # 1-based
    total: int
    loss: float  # mean over the steps since the last log line, this one included
    lr: float  # main learning rate used by this step
    epoch: float  # passes over the data so far
    samples_per_s: float  # since this process started
    elapsed_s: float
    logged: bool = False  # written to log.jsonl (every log_every steps, and the last)


@dataclass(frozen=True)
class Evaluated:
    step: int
    loss: float
    accuracy: float | None  # multiple-choice items only; None without any
    n: int


@dataclass(frozen=True)
class Saved:
    step: int
    path: Path  # the checkpoint folder, or the final adapter file


def _check_output(config: TrainConfig) -> dict | None:
    """A fresh run needs an unused OUT; a resumed one its checkpoint and the same options."""
    out = Path(config.output)
    folder = checkpoint.latest(out)
    if not config.resume:
        if folder is not None or (out / FINAL).exists():
            raise UsageError(f"{out} already holds a training run: pass --resume to continue it, or choose another -o")
        return None  # a run that died before its first checkpoint left nothing worth keeping: start over
    if folder is None:
        raise UsageError(f"--resume: {out} has no checkpoint to continue from; start again without --resume")
    saved = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    mine = json.loads(json.dumps(config.to_json()))  # tuples as lists, as saved
    differ = [
        f"--{k.replace('_', '-')} {saved.get(k)} (now {mine[k]})"
        for k in mine
        if k not in RUN_NEUTRAL and saved.get(k, mine[k]) != mine[k] and not _raised_steps(k, saved.get(k), mine[k])
    ]
    if differ:
        raise UsageError(f"--resume needs the options the run started with: {', '.join(differ)}")
    return checkpoint.load_state(folder)


def _raised_steps(key: str, saved, now) -> bool:
    """A resumed run may go on to a higher --max-steps (its schedule stretches to the new total)."""
    return key == "max_steps" and isinstance(saved, int) and isinstance(now, int) and now > saved


def _batch_for(run: Run, step: int, micro: int):
    """The examples one process takes at (step, micro-step): the sample stream is each epoch's
    seeded permutation, end to end, so any step's batch is known without replaying the ones before."""
    config, world, rank = run.config, run.world_size, run.rank
    first = step * run.global_batch + (micro * world + rank) * config.batch_size
    return run.collate([run.examples[run.order(p)] for p in range(first, first + config.batch_size)])


def _save(run: Run, step: int, loop_state: dict) -> Path:
    """Write a checkpoint of `step` (all processes take part; the main one writes the shared files)."""
    accelerator, out = run.accelerator, Path(run.config.output)
    folder = out / checkpoint.PENDING
    if accelerator.is_main_process:
        checkpoint.pending_dir(out)
    accelerator.wait_for_everyone()
    checkpoint.save_rng(folder, run.rank, run.device)
    if accelerator.is_main_process:
        run.save_adapter(folder)
        checkpoint.save_optimizer(folder, run.optimizer, run.names)
        checkpoint.save_state(folder, {"step": step, "scheduler": run.scheduler.state_dict(), **loop_state})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.commit(out)
    accelerator.wait_for_everyone()
    return out / checkpoint.CHECKPOINT


def _evaluate(run: Run, step: int, log) -> Evaluated | None:
    """Each process evaluates its share of the held-out examples; the main one adds up and logs."""
    from accelerate.utils import gather_object

    shard = run.eval_examples[run.rank :: run.world_size]
    shares = gather_object([evaluate(run, shard)])  # one (loss sum, tokens, right, predictions) per process
    if not run.accelerator.is_main_process:
        return None
    loss_sum, tokens, right = (sum(share[i] for share in shares) for i in range(3))
    order = {e.id: i for i, e in enumerate(run.eval_examples)}
    predictions = sorted((p for share in shares for p in share[3]), key=lambda p: order[p["id"]])
    with open(Path(run.config.output) / EVAL_FILE, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(p) + "\n" for p in predictions)
    accuracy = right / len(predictions) if predictions else None
    result = Evaluated(step, loss_sum / max(tokens, 1), accuracy, len(run.eval_examples))
    log({"step": step, "eval_loss": result.loss, "eval_accuracy": accuracy, "eval_n": result.n})
    return result


def start(config: TrainConfig) -> Run:
    """Check OUT, prepare model, optimizer and data, and restore the checkpoint when resuming:
    a run ready to take its next step (`run.step` done so far)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # SRA and sampler params go unused on a batch without tiles: DDP must expect that
    accelerator = Accelerator(
        cpu=config.device == "cpu", kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
    )
    resumed = _check_output(config)
    run = prepare(config, accelerator)  # bad data or options fail here, before OUT is touched
    accelerator.wait_for_everyone()  # every process has looked at OUT before the main one writes
    out = Path(config.output)
    if resumed is None and accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=1))
        (out / LOG_FILE).unlink(missing_ok=True)
    if resumed is not None:
        if resumed["global_batch"] != run.global_batch or resumed["total"] > run.total:
            raise UsageError(
                f"--resume: the run had {resumed['global_batch']} examples per step and "
                f"{resumed['total']} steps, this one {run.global_batch} and {run.total}: use as many "
                "processes with the same --batch-size and --grad-accum"
            )
        folder = checkpoint.latest(out)
        checkpoint.restore_weights(folder, run.parts, run.llava)
        checkpoint.load_optimizer(folder, run.optimizer, run.names)
        run.scheduler.load_state_dict(resumed["scheduler"])
        checkpoint.load_rng(folder, run.rank, run.device)
        run.step = resumed["step"]
        if run.total != resumed["total"]:  # a raised --max-steps: the schedule stretches to it from this step
            scheduler = run.scheduler
            for group, base, factor in zip(run.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * factor(run.step)
            if accelerator.is_main_process:  # the next --resume compares with the new total
                (out / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=1))
        if accelerator.is_main_process:
            checkpoint.trim_log(out / LOG_FILE, run.step)
    return run


def train(config: TrainConfig) -> Iterator[Step | Evaluated | Saved]:
    """Train as `config` says; yields events on the main process (none on the others)."""
    yield from steps(start(config))


def steps(run: Run) -> Iterator[Step | Evaluated | Saved]:
    """Train a started run to its last step, logging to OUT/log.jsonl."""
    main = run.accelerator.is_main_process
    log_file = open(Path(run.config.output) / LOG_FILE, "a", encoding="utf-8") if main else None

    def log(record: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    try:
        yield from _loop(run, log)
    finally:
        if log_file is not None:
            log_file.close()


def _loop(run: Run, log) -> Iterator[Step | Evaluated | Saved]:
    config, accelerator, model = run.config, run.accelerator, run.model
    main = accelerator.is_main_process
    losses: list[float] = []
    began, done_since = time.perf_counter(), 0
    first_step = run.step
    for step in range(first_step, run.total):
        lr = run.optimizer.param_groups[0]["lr"]
        step_loss = torch.zeros((), device=run.device)
        for micro in range(config.grad_accum):
            batch = _batch_for(run, step, micro).to(run.device)
            sync = micro == config.grad_accum - 1
            with nullcontext() if sync else accelerator.no_sync(model), run.autocast():
                loss_sum, targets, _ = model(batch)
            loss = loss_sum / max(targets, 1) / config.grad_accum
            accelerator.backward(loss)
            step_loss += loss.detach()
        nn.utils.clip_grad_norm_(run.trainable, MAX_GRAD_NORM)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step = step + 1
        losses.append(float(accelerator.reduce(step_loss, "mean")))
        done, done_since = step + 1, done_since + 1
        last = done == run.total
        elapsed = time.perf_counter() - began
        event = Step(
            done,
            run.total,
            sum(losses) / len(losses),
            lr,
            done * run.global_batch / len(run.examples),
            done_since * run.global_batch / elapsed,
            elapsed,
            logged=done % config.log_every == 0 or last,
        )
        if event.logged:
            log(
                {
                    "step": done,
                    "loss": event.loss,
                    "lr": lr,
                    "epoch": round(event.epoch, 4),
                    "samples_per_s": round(event.samples_per_s, 2),
                    "elapsed_s": round(elapsed, 2),
                }
            )
            losses = []
        if main:
            yield event
        if run.eval_examples and ((config.eval_every and done % config.eval_every == 0) or last):
            evaluated = _evaluate(run, done, log)
            if evaluated is not None:
                yield evaluated
        if (config.save_every and done % config.save_every == 0) or last:
            folder = _save(run, done, {"global_batch": run.global_batch, "total": run.total})
            if main:
                yield Saved(done, folder)
    if main and first_step < run.total:
        yield Saved(run.total, run.save_adapter(Path(config.output)))  # writes OUT/FINAL
