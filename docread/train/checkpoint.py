"""Training checkpoints without pickle: what `docread train --resume` needs to continue bit for bit.

A folder holds the adapter (adapter.safetensors, LoRA in peft's files), the AdamW moments (optimizer.safetensors,
optimizer.json), the schedule and step (trainer_state.json) and each process's RNG states (rng-<rank>.safetensors),
written to a temporary folder and renamed into place, so a run killed mid-save keeps its last one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from docread.errors import DocreadError

if TYPE_CHECKING:
    import torch

CHECKPOINT = "checkpoint"  # OUT/checkpoint: the latest checkpoint
PENDING = "checkpoint.tmp"  # being written
STATE_FILE = "trainer_state.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"


def rng_file(rank: int) -> str:
    return f"rng-{rank}.safetensors"


# -- writing ---------------------------------------------------------------------------------
def pending_dir(out: Path) -> Path:
    """The folder a checkpoint is written into before `commit` renames it; emptied first."""
    folder = Path(out) / PENDING
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def save_optimizer(folder: Path, optimizer: torch.optim.Optimizer, names: list[str]) -> None:
    """AdamW state as tensors named `state.<index>.<key>` plus JSON groups; `names[i]` is param i's name."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors = {
        f"state.{index}.{key}": value.detach().cpu().contiguous()
        for index, entries in state["state"].items()
        for key, value in entries.items()
    }
    save_file(tensors, str(folder / OPTIMIZER_TENSORS))
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    (folder / OPTIMIZER_JSON).write_text(json.dumps({"param_groups": groups, "names": names}, indent=1))


def save_rng(folder: Path, rank: int, device: torch.device) -> None:
    """This process's torch RNG states: CPU, and its CUDA device's (dropout draws from them)."""
    import torch
    from safetensors.torch import save_file

    states = {"cpu": torch.get_rng_state()}  # uint8
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    save_file(states, str(folder / rng_file(rank)))


def save_state(folder: Path, state: dict) -> None:
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1))


def commit(out: Path) -> Path:
    """Swap the pending checkpoint in for the previous one."""
    out = Path(out)
    final, old = out / CHECKPOINT, out / f"{CHECKPOINT}.old"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    (out / PENDING).rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


# -- reading ---------------------------------------------------------------------------------
def latest(out: Path) -> Path | None:
    """The checkpoint to resume from: the committed one, else the previous one a crash mid-swap left."""
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        folder = Path(out) / name
        if (folder / STATE_FILE).is_file():
            return folder
    return None


def load_state(folder: Path) -> dict:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DocreadError(
            "corrupt", f"checkpoint {folder} cannot be read ({e}): start again without --resume"
        ) from None


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, names: list[str]) -> None:
    from safetensors.torch import load_file

    saved = json.loads((folder / OPTIMIZER_JSON).read_text(encoding="utf-8"))
    if saved["names"] != names:
        raise DocreadError(
            "bad_checkpoint",
            f"checkpoint {folder} trained other parameters than this run "
            f"({len(saved['names'])} vs {len(names)}): resume with the options it was started with",
        )
    tensors = load_file(str(folder / OPTIMIZER_TENSORS))
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in saved["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def load_rng(folder: Path, rank: int, device: torch.device) -> None:
    import torch
    from safetensors.torch import load_file

    path = folder / rng_file(rank)
    if not path.is_file():
        raise DocreadError("bad_checkpoint", f"{path} is missing: resume with as many processes as the run had")
    states = load_file(str(path))
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def restore_weights(folder: Path, parts: torch.nn.Module, llava: torch.nn.Module) -> None:
    """Copy a checkpoint's adapter back into the running model: HiRes parts, LoRA and base weights."""
    import torch

    from docread.model.adapters import read_adapter

    _, tensors = read_adapter(folder)  # LoRA from peft's file beside adapter.safetensors
    parts.load_state_dict({k[len("hires.") :]: v for k, v in tensors.items() if k.startswith("hires.")})
    params = dict(llava.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            prefix, _, name = key.partition(".")
            if prefix in ("lora", "base"):
                params[name].copy_(value.to(params[name].device, params[name].dtype))


def trim_log(path: Path, step: int) -> None:
    """Drop log lines written after `step` (by the run that was interrupted), and a half-written last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line + "\n")
    path.write_text("".join(kept), encoding="utf-8")
