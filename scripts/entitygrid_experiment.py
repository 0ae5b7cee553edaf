"""Does `docread train` learn, and what does the SliceRestore Adapter do for cut entities?

A research driver: not part of CI nor of the package. On a CPU, trains a ~0.6M-parameter llava-hf
model from scratch (`--full`) on generated EntityGrid-QA (S=56: a 112x112 canvas cut into 2x2 tiles),
on recognition alone, half of it asked open-ended (the entity's name as the answer), then scores the
held-out questions two ways, both 4-way multiple choice (chance 25%):
  names    the likeliest of the 4 option names after the open-ended question (`DocReader.choose`)
  letters  the benchmark's own prompt, the likeliest option letter (`docread bench entitygrid run`)
Variants, all at the same step budget:
  main         global view + tiles, SRA trained (the method)
  tiles-sra    tiles alone (no global view), SRA trained
  tiles-nosra  tiles alone, SRA left at its neutral init (an exact identity)
Every training is a plain `docread train` command (printed), so each row can be rerun alone.

    python scripts/entitygrid_experiment.py --out /tmp/egx --steps 2400 --variants main
    python scripts/entitygrid_experiment.py --out /tmp/egx --steps 2400 --variants tiles-sra,tiles-nosra --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZE = 56  # S: 112 x 112 canvases, 2 x 2 tiles of 56 px
VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=SIZE,
    patch_size=14,
    projection_dim=64,
)  # 4 x 4 patches a view, features of layer 1
TEXT = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    initializer_range=0.02,
)
VOCAB = 600  # BPE trained on the benchmark's own text: entity names are 1-3 tokens
VARIANTS = {
    "main": [],
    "tiles-sra": ["--no-global-view"],
    "tiles-nosra": ["--no-global-view", "--no-sra"],
}


def prepare(out: Path, n_train: int, n_test: int) -> tuple[Path, Path, Path]:
    """Train and test sets (different seeds) and the random checkpoint; kept between invocations."""
    from docread.bench.entitygrid import generate
    from docread.formats.entitygrid import prompt, read_questions
    from docread.model.presets import LLAVA_PROMPT
    from docread.testing import build_tiny_llava, build_tokenizer
    from docread.views.processor import PromptTemplate
    from docread.views.prompt import SHORT_ANSWER

    train, test, model = out / "train", out / "test", out / "model"
    for folder, n, seed in ((train, n_train, 1), (test, n_test, 2)):
        if not (folder / "questions.jsonl").is_file():
            for _ in generate(folder, n=n, seed=seed, size=SIZE):
                pass
    if not (model / "config.json").is_file():
        questions = read_questions(train)
        template = PromptTemplate(LLAVA_PROMPT)
        corpus = [" ".join(template.split(prompt(q))) + " " + " ".join(q.options) for q in questions]
        corpus += [f"{q.question}\n{SHORT_ANSWER}" for q in questions[:50]]
        build_tiny_llava(model, seed=0, vision=VISION, text=TEXT, tokenizer=build_tokenizer(corpus, VOCAB))
    return train, test, model


def command(
    model: Path, train: Path, test: Path, run: Path, steps: int, seed: int, variant: str, batch: int, open_ended: float
) -> list[str]:
    return [
        "docread",
        "train",
        "--model",
        str(model),
        "--data",
        str(train / "questions.jsonl"),
        "--full",
        "--tasks",
        "recognition",
        "--open-ended",
        str(open_ended),
        "-o",
        str(run),
        "--max-steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--lr",
        "1e-3",
        "--seed",
        str(seed),
        "--device",
        "cpu",
        "--log-every",
        "50",
        "--save-every",
        "0",
        "--eval",
        str(test / "questions.jsonl"),
        *VARIANTS[variant],
    ]


def _center_edge(result, task: str) -> dict:
    """accuracy_center / accuracy_edge / discrepancy (docs/method.md#entitygrid), a_i: the task's accuracy at cell i."""
    from docread.formats.entitygrid import CENTER_CELLS, EDGE_CELLS

    cells = result.per_task_cell[task]
    center = sum(cells[str(c)] for c in CENTER_CELLS) / len(CENTER_CELLS)
    edge = sum(cells[str(c)] for c in EDGE_CELLS) / len(EDGE_CELLS)
    return {
        "accuracy": result.per_task[task],
        "accuracy_center": center,
        "accuracy_edge": edge,
        "discrepancy": center - edge,
    }


def name_predictions(model: Path, run: Path, test: Path, global_view: bool) -> dict[str, str]:
    """Recognition as 4-way choice among the option names, asked as in training's open-ended items."""
    import docread
    from docread.formats.entitygrid import LETTERS, read_questions
    from docread.views.prompt import SHORT_ANSWER

    reader = docread.load(str(model), adapter=run, device="cpu", quant="none", global_view=global_view)
    predictions = {}
    for q in read_questions(test):
        if q.task == "recognition":
            best, _ = reader.choose(str(test / q.image), f"{q.question}\n{SHORT_ANSWER}", list(q.options))
            predictions[q.id] = LETTERS[best]
    return predictions


def scores(model: Path, test: Path, run: Path, global_view: bool) -> dict:
    from docread.bench.entitygrid import score
    from docread.formats.entitygrid import read_questions

    questions = read_questions(test)
    recognition = [q for q in questions if q.task == "recognition"]
    lines = (run / "eval-predictions.jsonl").read_text().splitlines()
    letters = {r["id"]: r["prediction"] for r in map(json.loads, lines)}
    by_letter = score(questions, letters)
    by_name = score(recognition, name_predictions(model, run, test, global_view))
    return {
        "names": _center_edge(by_name, "recognition"),
        "letters": _center_edge(by_letter, "recognition"),
        "letters_all_tasks": {
            "accuracy": by_letter.accuracy,
            "accuracy_center": by_letter.accuracy_center,
            "accuracy_edge": by_letter.accuracy_edge,
            "discrepancy": by_letter.discrepancy,
        },
        "n_recognition": len(recognition),
        "n": len(questions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--open-ended", type=float, default=0.5)
    parser.add_argument("--variants", default="main")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=900)
    args = parser.parse_args()
    train, test, model = prepare(args.out, args.n_train, args.n_test)
    results_file = args.out / "results.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")  # 1 thread: 2 shared cores
    import torch

    torch.set_num_threads(1)
    for variant in args.variants.split(","):
        for seed in map(int, args.seeds.split(",")):
            run = args.out / f"{variant}-seed{seed}"
            cmd = command(model, train, test, run, args.steps, seed, variant, args.batch_size, args.open_ended)
            print("$ " + " ".join(cmd), flush=True)
            began = time.perf_counter()
            subprocess.run([sys.executable, "-m", *cmd[:1], *cmd[1:]], env=env, check=True)
            minutes = round((time.perf_counter() - began) / 60, 2)
            record = {
                "variant": variant,
                "seed": seed,
                "steps": args.steps,
                "train_minutes": minutes,
                **scores(model, test, run, global_view="--no-global-view" not in VARIANTS[variant]),
            }
            print(json.dumps(record), flush=True)
            with open(results_file, "a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
