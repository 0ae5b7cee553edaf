"""The document-QA metrics, each as its benchmark's official evaluation defines it.

- `anls`: Average Normalized Levenshtein Similarity, tau = 0.5 (DocVQA, InfographicVQA,
  ST-VQA; Biten et al. 2019), exactly as the RRC evaluation script: per question the best
  over gold answers of 1 - NL, kept when it is at least tau, else 0; the edit distance is
  between the strings lower-cased, stripped and whitespace-collapsed.
- `relaxed`: ChartQA's relaxed accuracy (pix2struct's `relaxed_correctness`): numbers
  (a trailing "%" divides by 100) within 5% of a non-zero gold number are right;
  everything else must match exactly, ignoring case.
- `vqa`: VQA accuracy with the EvalAI answer normalisation that TextVQA's evaluation
  uses: min(#matching humans / 3, 1), averaged over the ten leave-one-out subsets.
- `exact`: exact match after lower-casing, stripping and collapsing whitespace.

Each metric maps (prediction, gold answers) to a score in [0, 1].
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

ANLS_THRESHOLD = 0.5  # tau: answers less similar than this are wrong, not partly right
RELAXED_TOLERANCE = 0.05  # ChartQA: 5% relative error allowed on numbers
VQA_HUMANS_FOR_FULL = 3  # VQA: an answer three annotators gave is fully right


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """1 - NL against the closest gold answer, or 0 when that is below `threshold`.

    As the RRC DocVQA/InfographicVQA scorer computes it: the distance is taken between the
    normalised strings, but divided by the longer *raw* string (`len(s.upper())`), and a
    similarity of exactly `threshold` is kept ("12" against "13" scores 0.5).
    """
    if not answers:
        return 0.0
    pred = _collapse(prediction)
    distances = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))  # the official script's denominator
        distances.append(levenshtein(_collapse(answer), pred) / length if length else 0.0)
    similarity = 1 - min(distances)
    return similarity if similarity >= threshold else 0.0


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correct(prediction: str, answer: str, tolerance: float = RELAXED_TOLERANCE) -> bool:
    """pix2struct's `relaxed_correctness(target=answer, prediction)`, the prediction stripped.

    Within `tolerance` relative error when both parse as numbers and the gold one is not 0;
    otherwise equal ignoring case. Only the generated text is stripped (as the ChartQA
    evaluations of Qwen-VL/InternVL do before calling it); the gold label is used as it is.
    """
    prediction = prediction.strip()
    pred_value, gold_value = _to_float(prediction), _to_float(answer)
    if pred_value is not None and gold_value:  # a gold 0 (or 0%) must match as text, as in the official code
        return abs(pred_value - gold_value) / abs(gold_value) <= tolerance
    return prediction.lower() == answer.lower()


def relaxed(prediction: str, answers: Sequence[str]) -> float:
    return float(any(relaxed_correct(prediction, answer) for answer in answers))


def exact(prediction: str, answers: Sequence[str]) -> float:
    pred = _collapse(prediction)
    return float(any(pred == _collapse(answer) for answer in answers))


# -- VQA accuracy ---------------------------------------------------------------------------
# The EvalAI answer processor (VQA / TextVQA evaluation): the same tables, the same order of steps.
_CONTRACTIONS = dict(
    pair.split("=")
    for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've
oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've
shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've somebody'dve=somebody'd've
somebodyll=somebody'll somebodys=somebody's someoned=someone'd someoned've=someone'd've
someone'dve=someone'd've someonell=someone'll someones=someone's somethingd=something'd
somethingd've=something'd've something'dve=something'd've somethingll=something'll thats=that's
thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're
whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd
whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're
whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've
yall=y'all yall'll=y'all'll y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've
y'all'dve=y'all'd've youd=you'd youd've=you'd've you'dve=you'd've youll=you'll youre=you're youve=you've
""".split()
)
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # (sic) the official pattern: drops periods not before a digit
_PERIOD_COUNT = 32  # (sic) EvalAI passes re.UNICODE (= 32) as sub()'s count: at most 32 periods go
_DIGIT_COMMA = re.compile(r"(\d)(\,)(\d)")


def vqa_normalize(answer: str) -> str:
    """EvalAI's processing: lower-case, punctuation, number words to digits, articles, contractions."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    original = text
    for mark in _PUNCTUATION:  # glued marks ("t-shirt") become spaces, spaced ones vanish
        spaced = f"{mark} " in original or f" {mark}" in original or _DIGIT_COMMA.search(original) is not None
        text = text.replace(mark, "" if spaced else " ")
    text = _PERIOD.sub("", text, count=_PERIOD_COUNT)
    words = [_NUMBERS.get(word, word) for word in text.split()]
    words = [_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(words)


def vqa(prediction: str, answers: Sequence[str]) -> float:
    """min(#other humans who gave it / 3, 1), averaged over leaving out each human in turn.

    With a single gold answer there is no one left to agree: it is scored as a match.
    """
    pred = vqa_normalize(prediction)
    golds = [vqa_normalize(a) for a in answers]
    if len(golds) < 2:
        return float(pred in golds)
    matches = golds.count(pred)
    # Leaving out a human who gave `pred` leaves matches - 1 others; anyone else leaves all of them.
    scores = [min(1.0, (matches - (gold == pred)) / VQA_HUMANS_FOR_FULL) for gold in golds]
    return sum(scores) / len(scores)


METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "anls": anls,
    "relaxed": relaxed,
    "vqa": vqa,
    "exact": exact,
}


@dataclass(frozen=True)
class MetricScore:
    """A metric over a prediction file; questions without a prediction score 0."""

    metric: str
    score: float | None  # mean over the gold questions (None when there are none)
    n: int  # gold questions
    missing: int  # gold questions without a prediction
    malformed: int  # prediction records that could not be read
    extra: int  # predictions for ids not in the gold file (ignored)

    def to_json(self) -> dict:
        return asdict(self)


def evaluate(
    metric: str, gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str], *, malformed: int = 0
) -> MetricScore:
    """Score predictions (id -> answer) against gold answers (id -> answers) with one metric."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: choose {', '.join(METRICS)}")
    function = METRICS[metric]
    scores = [function(predictions[key], answers) if key in predictions else 0.0 for key, answers in gold.items()]
    return MetricScore(
        metric=metric,
        score=sum(scores) / len(scores) if scores else None,
        n=len(gold),
        missing=sum(key not in predictions for key in gold),
        malformed=malformed,
        extra=sum(key not in gold for key in predictions),
    )
