"""The public benchmarks `docread bench run` / `bench score --dataset` know, in one table: for each,
how its released annotations are read, how LLaVA asks its questions, and how it is scored.
The CLI's --help and error messages list the names from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from docread.bench import choice, general
from docread.bench.datasets import Sample, read_annotations
from docread.bench.metrics import evaluate
from docread.views.prompt import SHORT_ANSWER, multiple_choice

# LLaVA-1.5's evaluation prompts (scripts/v1_5/eval/*.sh, llava/eval/model_vqa*.py): docread.views.prompt.SHORT_ANSWER
# for short-answer VQA and POPE; docread.views.prompt.MULTIPLE_CHOICE ("...Answer with the option's letter ...").

OPEN, CHOICE, YES_NO = "open", "choice", "yesno"  # how a benchmark's questions are asked and answered
Scorer = Callable[[Sequence[Sample], Mapping[str, str]], dict]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its reader, its kind of question, its scorer, and the release file it reads."""

    read: Callable[[Path], list[Sample]]
    kind: str  # OPEN (short answer), CHOICE (option letter) or YES_NO
    scorer: Scorer  # pure: (samples, predictions by id) -> {"metric", "score", "n", "missing", ...}
    files: str  # what --annotations names, and where --images points
    inline_images: bool = False  # the annotation file holds the images (no --images)


def _open(metric: str) -> Scorer:
    def scorer(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
        return evaluate(metric, {s.id: s.answers for s in samples if s.answers}, predictions).to_json()

    return scorer


DATASETS: dict[str, Benchmark] = {
    "docvqa": Benchmark(
        partial(read_annotations, dataset="docvqa"),
        OPEN,
        _open("anls"),
        "val_v1.0.json; --images: the folder holding documents/",
    ),
    "infovqa": Benchmark(
        partial(read_annotations, dataset="infovqa"),
        OPEN,
        _open("anls"),
        "infographicVQA_val_v1.0.json; --images: the infographics folder",
    ),
    "chartqa": Benchmark(
        partial(read_annotations, dataset="chartqa"),
        OPEN,
        _open("relaxed"),
        "test/test_human.json (or test_augmented.json); --images: test/png",
    ),
    "textvqa": Benchmark(
        partial(read_annotations, dataset="textvqa"),
        OPEN,
        _open("vqa"),
        "TextVQA_0.5.1_val.json; --images: train_images",
    ),
    "stvqa": Benchmark(
        general.read_stvqa,
        OPEN,
        _open("anls"),
        "train_task_3.json (or a split of it); --images: the folder holding coco-text/, ...",
    ),
    "ai2d": Benchmark(
        general.read_ai2d, CHOICE, choice.choice_accuracy, "ai2d/questions (folder or one file); --images: ai2d/images"
    ),
    "scienceqa": Benchmark(
        general.read_scienceqa,
        CHOICE,
        choice.choice_accuracy,
        "problems.json (test split, image questions); --images: the images folder (test/<pid>/)",
    ),
    "mmbench": Benchmark(
        general.read_mmbench,
        CHOICE,
        choice.circular_accuracy,
        "mmbench_dev_20230712.tsv (images inside; no --images)",
        inline_images=True,
    ),
    "pope": Benchmark(
        general.read_pope,
        YES_NO,
        choice.pope_scores,
        "coco_pope_<split>.json (one, or their folder); --images: COCO val2014",
    ),
    "hallusionbench": Benchmark(
        general.read_hallusionbench,
        YES_NO,
        choice.hallusion_scores,
        "HallusionBench.json; --images: the hallusion_bench folder",
    ),
}
NAMES = " | ".join(DATASETS)


def prompt(benchmark: Benchmark, sample: Sample) -> str:
    """What the model is asked: LLaVA-1.5's prompt for this kind of benchmark."""
    if benchmark.kind == CHOICE:
        return multiple_choice(sample.question, list(sample.options), choice.LETTERS[: len(sample.options)])
    return f"{sample.question}\n{SHORT_ANSWER}"


def score(name: str, samples: Sequence[Sample], predictions: Mapping[str, str], *, malformed: int = 0) -> dict:
    """The benchmark's scores of `predictions` (id -> generated text or letter) on `samples`."""
    result = DATASETS[name].scorer(samples, predictions)
    return {**result, "malformed": malformed}
