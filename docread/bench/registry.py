"""The public benchmarks `docread bench run` / `bench score --dataset` know, in one table: for each,
how its released annotations are read, which split is scored (the published convention by default),
how LLaVA asks its questions, and how it is scored. The CLI's --help and error messages list the
names from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from docread.bench import choice, general
from docread.bench.datasets import Sample, read_annotations
from docread.bench.metrics import evaluate
from docread.errors import UsageError
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
    splits: tuple[str, ...]  # the --split choices; the first is the default (the published convention)
    inline_images: bool = False  # the annotation file holds the images (no --images)
    split_note: str = ""  # said in the output beside the split, when the split needs a word
    split_from_file: bool = False  # one file given: its stem is the split (ChartQA's test_human.json)


def _open(metric: str) -> Scorer:
    def scorer(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
        return evaluate(metric, {s.id: s.answers for s in samples if s.answers}, predictions).to_json()

    return scorer


def _open_per_split(metric: str) -> Scorer:
    """The metric on each split present (ChartQA's test_human, test_augmented) and, as the headline,
    their mean: the usual ChartQA figure (the two halves have 1,250 questions each)."""

    def scorer(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
        whole = _open(metric)(samples, predictions)
        names = sorted({s.groups["split"] for s in samples})
        per_split = {
            name: _open(metric)([s for s in samples if s.groups["split"] == name], predictions) for name in names
        }
        scores = [result["score"] for result in per_split.values() if result["score"] is not None]
        return {
            **whole,
            "score": sum(scores) / len(scores) if scores else None,
            "per_split": {name: {"score": r["score"], "n": r["n"]} for name, r in per_split.items()},
        }

    return scorer


DATASETS: dict[str, Benchmark] = {
    "docvqa": Benchmark(
        partial(read_annotations, dataset="docvqa"),
        OPEN,
        _open("anls"),
        "val_v1.0.json; --images: the folder holding documents/",
        ("val",),
    ),
    "infovqa": Benchmark(
        partial(read_annotations, dataset="infovqa"),
        OPEN,
        _open("anls"),
        "infographicVQA_val_v1.0.json; --images: the infographics folder",
        ("val",),
    ),
    "chartqa": Benchmark(
        general.read_chartqa,
        OPEN,
        _open_per_split("relaxed"),
        "the test/ folder (test_human.json + test_augmented.json) or one of them; --images: test/png",
        general.CHARTQA_SPLITS,
        split_from_file=True,
    ),
    "textvqa": Benchmark(
        partial(read_annotations, dataset="textvqa"),
        OPEN,
        _open("vqa"),
        "TextVQA_0.5.1_val.json; --images: train_images",
        ("val",),
    ),
    "stvqa": Benchmark(
        general.read_stvqa,
        OPEN,
        _open("anls"),
        "train_task_3.json (or a split of it); --images: the folder holding coco-text/, ...",
        ("train_task_3",),
        split_note="ST-VQA's test answers are withheld (scored on the RRC server): this is train_task_3",
    ),
    "ai2d": Benchmark(
        general.read_ai2d,
        CHOICE,
        choice.choice_accuracy,
        "ai2d/questions (folder or one file), ai2d_test_ids.csv in ai2d/; --images: ai2d/images",
        general.AI2D_SPLITS,
    ),
    "scienceqa": Benchmark(
        general.read_scienceqa,
        CHOICE,
        choice.choice_accuracy,
        "problems.json (test split, image questions); --images: the images folder (test/<pid>/)",
        ("test", "val", "train"),
    ),
    "mmbench": Benchmark(
        general.read_mmbench,
        CHOICE,
        choice.circular_accuracy,
        "mmbench_dev_20230712.tsv (images inside; no --images)",
        ("dev",),
        inline_images=True,
    ),
    "pope": Benchmark(
        general.read_pope,
        YES_NO,
        choice.pope_scores,
        "coco_pope_<split>.json (one, or their folder); --images: COCO val2014",
        general.POPE_SPLITS,
    ),
    "hallusionbench": Benchmark(
        general.read_hallusionbench,
        YES_NO,
        choice.hallusion_scores,
        "HallusionBench.json; --images: the hallusion_bench folder",
        ("all",),
    ),
}
NAMES = " | ".join(DATASETS)


def prompt(benchmark: Benchmark, sample: Sample) -> str:
    """What the model is asked: LLaVA-1.5's prompt for this kind of benchmark."""
    if benchmark.kind == CHOICE:
        return multiple_choice(sample.question, list(sample.options), choice.LETTERS[: len(sample.options)])
    return f"{sample.question}\n{SHORT_ANSWER}"


def resolve_split(name: str, annotations: Path, split: str | None) -> str:
    """The split `--split` names (None: the benchmark's default), checked; one ChartQA file is its own split."""
    benchmark = DATASETS[name]
    if split is not None and split not in benchmark.splits:
        raise UsageError(f"--split {split!r}: {name} has {', '.join(benchmark.splits)}")
    if benchmark.split_from_file and Path(annotations).is_file():
        stem = Path(annotations).stem
        if split not in (None, stem):
            raise UsageError(f"--split {split}: {annotations} is the {stem} split; pass its folder to choose")
        return stem
    return split or benchmark.splits[0]


def read(name: str, annotations: Path, split: str) -> list[Sample]:
    """The questions of `split` (see `resolve_split`) of benchmark `name`'s release at `annotations`."""
    benchmark = DATASETS[name]
    return benchmark.read(annotations, split) if len(benchmark.splits) > 1 else benchmark.read(annotations)


def score(
    name: str,
    samples: Sequence[Sample],
    predictions: Mapping[str, str],
    *,
    malformed: int = 0,
    split: str | None = None,
    mc_parser: str = "llava",
) -> dict:
    """The benchmark's scores of `predictions` (id -> generated text or letter) on `samples` of `split`
    (named in the result: None, the default); multiple choice read with `mc_parser` (choice.MC_PARSERS)."""
    benchmark = DATASETS[name]
    scorer = partial(benchmark.scorer, parser=mc_parser) if benchmark.kind == CHOICE else benchmark.scorer
    where = {"split": split or benchmark.splits[0]}
    if benchmark.split_note:
        where["split_note"] = benchmark.split_note
    return {**scorer(samples, predictions), **where, "malformed": malformed}


def first_questions(samples: list, limit: int | None) -> list:
    """The samples of the first `limit` questions: all rotations of an MMBench question count as one."""
    if limit is None:
        return samples
    kept: list = []
    seen: set[str] = set()
    for sample in samples:
        question = sample.groups.get("question", sample.id)
        if question not in seen and len(seen) == limit:
            break
        seen.add(question)
        kept.append(sample)
    return kept
