"""`docread train`: the two-stage HiRes-LLaVA recipe (docs/method.md#training).

config (options, torch-free) → data (examples, batches) → model (trainable run) → loop (steps);
checkpoint saves and restores runs. Importing this package loads no torch: the loop loads lazily.
"""

from docread.train.config import TrainConfig

__all__ = ["TrainConfig", "Step", "Evaluated", "Saved", "start", "steps", "train"]
_LOOP = ("Step", "Evaluated", "Saved", "start", "steps", "train")


def __getattr__(name):  # lazy, as `docread` itself: the loop imports torch
    if name in _LOOP:
        from docread.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'docread.train' has no attribute {name!r}")
