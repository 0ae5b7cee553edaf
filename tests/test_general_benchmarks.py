"""The general benchmarks (ST-VQA, AI2D, ScienceQA, MMBench, POPE, HallusionBench): tiny files in each
release's own format, predictions with known right and wrong answers, scores computed by hand."""

import base64
import io
import json
from types import SimpleNamespace

import pytest
from kit.cli import docread
from PIL import Image

from docread.bench.choice import parse_letter, parse_yes_no
from docread.bench.datasets import read_predictions
from docread.bench.registry import DATASETS, prompt, score

# `docread bench ...` in-process (kit.cli: the same entry point as `python -m docread`), each tiny model
# loaded once.
pytestmark = pytest.mark.usefixtures("reuse_loaded_models")


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _png(path=None, size=(32, 24)):
    image = Image.new("RGB", size, "white")
    if path is None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# -- answer parsing --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, n, letter",
    [
        ("B", 4, "B"),
        (" C ", 4, None),  # read as written: LLaVA strips when it generates, not when it scores
        ("B. dog", 4, "B"),
        ("A\nbecause", 4, None),  # no newline rewrite
        ("The answer is D.", 4, "D"),
        ("I think The answer is C", 4, None),  # the pattern wants one more character after the letter
        ("E", 4, None),
        ("The answer is E.", 5, "E"),
        ("The answer is E.", 4, None),  # a letter beyond the options is wrong, not clipped
        ("b", 4, None),
        ("B)", 4, None),
        ("", 4, None),
        ("dog", 4, None),
    ],
)
def test_parse_letter_as_llava_eval_science_qa(text, n, letter):
    assert parse_letter(text, n) == letter


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("no.", "no"),
        ("Yes, there is a dog.", "yes"),
        ("There is not a cat", "no"),
        ("There is no dog. Yes.", "no"),
        ("Yes. No.", "yes"),  # first sentence only
        ("Not sure", "yes"),
        ("yes,no", "yes"),
        ("", "yes"),  # POPE's quirks: "Not" is not in its word list
    ],
)
def test_parse_yes_no_as_pope(text, answer):
    assert parse_yes_no(text) == answer


# -- each release's files, scored by hand ------------------------------------------------------
def stvqa_files(tmp_path):
    annotations = tmp_path / "train_task_3.json"
    annotations.write_text(
        json.dumps(
            {
                "dataset_name": "ST-VQA",
                "data": [
                    {
                        "question_id": 1,
                        "question": "what brand?",
                        "file_path": "coco-text/a.jpg",
                        "file_name": "a.jpg",
                        "answers": ["Coca Cola", "coca-cola"],
                    },
                    {
                        "question_id": 2,
                        "question": "what does the sign say?",
                        "file_path": "coco-text/b.jpg",
                        "answers": ["stop"],
                    },
                ],
            }
        )
    )
    return annotations


def test_stvqa_scores_with_anls(tmp_path):
    samples = DATASETS["stvqa"].read(stvqa_files(tmp_path))
    assert [(s.id, s.image) for s in samples] == [("1", "coco-text/a.jpg"), ("2", "coco-text/b.jpg")]
    # "coca cola" = gold 1; "stap" vs "stop": NL 1/4, so 0.75. (1 + 0.75) / 2 = 0.875
    result = score("stvqa", samples, {"1": "coca cola", "2": "stap"})
    assert (result["metric"], result["score"], result["n"]) == ("anls", pytest.approx(0.875), 2)
    assert prompt(DATASETS["stvqa"], samples[0]) == "what brand?\nAnswer the question using a single word or phrase."


def ai2d_folder(tmp_path):
    folder = tmp_path / "ai2d" / "questions"
    folder.mkdir(parents=True)
    (tmp_path / "ai2d" / "ai2d_test_ids.csv").write_text("1\n2\n")  # the release's test split: both diagrams
    (folder / "1.png.json").write_text(
        json.dumps(
            {
                "imageName": "1.png",
                "questions": {
                    "Which label shows the sun?": {
                        "abcLabel": False,
                        "answerTexts": ["moon", "sun", "earth", "star"],
                        "correctAnswer": 1,
                        "questionId": "1.png-0",
                    },
                    "What eats grass?": {
                        "abcLabel": False,
                        "answerTexts": ["lion", "hawk", "snake", "deer"],
                        "correctAnswer": 3,
                        "questionId": "1.png-1",
                    },
                },
            },
            indent=2,
        )
    )
    (folder / "2.png.json").write_text(
        json.dumps(
            {
                "imageName": "2.png",
                "questions": {
                    "What is at the top?": {
                        "abcLabel": False,
                        "answerTexts": ["sky", "soil", "root", "leaf"],
                        "correctAnswer": 0,
                        "questionId": "2.png-0",
                    }
                },
            }
        )
    )
    return folder


def test_ai2d_reads_the_question_folder_and_scores_accuracy(tmp_path):
    samples = DATASETS["ai2d"].read(ai2d_folder(tmp_path))
    assert [(s.id, s.image, s.answers, s.options[1]) for s in samples] == [
        ("1.png-0", "1.png", ("B",), "sun"),
        ("1.png-1", "1.png", ("D",), "hawk"),
        ("2.png-0", "2.png", ("A",), "soil"),
    ]
    assert prompt(DATASETS["ai2d"], samples[0]) == (
        "Which label shows the sun?\nA. moon\nB. sun\nC. earth\nD. star\n"
        "Answer with the option's letter from the given choices directly."
    )
    # right ("B"), right ("The answer is D."), wrong and unparsed ("I think so"): 2 / 3
    result = score("ai2d", samples, {"1.png-0": "B", "1.png-1": "The answer is D.", "2.png-0": "I think so"})
    assert (result["score"], result["unparsed"], result["missing"]) == (pytest.approx(2 / 3), 1, 0)


def scienceqa_problems(tmp_path):
    problems = {
        "1": {
            "question": "Which is a mammal?",
            "choices": ["frog", "dog", "fish"],
            "answer": 1,
            "hint": "Look at the picture.",
            "image": "image.png",
            "split": "test",
        },
        "2": {"question": "Text only?", "choices": ["a", "b"], "answer": 0, "hint": "", "image": None, "split": "test"},
        "3": {
            "question": "Train?",
            "choices": ["a", "b"],
            "answer": 0,
            "hint": "",
            "image": "image.png",
            "split": "train",
        },
        "4": {
            "question": "Is it hot?",
            "choices": ["yes", "no"],
            "answer": 0,
            "hint": "",
            "image": "image.png",
            "split": "test",
        },
    }
    path = tmp_path / "scienceqa" / "problems.json"
    path.parent.mkdir()
    path.write_text(json.dumps(problems))
    return path


def test_scienceqa_keeps_the_test_image_questions(tmp_path):
    samples = DATASETS["scienceqa"].read(scienceqa_problems(tmp_path))
    assert [(s.id, s.image, s.answers) for s in samples] == [
        ("1", "test/1/image.png", ("B",)),
        ("4", "test/4/image.png", ("A",)),
    ]
    assert samples[0].question == "Context: Look at the picture.\nWhich is a mammal?"
    # "1" right, "4" wrong ("B" = no); "2" is no image question: an extra prediction. 1 / 2
    result = score("scienceqa", samples, {"1": "B", "4": "B", "2": "A"})
    assert (result["score"], result["n"], result["extra"]) == (0.5, 2, 1)


def mmbench_tsv(tmp_path):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    rows = [
        ["0", "What color?", "nan", "red", "blue", "green", "", "B", "color", "perception", _png()],
        ["1", "How many?", "Count the apples.", "1", "2", "nan", "nan", "A", "count", "perception", "0"],
    ]
    path = tmp_path / "mmbench_dev_20230712.tsv"
    path.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n")
    return path


def test_mmbench_rotates_options_and_scores_circularly(tmp_path):
    samples = DATASETS["mmbench"].read(mmbench_tsv(tmp_path))
    # question 0 has 3 options: pass k shows options[k:] + options[:k], gold "blue" moves B -> A -> C
    assert [(s.id, s.options, s.answers[0]) for s in samples] == [
        ("0@0", ("red", "blue", "green"), "B"),
        ("0@1", ("blue", "green", "red"), "A"),
        ("0@2", ("green", "red", "blue"), "C"),
        ("1@0", ("1", "2"), "A"),
        ("1@1", ("2", "1"), "B"),
    ]
    assert samples[3].question == "Count the apples.\nHow many?" and samples[0].question == "What color?"
    assert samples[4].inline_image == samples[0].inline_image  # "0": the image of row 0
    # question 0 right in all 3 passes; question 1 right in pass 0 only -> wrong. Circular 1/2;
    # per category color 1, count 0; the first passes (0@0, 1@0) are both right.
    result = score("mmbench", samples, {"0@0": "B", "0@1": "A", "0@2": "C", "1@0": "A", "1@1": "A"})
    assert (result["metric"], result["score"], result["questions"], result["n"]) == ("circular_accuracy", 0.5, 2, 5)
    assert result["per_category"] == {"color": 1.0, "count": 0.0} and result["first_pass_accuracy"] == 1.0


def pope_folder(tmp_path):
    folder = tmp_path / "coco"
    folder.mkdir()
    labels = {"random": ["yes", "no", "yes", "no"], "adversarial": ["yes", "no"]}
    for split, split_labels in labels.items():
        _jsonl(
            folder / f"coco_pope_{split}.json",
            [
                {
                    "question_id": i + 1,
                    "image": f"COCO_val2014_{i:012d}.jpg",
                    "text": "Is there a dog in the image?",
                    "label": label,
                }
                for i, label in enumerate(split_labels)
            ],
        )
    return folder


def test_pope_per_split_table(tmp_path):
    samples = DATASETS["pope"].read(pope_folder(tmp_path))
    assert [s.id for s in samples][:3] == ["adversarial/1", "adversarial/2", "random/1"]
    predictions = {
        "random/1": "Yes, there is a dog.",
        "random/2": "No.",
        "random/3": "There is not a cat",
        "random/4": "Yes",
        "adversarial/1": "yes",
    }  # adversarial/2 missing: counted wrong ("yes")
    result = score("pope", samples, predictions)
    # random: TP 1, TN 1, FN 1, FP 1 -> every figure 0.5
    assert result["per_split"]["random"] == {
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "yes_ratio": 0.5,
        "n": 4,
    }
    # adversarial: TP 1, FP 1 -> accuracy 0.5, precision 0.5, recall 1, F1 2 * 0.5 * 1 / 1.5 = 2/3, yes-ratio 1
    adversarial = result["per_split"]["adversarial"]
    assert (adversarial["accuracy"], adversarial["precision"], adversarial["recall"], adversarial["yes_ratio"]) == (
        0.5,
        0.5,
        1.0,
        1.0,
    ) and adversarial["f1"] == pytest.approx(2 / 3)
    assert result["score"] == pytest.approx((0.5 + 2 / 3) / 2) and result["missing"] == 1


def hallusion_file(tmp_path):
    def q(category, subcategory, figure, question, visual, gt):
        return {
            "category": category,
            "subcategory": subcategory,
            "visual_input": str(visual),
            "set_id": "0",
            "figure_id": str(figure),
            "sample_note": "",
            "question_id": str(question),
            "question": f"Is it so ({figure}, {question})?",
            "gt_answer_details": "",
            "gt_answer": str(gt),
            "filename": None,
        }

    records = [
        q("VD", "illusion", 0, 0, 1, 1),
        q("VD", "illusion", 0, 1, 1, 0),
        q("VD", "illusion", 1, 0, 2, 0),
        q("VD", "illusion", 1, 1, 2, 1),
        q("VS", "chart", 0, 0, 0, 1),
        q("VS", "chart", 1, 0, 1, 0),
    ]
    path = tmp_path / "HallusionBench.json"
    path.write_text(json.dumps(records, indent=2))
    return path


def test_hallusionbench_question_figure_and_pair_accuracy(tmp_path):
    samples = DATASETS["hallusionbench"].read(hallusion_file(tmp_path))
    assert samples[0].id == "VD_illusion_0_0_0" and samples[0].image == "VD/illusion/0_0.png"
    assert samples[4].image == ""  # visual_input 0: asked without a figure
    predictions = {
        "VD_illusion_0_0_0": "Yes",
        "VD_illusion_0_0_1": "No",
        "VD_illusion_0_1_0": "Yes",
        "VD_illusion_0_1_1": "Yes",
        "VS_chart_0_1_0": "No, it is not.",
    }  # VS_chart_0_0_0 missing
    result = score("hallusionbench", samples, predictions)
    # aAcc: right 1, 2, 4, 6 of 6 = 4/6
    # fAcc: figures VD/0 (both right), VD/1 (one wrong), VS/1 (right); VS figure 0 is no figure: 2/3
    # qAcc: VD q0 (wrong on figure 1), VD q1 (right on both), VS q0 (missing without figure): 1/3
    assert result["aAcc"] == pytest.approx(4 / 6) and result["fAcc"] == pytest.approx(2 / 3)
    assert result["qAcc"] == pytest.approx(1 / 3) and (result["figures"], result["question_pairs"]) == (3, 3)


def test_bench_score_dataset_reads_the_release_and_prints_the_breakdown(tmp_path):
    pred = _jsonl(
        tmp_path / "pred.jsonl",
        [
            {"id": "random/1", "prediction": "Yes"},
            {"id": "random/2", "prediction": "No"},
            {"id": "random/3", "prediction": "yes"},
            {"id": "random/4", "prediction": "no"},
        ],
    )
    folder = pope_folder(tmp_path)
    run = docread("bench", "score", "--dataset", "pope", folder / "coco_pope_random.json", pred, "--json")
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert record["dataset"] == "pope" and record["per_split"]["random"]["accuracy"] == 1.0
    run = docread("bench", "score", "--dataset", "pope", folder / "coco_pope_random.json", pred)
    assert run.stdout.splitlines() == [
        "pope (all) f1 1.0000 over 4 questions (0 missing, 0 malformed)",
        "  split random: accuracy 1.0000 · precision 1.0000 · recall 1.0000 · f1 1.0000 · yes_ratio 0.5000 · n 4",
    ]
    run = docread("bench", "score", "--dataset", "vizwiz", folder, pred)
    assert run.returncode == 2 and "hallusionbench" in run.stderr and len(run.stderr.splitlines()) == 1
    run = docread("bench", "score", folder, pred)
    assert run.returncode == 2 and "--metric" in run.stderr and "--dataset" in run.stderr


def test_predictions_round_trip_through_the_file_reader(tmp_path):
    samples = DATASETS["ai2d"].read(ai2d_folder(tmp_path))
    pred = _jsonl(tmp_path / "p.jsonl", [{"id": "1.png-0", "prediction": "B"}, {"id": "2.png-0", "prediction": "A"}])
    read = read_predictions(pred)
    assert score("ai2d", samples, read.answers, malformed=read.malformed)["score"] == pytest.approx(2 / 3)


# -- end to end on the tiny checkpoint, one per family (short answer, letter, likelihood, yes/no)
MODEL = ("--device", "cpu", "--quant", "none", "--max-slices", 0)


def _run_and_rescore(tiny_llava, dataset, annotations, out, *extra):
    run = docread(
        "bench",
        "run",
        "--dataset",
        dataset,
        "--annotations",
        annotations,
        "-o",
        out,
        "--model",
        tiny_llava,
        "--max-new-tokens",
        2,
        "--limit",
        1,
        "--json",
        *MODEL,
        *extra,
    )
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    read = read_predictions(out)
    samples = [s for s in DATASETS[dataset].read(annotations) if s.id in read.answers]
    assert record == {
        "dataset": dataset,
        "predictions": str(out),
        "failed": 0,
        **score(dataset, samples, read.answers, malformed=read.malformed),
    }
    return record, read


def test_run_stvqa_short_answers(tiny_llava, tmp_path):
    for name in ("a.jpg", "b.jpg"):
        _png(tmp_path / "st" / "coco-text" / name)
    record, read = _run_and_rescore(
        tiny_llava, "stvqa", stvqa_files(tmp_path), tmp_path / "p.jsonl", "--images", tmp_path / "st"
    )
    assert record["metric"] == "anls" and list(read.answers) == ["1"]


def test_run_scienceqa_generates_letters(tiny_llava, tmp_path):
    problems = scienceqa_problems(tmp_path)
    _png(tmp_path / "scienceqa" / "images" / "test" / "1" / "image.png")
    record, read = _run_and_rescore(
        tiny_llava, "scienceqa", problems, tmp_path / "p.jsonl", "--images", tmp_path / "scienceqa" / "images"
    )
    assert record["metric"] == "accuracy" and list(read.answers) == ["1"]


def test_run_mmbench_by_likelihood_asks_every_rotation(tiny_llava, tmp_path):
    record, read = _run_and_rescore(
        tiny_llava, "mmbench", mmbench_tsv(tmp_path), tmp_path / "p.jsonl", "--mc", "likelihood"
    )
    assert sorted(read.answers) == ["0@0", "0@1", "0@2"] and set(read.answers.values()) <= set("ABC")
    assert record["questions"] == 1 and record["metric"] == "circular_accuracy"


def test_run_pope_yes_no(tiny_llava, tmp_path):
    folder = pope_folder(tmp_path)
    _png(tmp_path / "val2014" / "COCO_val2014_000000000000.jpg")
    record, read = _run_and_rescore(
        tiny_llava, "pope", folder / "coco_pope_random.json", tmp_path / "p.jsonl", "--images", tmp_path / "val2014"
    )
    assert list(read.answers) == ["random/1"] and set(record["per_split"]) == {"random"}


# -- the run loops with a scripted reader ------------------------------------------------------
class ScriptedReader:
    """Picks option C by likelihood, answers "Yes" when asked; records what it was shown."""

    def __init__(self):
        self.shown = []

    def choose(self, image, question, options, *, max_slices=None, view="hires"):
        self.shown.append((image, question, options))
        return 2, [-3.0, -2.0, -0.5][: len(options)]

    def ask(self, image, question, *, max_slices=None, max_new_tokens=32, view="hires"):
        self.shown.append((image, question))
        return SimpleNamespace(answer="Yes", score=-0.1)

    def ask_text(self, question, *, max_new_tokens=32):
        self.shown.append((None, question))
        return SimpleNamespace(answer="No", score=-0.2)


def test_run_loops_decode_inline_images_and_ask_questions_without_one_text_only(tmp_path):
    from docread.bench.runner import prediction_log, run_likelihood, run_open

    mmbench = DATASETS["mmbench"].read(mmbench_tsv(tmp_path))[:3]
    broken = mmbench[0].__class__(
        "9@0", "q", "", ("A",), ("x", "y"), {"question": "9", "round": "0"}, inline_image="not base64 at all"
    )
    reader = ScriptedReader()
    with prediction_log(tmp_path / "mc.jsonl") as log:
        records = list(
            run_likelihood(reader, None, [*mmbench, broken], log, prompt=lambda s: prompt(DATASETS["mmbench"], s))
        )
    assert [r.get("prediction") for r in records] == ["C", "C", "C", None]
    assert records[3]["error"]["code"] == "unreadable" and "9@0" in records[3]["error"]["message"]
    assert isinstance(reader.shown[0][0], Image.Image) and reader.shown[0][2] == ["A", "B", "C"]
    assert reader.shown[1][1].startswith("What color?\nA. blue\nB. green\nC. red\n")

    hallusion = DATASETS["hallusionbench"].read(hallusion_file(tmp_path))
    _png(tmp_path / "hb" / "VS" / "chart" / "0_1.png")
    with prediction_log(tmp_path / "hb.jsonl") as log:
        records = list(
            run_open(
                reader, tmp_path / "hb", hallusion[4:], log, prompt=lambda s: prompt(DATASETS["hallusionbench"], s)
            )
        )
    # the question without a figure is asked text-only; the other about its figure
    assert [(r["prediction"], r["view"]) for r in records] == [("No", "none"), ("Yes", "hires")]
    assert reader.shown[-2] == (None, "Is it so (0, 0)?\nAnswer the question using a single word or phrase.")
    assert reader.shown[-1][1].endswith("?\nAnswer the question using a single word or phrase.")


def test_bench_run_says_which_images_folder_a_dataset_needs(tmp_path):
    run = docread("bench", "run", "--dataset", "ai2d", "--annotations", ai2d_folder(tmp_path), "-o", tmp_path / "p")
    assert run.returncode == 2 and run.stderr.startswith("error: --images: ai2d needs") and "ai2d/images" in run.stderr
    run = docread(
        "bench",
        "run",
        "--dataset",
        "mmbench",
        "--annotations",
        tmp_path / "x.tsv",
        "-o",
        tmp_path / "p",
        "--mc",
        "vote",
    )
    assert run.returncode == 2 and "generate, likelihood" in run.stderr
