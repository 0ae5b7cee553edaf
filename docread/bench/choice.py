"""Answer parsing and scores of the general benchmarks: multiple choice (AI2D, ScienceQA, MMBench's
circular evaluation) and yes/no hallucination probes (POPE, HallusionBench).

Every scorer maps (samples, predictions id -> text) to one JSON-able dict with the headline
`metric`/`score`, `n`, `missing` (questions without a prediction, counted wrong) and `extra`,
plus the benchmark's own breakdown. Nothing here needs a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from docread.bench.datasets import Sample

LETTERS = "ABCDEFGHIJ"  # option letters in the order LLaVA's prompts list options (ScienceQA has up to 5)
_ANSWER_IS_PERIOD = re.compile(r"The answer is ([A-E])\.")
_ANSWER_IS = re.compile(r"The answer is ([A-E])")


def parse_letter(text: str, n_options: int) -> str | None:
    """The option letter in a generated answer, as LLaVA's `llava/eval/eval_science_qa.py` reads it.

    Newlines become ". "; then the stripped text is exactly a letter, or starts "X. ", or says
    "The answer is X." (else "The answer is X"). A letter beyond the question's options, or no
    letter, is None: LLaVA scores that as wrong (pred_idx -1), as do we.
    """
    options = LETTERS[:n_options]
    text = text.replace("\n", ". ")
    if text.strip() and text.strip() in options:
        letter = text.strip()
    elif len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        letter = text[0]
    else:
        match = _ANSWER_IS_PERIOD.search(text) or _ANSWER_IS.search(text)
        letter = match.group(1) if match else None
    return letter if letter is not None and letter in options else None


def parse_yes_no(text: str) -> str:
    """POPE's reading of a free answer (POPE's evaluate.py, copied by LLaVA's eval_pope.py): keep the
    first sentence, drop commas, split on spaces; "no" if a word is `No`, `no` or `not`, else "yes"."""
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _counts(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    ids = {s.id for s in samples}
    return {
        "n": len(samples),
        "missing": sum(s.id not in predictions for s in samples),
        "extra": sum(key not in ids for key in predictions),
    }


def _letter_right(sample: Sample, predictions: Mapping[str, str]) -> bool:
    if sample.id not in predictions:
        return False
    return parse_letter(predictions[sample.id], len(sample.options)) == sample.answers[0]


def choice_accuracy(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    """AI2D / ScienceQA: the share of questions whose parsed letter is the gold one."""
    unparsed = sum(s.id in predictions and parse_letter(predictions[s.id], len(s.options)) is None for s in samples)
    return {
        "metric": "accuracy",
        "score": _mean(_letter_right(s, predictions) for s in samples),
        **_counts(samples, predictions),
        "unparsed": unparsed,
    }


def circular_accuracy(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    """MMBench's CircularEval: a question with N options was asked N times, its options rotated one
    step each time; it is right only if every rotation is. Also per category, and the plain
    accuracy of the first pass (options in their original order) for comparison."""
    passes: dict[str, list[bool]] = {}
    category: dict[str, str] = {}
    for sample in samples:
        question = sample.groups["question"]
        passes.setdefault(question, []).append(_letter_right(sample, predictions))
        category[question] = sample.groups.get("category", "")
    right = {question: all(results) for question, results in passes.items()}
    per_category = {
        name: _mean(right[q] for q in right if category[q] == name) for name in sorted(set(category.values())) if name
    }
    first = [s for s in samples if s.groups.get("round") == "0"]
    return {
        "metric": "circular_accuracy",
        "score": _mean(right.values()),
        "questions": len(right),
        **_counts(samples, predictions),
        "per_category": per_category,
        "first_pass_accuracy": _mean(_letter_right(s, predictions) for s in first),
    }


def _binary_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict:
    """POPE's table with "yes" as the positive class; None where a ratio has no denominator."""
    pairs = list(zip(gold, predicted))
    tp = sum(g == "yes" and p == "yes" for g, p in pairs)
    fp = sum(g == "no" and p == "yes" for g, p in pairs)
    tn = sum(g == "no" and p == "no" for g, p in pairs)
    fn = sum(g == "yes" and p == "no" for g, p in pairs)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(pairs) if pairs else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / len(pairs) if pairs else None,
        "n": len(pairs),
    }


def _opposite(answer: str) -> str:
    return "no" if answer == "yes" else "yes"


def pope_scores(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio per split (adversarial, popular, random).

    The headline `score` is the mean F1 over the splits present (what LLaVA-1.5 reports). A question
    without a prediction counts as answered wrong (the opposite of its label)."""
    splits: dict[str, tuple[list[str], list[str]]] = {}
    for sample in samples:
        gold = sample.answers[0]
        predicted = parse_yes_no(predictions[sample.id]) if sample.id in predictions else _opposite(gold)
        golds, predicted_list = splits.setdefault(sample.groups["split"], ([], []))
        golds.append(gold)
        predicted_list.append(predicted)
    per_split = {split: _binary_scores(*splits[split]) for split in sorted(splits)}
    f1s = [s["f1"] for s in per_split.values() if s["f1"] is not None]
    return {"metric": "f1", "score": _mean(f1s), **_counts(samples, predictions), "per_split": per_split}


def hallusion_scores(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    """HallusionBench's three accuracies, grouped as its `utils.py` groups them:

    - aAcc (`get_eval_all`): share of questions answered right;
    - fAcc (`get_eval_fig`): share of figures (category, subcategory, set_id, figure_id) whose
      questions are all right; VS questions without a figure (figure_id 0) form no figure;
    - qAcc (`get_eval_pair_all`): share of questions (category, subcategory, set_id, question_id)
      right on every figure they were asked about, the no-figure version included.
    Right means the yes/no read from the answer (POPE's parser) equals gt_answer; the authors judge
    correctness with GPT-4 instead (which can also say "unclear"). The headline `score` is aAcc.
    """
    right = {s.id: s.id in predictions and parse_yes_no(predictions[s.id]) == s.answers[0] for s in samples}
    figures: dict[tuple, list[bool]] = {}
    questions: dict[tuple, list[bool]] = {}
    for s in samples:
        g = s.groups
        if not (g["category"] == "VS" and g["figure_id"] == "0"):
            figures.setdefault((g["category"], g["subcategory"], g["set_id"], g["figure_id"]), []).append(right[s.id])
        questions.setdefault((g["category"], g["subcategory"], g["set_id"], g["question_id"]), []).append(right[s.id])
    a_acc = _mean(right.values())
    return {
        "metric": "aAcc",
        "score": a_acc,
        "aAcc": a_acc,
        "fAcc": _mean(all(v) for v in figures.values()),
        "qAcc": _mean(all(v) for v in questions.values()),
        "figures": len(figures),
        "question_pairs": len(questions),
        **_counts(samples, predictions),
    }
