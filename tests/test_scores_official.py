"""Scores comparable to published numbers (#23): HallusionBench's text-only questions and the authors'
correctness rule, each benchmark's split, the multiple-choice parsers (LLaVA's exactly, VLMEvalKit's
rule-based one), POPE's F1 on a split without a "yes". Small release-format files, hand-scored."""

import json

import pytest
from kit.cli import docread

from docread.bench.choice import (
    hallusion_correct,
    hallusion_judgement,
    hallusion_scores,
    parse_letter,
    parse_option,
    read_choice,
)
from docread.bench.datasets import Sample
from docread.bench.registry import read, resolve_split, score
from docread.errors import DocreadError, UsageError


def _json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# -- HallusionBench ---------------------------------------------------------------------------
def _hallusion(tmp_path):
    def q(category, figure, question, visual, gt):
        return {
            "category": category,
            "subcategory": "chart",
            "visual_input": str(visual),
            "set_id": "0",
            "figure_id": str(figure),
            "question_id": str(question),
            "question": f"Is it so ({category} {figure}, {question})?",
            "gt_answer": str(gt),
        }

    records = [
        q("VS", 0, 0, 0, 1),  # asked without a figure
        q("VS", 1, 0, 1, 1),
        q("VS", 2, 0, 2, 0),
        q("VD", 0, 0, 1, 1),
        q("VD", 1, 0, 2, 0),
    ]
    return read("hallusionbench", _json(tmp_path / "HallusionBench.json", records), "all")


def test_hallusionbench_perfect_answers_score_100_on_every_accuracy(tmp_path):
    samples = _hallusion(tmp_path)
    perfect = {s.id: "Yes" if s.answers[0] == "yes" else "No" for s in samples}
    result = score("hallusionbench", samples, perfect)
    assert (result["aAcc"], result["fAcc"], result["qAcc"], result["missing"]) == (1.0, 1.0, 1.0, 0)
    assert result["split"] == "all"
    # without the question that has no figure, a perfect model would lose it everywhere it counts
    partial = {key: value for key, value in perfect.items() if key != "VS_chart_0_0_0"}
    held_back = score("hallusionbench", samples, partial)
    assert (held_back["aAcc"], held_back["fAcc"], held_back["qAcc"]) == (pytest.approx(4 / 5), 1.0, 0.5)


@pytest.mark.parametrize(
    "text, gold, verdict",
    [
        ("Yes", "yes", "1"),
        ("No, it is not.", "yes", "0"),
        ("The chart does not say so.", "no", "1"),  # POPE's reading: "not" -> no
        ("I cannot tell without the chart.", "yes", "2"),  # no yes/no/not: unclear
        ("", "no", "2"),
    ],
)
def test_hallusion_judgement(text, gold, verdict):
    assert hallusion_judgement(text, gold) == verdict


def test_unclear_is_right_only_on_a_question_without_a_figure(tmp_path):
    samples = _hallusion(tmp_path)
    unclear = "I cannot tell without the chart."
    no_figure, with_figure = samples[0], samples[3]  # VS figure 0; VD figure 0 (its figure is shown)
    assert hallusion_correct(no_figure, {no_figure.id: unclear})  # assign_correctness: "2" counts there
    assert not hallusion_correct(with_figure, {with_figure.id: unclear})
    # 5 questions, 4 answered right + the unclear one without a figure: aAcc 1
    answers = {s.id: "Yes" if s.answers[0] == "yes" else "No" for s in samples} | {no_figure.id: unclear}
    assert hallusion_scores(samples, answers)["aAcc"] == 1.0


def test_a_question_without_an_image_is_asked_text_only(tiny_reader):
    """`DocReader.ask_text`: the chat format without the image marker, greedy tokens as transformers'
    own generate gives them for that prompt."""
    import torch

    from docread.views.processor import text_prompt_ids

    question = "Is the sky green?"
    ids = text_prompt_ids(tiny_reader.base.tokenizer, tiny_reader.template, question, tiny_reader.base.image_token_id)
    assert tiny_reader.base.image_token_id not in ids
    assert tiny_reader.base.tokenizer.decode(ids, skip_special_tokens=True) == f"USER: {question} ASSISTANT:"
    answer = tiny_reader.ask_text(question, max_new_tokens=3)
    with torch.inference_mode():
        expected = tiny_reader.base.model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=3, do_sample=False, eos_token_id=tiny_reader.eos_token_ids
        )[0, len(ids) :].tolist()
    assert answer.answer == tiny_reader.base.tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert (answer.view, answer.image_tokens, answer.tiles, answer.prompt_tokens) == ("none", 0, 0, len(ids))
    with pytest.raises(DocreadError, match="context tokens"):
        tiny_reader.ask_text(question, max_new_tokens=tiny_reader.context)


# -- splits -----------------------------------------------------------------------------------
def _ai2d(tmp_path, ids_file=True):
    for image, answer in (("1", 0), ("2", 1), ("3", 2)):
        question = {"answerTexts": ["a", "b", "c", "d"], "correctAnswer": answer, "questionId": f"{image}.png-0"}
        _json(
            tmp_path / "ai2d" / "questions" / f"{image}.png.json",
            {"imageName": f"{image}.png", "questions": {"q?": question}},
        )
    if ids_file:
        (tmp_path / "ai2d" / "ai2d_test_ids.csv").write_text("1\n3\n")
    return tmp_path / "ai2d" / "questions"


def test_ai2d_scores_the_test_split_the_release_lists(tmp_path):
    folder = _ai2d(tmp_path)
    assert resolve_split("ai2d", folder, None) == "test"
    assert [s.id for s in read("ai2d", folder, "test")] == ["1.png-0", "3.png-0"]
    assert [s.id for s in read("ai2d", folder, "train")] == ["2.png-0"]
    assert len(read("ai2d", folder, "all")) == 3
    result = score("ai2d", read("ai2d", folder, "test"), {"1.png-0": "A", "3.png-0": "A"}, split="test")
    assert (result["score"], result["split"], result["n"]) == (0.5, "test", 2)
    with pytest.raises(UsageError, match="ai2d has test, train, all"):
        resolve_split("ai2d", folder, "val")


def test_ai2d_without_its_test_list_says_where_it_goes(tmp_path):
    folder = _ai2d(tmp_path, ids_file=False)
    with pytest.raises(DocreadError, match="ai2d_test_ids.csv.*--split all"):
        read("ai2d", folder, "test")
    assert len(read("ai2d", folder, "all")) == 3


def _chartqa(tmp_path):
    test = tmp_path / "test"
    _json(test / "test_human.json", [{"imgname": "h.png", "query": "peak?", "label": "10"}])
    _json(test / "test_augmented.json", [{"imgname": f"a{i}.png", "query": "value?", "label": "4"} for i in range(3)])
    return test


def test_chartqa_averages_human_and_augmented_and_reports_each(tmp_path):
    test = _chartqa(tmp_path)
    samples = read("chartqa", test, resolve_split("chartqa", test, None))
    assert [s.id for s in samples] == ["test_human/0", "test_augmented/0", "test_augmented/1", "test_augmented/2"]
    # human 1/1 right; augmented 1/3 right ("4.1" is within 5% of 4, "5" is not): (1 + 1/3) / 2
    predictions = {"test_human/0": "10", "test_augmented/0": "4.1", "test_augmented/1": "5"}
    result = score("chartqa", samples, predictions, split="test")
    assert result["score"] == pytest.approx(2 / 3) and result["split"] == "test"
    assert result["per_split"] == {
        "test_augmented": {"score": pytest.approx(1 / 3), "n": 3},
        "test_human": {"score": 1.0, "n": 1},
    }
    assert resolve_split("chartqa", test / "test_human.json", None) == "test_human"  # one file: its own split
    with pytest.raises(UsageError, match="is the test_human split"):
        resolve_split("chartqa", test / "test_human.json", "test_augmented")


def test_stvqa_says_which_split_it_scores(tmp_path):
    path = _json(
        tmp_path / "train_task_3.json",
        {"data": [{"question_id": 1, "question": "q", "file_path": "a.jpg", "answers": ["x"]}]},
    )
    result = score("stvqa", read("stvqa", path, "train_task_3"), {"1": "x"}, split="train_task_3")
    assert (result["score"], result["split"]) == (1.0, "train_task_3")
    assert "test answers are withheld" in result["split_note"]


def test_bench_score_names_the_split_and_refuses_an_unknown_one(tmp_path):
    test = _chartqa(tmp_path)
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"id": "test_human/0", "prediction": "10"}) + "\n")
    run = docread("bench", "score", "--dataset", "chartqa", test, predictions, "--json")
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert (record["split"], record["score"], record["missing"]) == ("test", 0.5, 3)
    run = docread("bench", "score", "--dataset", "chartqa", test, predictions, "--split", "val")
    assert (
        run.returncode == 2 and "test, test_human, test_augmented" in run.stderr and len(run.stderr.splitlines()) == 1
    )
    run = docread("bench", "score", "--dataset", "chartqa", test, predictions, "--split", "test_human")
    assert run.stdout.startswith("chartqa (test_human) relaxed 1.0000 over 1 question")


# -- multiple choice --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, letter",
    [
        ("A", "A"),
        ("AB", None),  # list membership: "AB" is no option
        ("D. dog", "D"),
        ("The answer is C.", "C"),
        ("The answer is C", None),  # LLaVA's pattern needs a character after the letter
        ("The answer is A. The answer is B.", None),  # two matches: FAILED
        ("(B)", None),
        ("Option C", None),
    ],
)
def test_llava_parser(text, letter):
    assert parse_letter(text, 4) == letter


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("Option C", "C"),
        ("The answer is (D), a fish.", "D"),
        ("a cat", "B"),  # the option's text; lower-case "a" is no letter
        ("A or B", None),  # two letters, and no option's text
        ("dog or cat", None),  # two options' texts
        ("Z", None),  # VLMEvalKit's "none of them"
        ("I'm sorry, but without the image provided I cannot answer", None),
    ],
)
def test_vlmevalkit_parser(text, letter):
    assert parse_option(text, ("dog", "cat", "bird", "fish")) == letter


def test_unparsed_counts_what_the_chosen_parser_cannot_read():
    samples = [Sample(f"q{i}", "q", "x.png", ("B",), ("dog", "cat", "bird", "fish")) for i in range(4)]
    predictions = {"q0": "B", "q1": "AB", "q2": "(B)", "q3": "cat"}
    llava = score("ai2d", samples, predictions)
    assert (llava["score"], llava["unparsed"], llava["mc_parser"]) == (0.25, 3, "llava")
    vlmevalkit = score("ai2d", samples, predictions, mc_parser="vlmevalkit")
    assert (vlmevalkit["score"], vlmevalkit["unparsed"], vlmevalkit["mc_parser"]) == (0.75, 1, "vlmevalkit")
    assert read_choice("AB", samples[0], "vlmevalkit") is None  # "AB" is one word, no letter alone
    run = docread("bench", "score", "--dataset", "ai2d", "x", "y", "--mc-parser", "gpt")
    assert run.returncode == 2 and "llava, vlmevalkit" in run.stderr


# -- POPE -------------------------------------------------------------------------------------
def test_pope_split_without_a_yes_scores_f1_0_in_the_headline():
    samples = [
        Sample(f"{split}/{i}", "q", "x.jpg", (label,), groups={"split": split})
        for split, labels in (("random", ["yes", "no"]), ("adversarial", ["no", "no"]))
        for i, label in enumerate(labels)
    ]
    predictions = {"random/0": "Yes", "random/1": "No", "adversarial/0": "No", "adversarial/1": "No"}
    result = score("pope", samples, predictions)
    adversarial = result["per_split"]["adversarial"]
    # adversarial: every answer right, but no "yes" anywhere: precision, recall and F1 are 0 (VLMEvalKit, lmms-eval)
    assert (adversarial["accuracy"], adversarial["precision"], adversarial["recall"], adversarial["f1"]) == (
        1.0,
        0,
        0,
        0,
    )
    assert result["per_split"]["random"]["f1"] == 1.0 and result["score"] == 0.5
