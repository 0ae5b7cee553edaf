"""The options of a training run, as one validated dataclass; importing it loads no torch.

Defaults follow docs/method.md#training (LLaVA's): stage 1 lr 1e-3; stage 2 lr 2e-4 for LoRA
(r 128, alpha 256) and 2e-5 for the rest; 3% warm-up then cosine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from docread.errors import UsageError
from docread.model.adapters import LORA_ALPHA, LORA_R  # noqa: F401  (re-exported: the CLI shows them)

STAGE_LR = {1: 1e-3, 2: 2e-4}  # stage 1: sampler + projector; stage 2: LoRA (docs/method.md#training)
FULL_LR = 1e-3  # --full: every weight of a tiny model, from scratch
REST_LR = 2e-5  # stage 2: SRA, SMS and separators
WARMUP = 0.03  # share of the steps the learning rate ramps up over, then cosine to 0
LORA_DROPOUT = 0.05  # LLaVA's
SAVE_EVERY = 500  # steps between checkpoints
LOG_EVERY = 10  # steps between log lines


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; `docread train`'s options."""

    model: str  # preset, hub id or local llava-hf folder
    data: Path  # LLaVA conversations (.json / .jsonl) or EntityGrid questions.jsonl
    output: Path  # OUT: adapter, checkpoint, log
    stage: int = 2  # 1: sampler + projector; 2: SRA + SMS + separators + LoRA
    images: Path | None = None  # image folder; default: the data file's folder
    adapter: Path | None = None  # adapter to start from (stage 1's output, for stage 2)
    full: bool = False  # train every weight (from-scratch tiny models; needs quant none)
    epochs: float | None = None  # passes over the data (default 1 when max_steps is not given)
    max_steps: int | None = None  # optimizer steps, instead of epochs
    batch_size: int = 1  # examples per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float | None = None  # stage 1 / --full: all; stage 2: LoRA (default STAGE_LR / FULL_LR)
    lr_rest: float = REST_LR  # stage 2: SRA, SMS, separators
    warmup: float = WARMUP
    lora_r: int = LORA_R
    lora_alpha: int = LORA_ALPHA
    lora_dropout: float = LORA_DROPOUT
    sra: bool = True  # train the SliceRestore Adapters (False: they stay the identity)
    global_view: bool = True  # False: tiles alone (the fragmentation ablation)
    max_slices: int | None = None  # tile budget per image (default: the model's)
    open_ended: float = 0.0  # EntityGrid: share of recognition items asked for the name, not a letter
    tasks: tuple[str, ...] | None = None  # EntityGrid: tasks to train on (default all)
    eval: Path | None = None  # held-out examples: loss (and multiple-choice accuracy)
    eval_every: int = 0  # steps between evaluations (0: at the end only)
    save_every: int = SAVE_EVERY  # steps between checkpoints (always one at the end)
    log_every: int = LOG_EVERY  # steps between log lines (loss averaged over them)
    seed: int = 0  # LoRA init, data order, dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N (accelerate picks it under several processes)
    quant: str = "auto"  # LLM weights: auto (4bit on CUDA, none on CPU) | none | 4bit | 8bit
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    checkpointing: bool | None = None  # activation checkpointing (default: on CUDA)
    resume: bool = False

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise UsageError(f"--stage {self.stage}: choose 1 (sampler + projector) or 2 (SRA + SMS + LoRA)")
        if self.epochs is not None and self.max_steps is not None:
            raise UsageError("give --epochs or --max-steps, not both")
        if self.full and self.quant not in ("auto", "none"):
            raise UsageError(f"--full trains every weight, which a --quant {self.quant} model cannot: use --quant none")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UsageError(f"--precision {self.precision!r}: choose auto, bf16 or fp32")
        if not 0 <= self.open_ended <= 1:
            raise UsageError(f"--open-ended {self.open_ended}: a share, from 0 to 1")
        if not 0 <= self.warmup < 1:
            raise UsageError(f"--warmup {self.warmup}: a share of the steps, from 0 to below 1")
        small = {
            "--batch-size": self.batch_size,
            "--grad-accum": self.grad_accum,
            "--lora-r": self.lora_r,
            "--max-steps": self.max_steps or 1,
            "--log-every": self.log_every,
        }
        for option, value in small.items():
            if value < 1:
                raise UsageError(f"{option} {value}: must be at least 1")

    @property
    def main_lr(self) -> float:
        return self.lr if self.lr is not None else (FULL_LR if self.full else STAGE_LR[self.stage])

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
