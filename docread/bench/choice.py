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
LLAVA_OPTIONS = ["A", "B", "C", "D", "E"]  # eval_science_qa.py's --options default: a list, so "AB" is no option
_LLAVA_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # (sic) "." is any character: "The answer is C," counts


def parse_letter(text: str, n_options: int) -> str | None:
    """The option letter in a generated answer, exactly as LLaVA-1.5's `llava/eval/eval_science_qa.py`
    reads it: the text is one of the options (list membership: "AB" is not "A"), or starts "X. ", or
    holds exactly one "The answer is X" followed by any character; else FAILED. A letter beyond the
    question's options (`get_pred_idx`: -1), or FAILED, is None: wrong, and counted as unparsed.
    Nothing is stripped or rewritten (LLaVA strips the generated text before writing it, as docread
    does; a prediction file is read as written).
    """
    options = LLAVA_OPTIONS[:n_options]
    if text in LLAVA_OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in LLAVA_OPTIONS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = _LLAVA_ANSWER_IS.findall(text)
        letter = found[0] if len(found) == 1 else None
    return letter if letter in options else None


_VLMEVALKIT_SEPARATORS = ".()[],:;!*#{}"  # can_infer_option turns each into a space before splitting
_VLMEVALKIT_REFUSALS = (  # can_infer_option answers "Z" (no option) when the text holds one of these
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def parse_option(text: str, options: Sequence[str]) -> str | None:
    """The option letter as VLMEvalKit's rule-based `can_infer` finds it (vlmeval/utils/matching_util.py,
    without its LLM judge and with VERBOSE off): `can_infer_option` first — separators become spaces and
    exactly one option letter must stand alone among the words ("(B)", "Option C", "C: cat") — then
    `can_infer_text`: exactly one option's text occurs in the lower-cased answer. A refusal ("Z") or
    neither is None.
    """
    letters = LETTERS[: len(options)]
    if any(refusal in text for refusal in _VLMEVALKIT_REFUSALS):
        return None  # "Z": the model declined
    spaced = text
    for mark in _VLMEVALKIT_SEPARATORS:
        spaced = spaced.replace(mark, " ")
    words = [word.strip() for word in spaced.split()]
    standing = [letter for letter in letters if letter in words]
    if len(standing) == 1:
        return standing[0]
    if not standing and "Z" in words:
        return None  # can_infer_option's "Z" (none of them), which can_infer returns as it is
    lowered = text.lower()
    matching = [letter for letter, option in zip(letters, options) if str(option).lower() in lowered]
    return matching[0] if len(matching) == 1 else None


MC_PARSERS = ("llava", "vlmevalkit")  # --mc-parser: how a generated multiple-choice answer is read


def read_choice(text: str, sample: Sample, parser: str = "llava") -> str | None:
    """The option letter `parser` reads from `text` for `sample` (None: unparsed)."""
    if parser == "vlmevalkit":
        return parse_option(text, sample.options)
    if parser != "llava":
        raise ValueError(f"mc parser {parser!r}: choose {', '.join(MC_PARSERS)}")
    return parse_letter(text, len(sample.options))


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


def _letter_right(sample: Sample, predictions: Mapping[str, str], parser: str) -> bool:
    if sample.id not in predictions:
        return False
    return read_choice(predictions[sample.id], sample, parser) == sample.answers[0]


def choice_accuracy(samples: Sequence[Sample], predictions: Mapping[str, str], *, parser: str = "llava") -> dict:
    """AI2D / ScienceQA: the share of questions whose parsed letter is the gold one; `unparsed`: the
    predictions from which `parser` reads no option letter (counted wrong)."""
    unparsed = sum(s.id in predictions and read_choice(predictions[s.id], s, parser) is None for s in samples)
    return {
        "metric": "accuracy",
        "score": _mean(_letter_right(s, predictions, parser) for s in samples),
        **_counts(samples, predictions),
        "unparsed": unparsed,
        "mc_parser": parser,
    }


def circular_accuracy(samples: Sequence[Sample], predictions: Mapping[str, str], *, parser: str = "llava") -> dict:
    """MMBench's CircularEval: a question with N options was asked N times, its options rotated one
    step each time; it is right only if every rotation is. Also per category, and the plain
    accuracy of the first pass (options in their original order) for comparison."""
    passes: dict[str, list[bool]] = {}
    category: dict[str, str] = {}
    for sample in samples:
        question = sample.groups["question"]
        passes.setdefault(question, []).append(_letter_right(sample, predictions, parser))
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
        "unparsed": sum(s.id in predictions and read_choice(predictions[s.id], s, parser) is None for s in samples),
        "mc_parser": parser,
        "per_category": per_category,
        "first_pass_accuracy": _mean(_letter_right(s, predictions, parser) for s in first),
    }


def _binary_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict:
    """POPE's table with "yes" as the positive class. A ratio without a denominator is 0, and so F1
    when precision + recall is 0, as VLMEvalKit's and lmms-eval's POPE scorers have it: a split
    with no "yes" (gold or predicted) scores F1 0, not nothing."""
    pairs = list(zip(gold, predicted))
    tp = sum(g == "yes" and p == "yes" for g, p in pairs)
    fp = sum(g == "no" and p == "yes" for g, p in pairs)
    tn = sum(g == "no" and p == "no" for g, p in pairs)
    fn = sum(g == "yes" and p == "no" for g, p in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "accuracy": (tp + tn) / len(pairs) if pairs else None,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": (tp + fp) / len(pairs) if pairs else None,
        "n": len(pairs),
    }


def _opposite(answer: str) -> str:
    return "no" if answer == "yes" else "yes"


def pope_scores(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    """Accuracy, precision, recall, F1 and yes-ratio per split (adversarial, popular, random).

    The headline `score` is the mean F1 over the splits present (what LLaVA-1.5 reports), a split's
    F1 0 included. A question without a prediction counts as answered wrong (the opposite of its label)."""
    splits: dict[str, tuple[list[str], list[str]]] = {}
    for sample in samples:
        gold = sample.answers[0]
        predicted = parse_yes_no(predictions[sample.id]) if sample.id in predictions else _opposite(gold)
        golds, predicted_list = splits.setdefault(sample.groups["split"], ([], []))
        golds.append(gold)
        predicted_list.append(predicted)
    per_split = {split: _binary_scores(*splits[split]) for split in sorted(splits)}
    f1s = [s["f1"] for s in per_split.values()]
    return {"metric": "f1", "score": _mean(f1s), **_counts(samples, predictions), "per_split": per_split}


_WORD_EDGES = ".,!?;:\"'()"  # stripped from a word's ends before looking for yes / no / not


def hallusion_judgement(text: str, gold: str) -> str:
    """The verdict HallusionBench's GPT judge gives, read without one: "1" correct, "0" incorrect,
    "2" unclear. Unclear: no word of the answer is yes, no or not; otherwise POPE's parser reads
    yes/no and it is compared with the gold answer."""
    words = {word.strip(_WORD_EDGES).lower() for word in text.split()}
    if not words & {"yes", "no", "not"}:
        return "2"
    return "1" if parse_yes_no(text) == gold else "0"


def hallusion_correct(sample: Sample, predictions: Mapping[str, str]) -> bool:
    """`assign_correctness` of the authors' utils.py: right when judged correct; on a VS question asked
    without a figure (figure_id 0), "unclear" is right too (the model may not know without it)."""
    if sample.id not in predictions:
        return False
    verdict = hallusion_judgement(predictions[sample.id], sample.answers[0])
    no_figure = sample.groups["category"] == "VS" and sample.groups["figure_id"] == "0"
    return verdict == "1" or (no_figure and verdict == "2")


def hallusion_scores(samples: Sequence[Sample], predictions: Mapping[str, str]) -> dict:
    """HallusionBench's three accuracies, grouped as its `utils.py` groups them:

    - aAcc (`get_eval_all`): share of questions answered right;
    - fAcc (`get_eval_fig`): share of figures (category, subcategory, set_id, figure_id) whose
      questions are all right; VS questions without a figure (figure_id 0) form no figure;
    - qAcc (`get_eval_pair_all`): share of questions (category, subcategory, set_id, question_id)
      right on every figure they were asked about, the no-figure version (asked text-only) included.
    Right is `hallusion_correct` (the authors' `assign_correctness` over `hallusion_judgement`, which
    stands in for their GPT-4 judge). The headline `score` is aAcc.
    """
    right = {s.id: hallusion_correct(s, predictions) for s in samples}
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
