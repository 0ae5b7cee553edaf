"""docread's metrics agree with literal transcriptions of the official scorers on seeded random inputs.

Each `official_*` function below is a TRANSCRIPTION of a published scorer, kept as close to the
source as Python allows (names, order of operations, quirks), so that a disagreement points at
docread. They are test oracles only; docread's code never imports them.
"""

import random
import re

import pytest

from docread.bench.metrics import _CONTRACTIONS, anls, relaxed_correct, vqa, vqa_normalize

PAIRS = 10_000  # normalisation and ANLS: cheap per pair
ACCURACY_PAIRS = 2_000  # the official accuracy loop is slow; its inputs are drawn from a small pool


# ---- TRANSCRIPTION: RRC DocVQA / InfographicVQA evaluation script (evaluate_method, ANLS) ----------
# Source: the Robust Reading Competition's DocVQA task-1 script (as copied in e.g. the MP-DocVQA
# and InfographicVQA evaluation code): per question,
#   gt_answer = ' '.join(answer.strip().lower().split()); det_answer likewise;
#   dist = levenshtein_distance(gt_answer, det_answer)
#   length = max(len(answer.upper()), len(detObject['answer'].upper()))
#   values.append(0.0 if length == 0 else float(dist) / float(length))
#   question_result = 1 - min(values); if question_result < threshold: question_result = 0
def official_levenshtein_distance(s1, s2):
    if len(s1) > len(s2):
        s1, s2 = s2, s1
    distances = range(len(s1) + 1)
    for i2, c2 in enumerate(s2):
        distances_ = [i2 + 1]
        for i1, c1 in enumerate(s1):
            if c1 == c2:
                distances_.append(distances[i1])
            else:
                distances_.append(1 + min((distances[i1], distances[i1 + 1], distances_[-1])))
        distances = distances_
    return distances[-1]


def official_anls(gt_answers, det, anls_threshold=0.5):
    values = []
    for answer in gt_answers:
        gt_answer = " ".join(answer.strip().lower().split())
        det_answer = " ".join(det.strip().lower().split())
        dist = official_levenshtein_distance(gt_answer, det_answer)
        length = max(len(answer.upper()), len(det.upper()))
        values.append(0.0 if length == 0 else float(dist) / float(length))
    question_result = 1 - min(values)
    if question_result < anls_threshold:
        question_result = 0
    return question_result


# ---- end of transcription --------------------------------------------------------------------------


# ---- TRANSCRIPTION: pix2struct/metrics.py relaxed_correctness (ChartQA) -----------------------------
def official_relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    def _to_float(text: str) -> float | None:
        try:
            if text.endswith("%"):
                # Convert percentages to floats.
                return float(text.rstrip("%")) / 100.0
            else:
                return float(text)
        except ValueError:
            return None

    prediction_float = _to_float(prediction)
    target_float = _to_float(target)
    if prediction_float is not None and target_float:
        relative_change = abs(prediction_float - target_float) / abs(target_float)
        return relative_change <= max_relative_change
    else:
        return prediction.lower() == target.lower()


# ---- end of transcription --------------------------------------------------------------------------


# ---- TRANSCRIPTION: EvalAIAnswerProcessor + TextVQAAccuracyEvaluator (LLaVA's llava/eval/m4c_evaluator.py)
# The CONTRACTIONS table is docread's (a data table, checked entry by entry when it was written);
# everything else is the procedure as published.
class OfficialEvalAIAnswerProcessor:
    CONTRACTIONS = _CONTRACTIONS
    NUMBER_MAP = {
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
    ARTICLES = ["a", "an", "the"]
    PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
    COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
    PUNCTUATIONS = [
        ";",
        r"/",
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
    ]

    def word_tokenize(self, word):
        word = word.lower()
        word = word.replace(",", "").replace("?", "").replace("'s", " 's")
        return word.strip()

    def process_punctuation(self, in_text):
        out_text = in_text
        for p in self.PUNCTUATIONS:
            if (p + " " in in_text or " " + p in in_text) or (re.search(self.COMMA_STRIP, in_text) is not None):
                out_text = out_text.replace(p, "")
            else:
                out_text = out_text.replace(p, " ")
        out_text = self.PERIOD_STRIP.sub("", out_text, re.UNICODE)
        return out_text

    def process_digit_article(self, in_text):
        out_text = []
        temp_text = in_text.lower().split()
        for word in temp_text:
            word = self.NUMBER_MAP.setdefault(word, word)
            if word not in self.ARTICLES:
                out_text.append(word)
            else:
                pass
        for word_id, word in enumerate(out_text):
            if word in self.CONTRACTIONS:
                out_text[word_id] = self.CONTRACTIONS[word]
        out_text = " ".join(out_text)
        return out_text

    def __call__(self, item):
        item = self.word_tokenize(item)
        item = item.replace("\n", " ").replace("\t", " ").strip()
        item = self.process_punctuation(item)
        item = self.process_digit_article(item)
        return item


def official_textvqa_score(pred_answer, raw_answers):
    answer_processor = OfficialEvalAIAnswerProcessor()
    answers = [answer_processor(a) for a in raw_answers]
    gt_answers = list(enumerate(answers))
    unique_answers = set(answers)
    unique_answer_scores = {}
    for unique_answer in unique_answers:
        accs = []
        for gt_answer in gt_answers:
            other_answers = [item for item in gt_answers if item != gt_answer]
            matching_answers = [item for item in other_answers if item[1] == unique_answer]
            acc = min(1, float(len(matching_answers)) / 3)
            accs.append(acc)
        unique_answer_scores[unique_answer] = sum(accs) / len(accs)
    return unique_answer_scores.get(answer_processor(pred_answer), 0.0)


# ---- end of transcription --------------------------------------------------------------------------


def _text(rng: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def test_anls_equals_the_official_script_on_random_pairs():
    rng = random.Random(0)
    alphabet = "abcAB 12\tß"  # few symbols, so many pairs land near the threshold; ß upper-cases to two letters
    for _ in range(PAIRS):
        golds = [_text(rng, alphabet, 6) for _ in range(rng.randint(1, 3))]
        prediction = _text(rng, alphabet, 6)
        assert anls(prediction, golds) == official_anls(golds, prediction), (prediction, golds)


def test_anls_hits_the_threshold_and_both_sides_of_it_in_the_random_pairs():
    rng = random.Random(0)
    scores = set()
    for _ in range(2000):
        golds = [_text(rng, "abcAB 12\tß", 6) for _ in range(rng.randint(1, 3))]
        scores.add(anls(_text(rng, "abcAB 12\tß", 6), golds))
    assert {0.0, 0.5, 1.0} <= scores and any(0.5 < s < 1 for s in scores)


def _number_or_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:
        value = rng.choice([0, 1, 10, 12.5, 100, -3]) * rng.choice([1, 0.96, 0.95, 0.949, 1.05, 1.051, 1.2])
        text = rng.choice([f"{value}", f"{value:.2f}", f"{value:g}", f"{value:g}%", f"{value / 100:g}"])
    else:
        text = rng.choice(["yes", "Yes", "no", "five", "1,000", "nan", "inf", "%", "0%", "", "12 %"])
    return rng.choice(["", " ", "\n"]) + text + rng.choice(["", " ", "  "])


def test_relaxed_correctness_equals_pix2struct_on_random_pairs():
    rng = random.Random(1)
    for _ in range(PAIRS):
        prediction, target = _number_or_text(rng), _number_or_text(rng).strip()
        assert relaxed_correct(prediction, target) == official_relaxed_correctness(target, prediction.strip()), (
            prediction,
            target,
        )


VQA_WORDS = [
    "the",
    "a",
    "two",
    "none",
    "dont",
    "isnt",
    "coca-cola",
    "t-shirt",
    "3.5",
    "end.",
    "1,000",
    "john's",
    "yes!",
    "(red)",
    "what?",
    "a/b",
    "x - y",
    "\t",
    "\n",
    "..",
    "Ten",
    "it's",
    "'s",
    '"q"',
]


def _vqa_text(rng: random.Random) -> str:
    return rng.choice(["", " "]).join(rng.choice(VQA_WORDS) for _ in range(rng.randint(0, 4)))


@pytest.mark.slow
def test_vqa_accuracy_equals_evalai_on_random_answers():
    rng = random.Random(2)
    for _ in range(ACCURACY_PAIRS):
        pool = [_vqa_text(rng) for _ in range(3)]
        golds = [rng.choice(pool) for _ in range(10)]  # TextVQA has ten human answers per question
        prediction = rng.choice(pool + [_vqa_text(rng)])
        assert vqa(prediction, golds) == pytest.approx(official_textvqa_score(prediction, golds), abs=1e-12)


def test_vqa_normalisation_equals_evalai_including_the_32_period_quirk():
    rng = random.Random(3)
    processor = OfficialEvalAIAnswerProcessor()
    for _ in range(PAIRS):
        text = _vqa_text(rng)
        assert vqa_normalize(text) == processor(text), text
    many = "a." * 40  # EvalAI's sub(..., re.UNICODE) removes only the first 32 periods
    assert vqa_normalize(many) == processor(many) and vqa_normalize(many).count(".") == 8
