"""The document-QA metrics against hand-computed cases, including each official definition's edge
cases, and the readers of the official annotation, gold and prediction files."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docread.bench.datasets import read_annotations, read_gold, read_predictions
from docread.bench.metrics import anls, evaluate, exact, levenshtein, relaxed, relaxed_correct, vqa, vqa_normalize
from docread.errors import DocreadError


@pytest.mark.parametrize(
    "a, b, distance",
    [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0), ("flaw", "lawn", 2), ("ab", "ba", 2)],
)
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == levenshtein(b, a) == distance


@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12))
def test_levenshtein_is_a_metric(a, b, c):
    assert levenshtein(a, c) <= levenshtein(a, b) + levenshtein(b, c)
    assert (levenshtein(a, b) == 0) == (a == b)


# -- ANLS (DocVQA / InfographicVQA / ST-VQA): s = 1 - NL unless that is below 0.5, best over gold answers
@pytest.mark.parametrize(
    "prediction, answers, expected",
    [
        ("1,234.56", ["1,234.56"], 1.0),
        ("  The   Total ", ["the total"], 1.0),  # lower-cased, stripped, whitespace collapsed
        ("0123456788", ["0123456789"], 0.9),  # one OCR slip in ten characters
        ("abcxy", ["abcde"], 0.6),  # NL = 2/5 = 0.4 < 0.5: partly right
        ("ac", ["ab"], 0.5),  # NL = 0.5 exactly: 1 - NL = tau is kept
        ("12", ["13"], 0.5),  # the case: 0.5, not 0
        ("abcd", ["abcdefgh"], 0.5),  # NL = 4/8 = 0.5: kept
        ("abc", ["abcdefgh"], 0.0),  # NL = 5/8: 1 - NL = 0.375 < 0.5
        ("abcdx ", ["abcd"], 1 - 1 / 6),  # distance 1 (stripped), over the raw length 6
        ("abcde", ["abcdefgh"], 1 - 3 / 8),  # NL = 3/8
        ("london", ["paris", "London "], 1.0),  # best over the gold answers
        ("", ["answer"], 0.0),  # empty prediction
        ("", [""], 1.0),  # both empty: equal
        ("anything", [], 0.0),  # no gold answers: nothing to match
    ],
)
def test_anls(prediction, answers, expected):
    assert anls(prediction, answers) == pytest.approx(expected)


# -- ChartQA relaxed accuracy (pix2struct's relaxed_correctness)
@pytest.mark.parametrize(
    "prediction, answer, right",
    [
        ("12", "12.5", True),  # 4% off
        ("11.8", "12.5", False),  # 5.6% off
        ("95", "100", True),  # exactly 5%: allowed (<=)
        ("-10.4", "-10", True),  # relative to |gold|
        ("45%", "0.45", True),  # a trailing % divides by 100
        ("45", "45%", False),  # ... on either side: 45 vs 0.45
        ("0.0", "0", False),  # a zero gold number must match as text
        ("0", "0", True),
        ("Yes", "yes", True),  # text: exact match, case-insensitive
        ("Yes.", "yes", False),
        ("five", "5", False),
        (" 17 ", "17", True),  # surrounding whitespace ignored
        ("1,000", "1000", False),  # not a number to float(): compared as text
    ],
)
def test_relaxed_correctness(prediction, answer, right):
    assert relaxed_correct(prediction, answer) is right


def test_relaxed_takes_the_best_gold_answer():
    assert relaxed("20", ["10", "19.5"]) == 1.0 and relaxed("20", ["10", "30"]) == 0.0


# -- VQA accuracy with the EvalAI normalisation (TextVQA)
@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two", "2"),
        ("the Cat", "cat"),
        ("a dog and an apple", "dog and apple"),
        ("none", "0"),
        ("t-shirt", "t shirt"),  # a glued mark becomes a space
        ("hello - world", "hello world"),  # a spaced mark disappears
        ("yes!", "yes"),
        ("end.", "end"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("What?", "what"),
        ("john's", "john 's"),
        ("  Coca\tCola\n", "coca cola"),
    ],
)
def test_vqa_normalisation(raw, normalised):
    assert vqa_normalize(raw) == normalised


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_averages_leave_one_out_subsets(matches, expected):
    # k of 10 humans said "stop": each of them leaves k-1 others, the rest leave k; min(n/3, 1) averaged
    answers = ["stop"] * matches + ["go"] * (10 - matches)
    assert vqa("stop", answers) == pytest.approx(expected)


def test_vqa_normalises_both_sides():
    assert vqa("Two.", ["2"] * 10) == 1.0
    assert vqa("the coca-cola", ["coca cola"] * 3 + ["pepsi"] * 7) == pytest.approx(0.9)
    assert vqa("Yes", ["yes"]) == 1.0 and vqa("no", ["yes"]) == 0.0  # one gold answer: a plain match


def test_exact_match():
    assert exact(" Paris ", ["paris"]) == 1.0 and exact("Paris.", ["paris"]) == 0.0
    assert exact("new  york", ["boston", "New York"]) == 1.0


def test_evaluate_counts_missing_as_zero_and_reports_extras():
    gold = {"1": ["a"], "2": ["b"], "3": ["c"], "4": ["d"]}
    result = evaluate("exact", gold, {"1": "a", "2": "B", "3": "x", "9": "z"}, malformed=2)
    assert result.score == pytest.approx(2 / 4)
    assert (result.n, result.missing, result.malformed, result.extra) == (4, 1, 2, 1)
    # "dd" against "d": NL = 1/2, so 1 - NL = 0.5 = tau is kept: (1 + 1 + 1 + 0.5) / 4
    assert evaluate("anls", gold, {"1": "a", "2": "b", "3": "c", "4": "dd"}).score == pytest.approx(3.5 / 4)
    with pytest.raises(ValueError, match="anls"):
        evaluate("bleu", gold, {})


# -- annotation, gold and prediction files
def _write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


DOCVQA = {
    "dataset_name": "docvqa",
    "data": [
        {
            "questionId": 337,
            "question": "what is the date?",
            "image": "documents/xnbl0037_1.png",
            "docId": 279,
            "answers": ["1/8/93", "January 8, 1993"],
        },
        {
            "questionId": 338,
            "question": "what is the total?",
            "image": "documents/pybv0228_81.png",
            "answers": ["$ 50"],
        },
    ],
}
INFOVQA = {
    "data": [
        {
            "questionId": 65718,
            "question": "How many?",
            "image_local_name": "20471.jpeg",
            "image_url": "https://example.invalid/20471.jpeg",
            "answers": ["7"],
        }
    ]
}
CHARTQA = [
    {"imgname": "two_col_1.png", "query": "What is the peak value?", "label": "59.3"},
    {"imgname": "two_col_2.png", "query": "Which year?", "label": "2019"},
]
TEXTVQA = {
    "dataset_name": "textvqa",
    "data": [
        {
            "question_id": 34602,
            "question": "what brand?",
            "image_id": "0054c91397f2fe05",
            "answers": ["nokia"] * 8 + ["toshiba"] * 2,
        }
    ],
}


def test_official_annotation_formats_are_read(tmp_path):
    doc = read_annotations(_write(tmp_path / "doc.json", DOCVQA), "docvqa")
    assert [(s.id, s.image, s.answers) for s in doc] == [
        ("337", "documents/xnbl0037_1.png", ("1/8/93", "January 8, 1993")),
        ("338", "documents/pybv0228_81.png", ("$ 50",)),
    ]
    info = read_annotations(_write(tmp_path / "info.json", INFOVQA), "infovqa")
    assert (info[0].id, info[0].image, info[0].answers) == ("65718", "20471.jpeg", ("7",))
    chart = read_annotations(_write(tmp_path / "chart.json", CHARTQA), "chartqa")
    assert [(s.id, s.question, s.image, s.answers) for s in chart] == [
        ("0", "What is the peak value?", "two_col_1.png", ("59.3",)),
        ("1", "Which year?", "two_col_2.png", ("2019",)),
    ]
    text = read_annotations(_write(tmp_path / "text.json", TEXTVQA), "textvqa")
    assert (text[0].id, text[0].image, len(text[0].answers)) == ("34602", "0054c91397f2fe05.jpg", 10)
    test_split = {"data": [{"questionId": 1, "question": "q?", "image": "documents/a.png"}]}
    assert read_annotations(_write(tmp_path / "test.json", test_split), "docvqa")[0].answers == ()


def test_wrong_annotation_format_is_one_clear_error(tmp_path):
    with pytest.raises(DocreadError, match="imgname.*chartqa"):
        read_annotations(_write(tmp_path / "doc.json", DOCVQA), "chartqa")
    with pytest.raises(DocreadError, match="no such file"):
        read_annotations(tmp_path / "absent.json", "docvqa")


def test_gold_files_official_and_jsonl(tmp_path):
    assert read_gold(_write(tmp_path / "doc.json", DOCVQA)) == {"337": ("1/8/93", "January 8, 1993"), "338": ("$ 50",)}
    assert read_gold(_write(tmp_path / "chart.json", CHARTQA)) == {"0": ("59.3",), "1": ("2019",)}
    assert read_gold(_write(tmp_path / "text.json", TEXTVQA))["34602"][0] == "nokia"
    jsonl = tmp_path / "gold.jsonl"
    jsonl.write_text('{"id": "a", "answers": ["x", "y"]}\n{"id": 7, "answer": "z"}\n')
    assert read_gold(jsonl) == {"a": ("x", "y"), "7": ("z",)}
    no_answers = _write(tmp_path / "test.json", {"data": [{"questionId": 1, "question": "q", "image": "a.png"}]})
    with pytest.raises(DocreadError, match="no gold answers"):
        read_gold(no_answers)


def test_prediction_files_jsonl_with_damage_and_official_lists(tmp_path):
    jsonl = tmp_path / "pred.jsonl"
    jsonl.write_text(
        '{"id": "1", "prediction": "a"}\n{"id": 2, "answer": 5}\nnot json\n{"prediction": "x"}\n'
        '{"id": "1", "prediction": "b"}\n{"id": "3", "predic'
    )
    read = read_predictions(jsonl)
    assert read.answers == {"1": "b", "2": "5"} and read.malformed == 3  # the later line for an id wins
    official = _write(
        tmp_path / "results.json", [{"questionId": 337, "answer": "1/8/93"}, {"question_id": 34602, "answer": "nokia"}]
    )
    assert read_predictions(official).answers == {"337": "1/8/93", "34602": "nokia"}
