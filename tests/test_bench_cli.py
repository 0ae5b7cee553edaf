"""`docread bench` in-process (generate, score, run on the tiny checkpoint) and the run loops'
resume logic with a scripted reader."""

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from kit.cli import docread
from PIL import Image

from docread.bench.datasets import Sample, read_predictions
from docread.bench.entitygrid import LETTERS, generate, read_questions, score
from docread.bench.runner import prediction_log, run_entitygrid, run_open
from docread.errors import DocreadError, UsageError

# `docread bench ...` in-process (kit.cli: the same entry point as `python -m docread`), each tiny model
# loaded once.
pytestmark = pytest.mark.usefixtures("reuse_loaded_models")


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- without a model ------------------------------------------------------------------------
def test_generate_is_byte_identical_across_runs(tmp_path):
    runs = [
        docread("bench", "entitygrid", "generate", "--out", tmp_path / name, "--n", 9, "--size", 56, "--seed", 4)
        for name in ("a", "b")
    ]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr
    assert (
        runs[0].stdout == "wrote 9 questions (3 recognition, 3 position, 3 counting) and their 112x112 images "
        f"to {tmp_path / 'a'}\n"
    )
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") and len(_digest(tmp_path / "a")) == 10


def test_entitygrid_score_reports_json_table_heatmap_and_bad_predictions(tmp_path):
    questions = list(generate(tmp_path / "eg", n=12, seed=0, size=56))
    pred = tmp_path / "pred.jsonl"
    lines = [json.dumps({"id": q.id, "prediction": q.answer if i % 2 else "D"}) for i, q in enumerate(questions[:10])]
    pred.write_text("\n".join(lines) + '\n{"id": "eg00010", "prediction": "maybe"}\n{"id": "eg000')
    run = docread("bench", "entitygrid", "score", tmp_path / "eg", pred, "--json", "--heatmap", tmp_path / "h.png")
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    read = read_predictions(pred)
    assert record == score(questions, read.answers, unreadable=read.malformed).to_json()
    assert (record["n"], record["missing"], record["malformed"]) == (12, 1, 2)
    assert "1 question without a prediction, 2 malformed predictions: counted wrong" in run.stderr
    assert Image.open(tmp_path / "h.png").format == "PNG"

    run = docread("bench", "entitygrid", "score", tmp_path / "eg", pred)
    assert run.returncode == 0 and "a_i" in run.stdout and "discrepancy" in run.stdout
    assert f"accuracy {100 * record['accuracy']:.1f}" in run.stdout and "\x1b[" not in run.stdout


def test_bench_score_each_metric(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        '{"id": "1", "answers": ["Total: 12.5", "12.5"]}\n{"id": "2", "answers": ["Two"]}\n'
        '{"id": "3", "answer": "50%"}\n{"id": 4, "answers": ["Paris"]}\n'
    )
    pred = tmp_path / "pred.jsonl"
    pred.write_text(
        '{"id": "1", "prediction": "12.4"}\n{"id": "2", "prediction": "2"}\n'
        '{"id": "3", "prediction": "0.49"}\n{"id": "4", "prediction": " paris "}\n'
    )
    expected = {
        "anls": (0.75 + 0 + 0 + 1) / 4,  # "12.4" vs "12.5": NL 1/4; "2" vs "two", "0.49" vs "50%": NL 1
        "relaxed": (1 + 0 + 1 + 1) / 4,  # 0.8% off; "2" vs text "two"; 0.49 vs 50% = 0.50: 2% off
        "vqa": (0 + 1 + 0 + 1) / 4,  # "Two" normalises to "2"
        "exact": (0 + 0 + 0 + 1) / 4,
    }
    for metric, value in expected.items():
        run = docread("bench", "score", "--metric", metric, gold, pred, "--json")
        assert run.returncode == 0, run.stderr
        record = json.loads(run.stdout)
        assert record["score"] == pytest.approx(value) and (record["n"], record["missing"]) == (4, 0), metric
    run = docread("bench", "score", "--metric", "vqa", gold, pred)
    assert run.stdout == "vqa 0.5000 over 4 questions (0 missing, 0 malformed)\n"
    run = docread("bench", "score", "--metric", "bleu", gold, pred)
    assert run.returncode == 2 and run.stderr.startswith("error: --metric 'bleu'") and len(run.stderr.splitlines()) == 1


class ScriptedReader:
    """Answers like a model would: picks option `pick(question)`; fails on images named in `broken`."""

    def __init__(self, pick, broken=()):
        self.pick, self.broken, self.asked = pick, set(broken), []

    def choose(self, image, question, options, *, max_slices=None, view="hires"):
        self.asked.append(Path(image).name)
        if Path(image).name in self.broken:
            raise DocreadError("unreadable", f"cannot open {image}")
        index = self.pick(question)
        return index, [0.0 if i == index else -5.0 for i in range(len(options))]

    def ask(self, image, question, *, max_slices=None, max_new_tokens=32, view="hires"):
        self.asked.append(image)
        return SimpleNamespace(answer=f"seen {Path(image).name}", score=-0.5)


def test_entitygrid_run_resumes_after_a_kill_and_skips_answered_ids(tmp_path):
    folder = tmp_path / "eg"
    questions = list(generate(folder, n=6, seed=0, size=56))
    reader = ScriptedReader(lambda prompt: 2, broken={"eg00004.png"})
    out = tmp_path / "pred.jsonl"
    with prediction_log(out) as log:
        records = list(run_entitygrid(reader, folder, questions[:3], log))
    assert [r["prediction"] for r in records] == ["C"] * 3 and records[0]["scores"] == [-5.0, -5.0, 0.0, -5.0]
    with open(out, "a") as file:
        file.write('{"id": "eg00003", "predic')  # killed mid-line
    with pytest.raises(UsageError, match="--resume"):
        prediction_log(out)
    with prediction_log(out, resume=True) as log:
        assert log.done == {"eg00000", "eg00001", "eg00002"}
        pending = [q for q in questions if q.id not in log.done]
        records = list(run_entitygrid(reader, folder, pending, log))
    assert [r.get("error", {}).get("code") for r in records] == [None, "unreadable", None]
    assert reader.asked == [f"eg0000{i}.png" for i in range(6)]  # nothing asked twice
    lines = _lines(out)  # the half line is gone; the failed question is left for the next --resume
    assert [r["id"] for r in lines] == ["eg00000", "eg00001", "eg00002", "eg00003", "eg00005"]
    assert all(r["prediction"] in LETTERS for r in lines)


def test_open_run_finds_images_by_path_or_name_and_reports_missing_ones(tmp_path):
    (tmp_path / "img" / "documents").mkdir(parents=True)
    for name in ("documents/a.png", "b.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / name)
    samples = [
        Sample("1", "q1", "documents/a.png", ("x",)),
        Sample("2", "q2", "elsewhere/b.jpg", ("y",)),
        Sample("3", "q3", "c.png", ("z",)),
    ]
    reader = ScriptedReader(None)
    with prediction_log(tmp_path / "p.jsonl") as log:
        records = list(run_open(reader, tmp_path / "img", samples, log))
    assert records[2]["error"]["code"] == "not_found" and "c.png" in records[2]["error"]["message"]
    assert _lines(tmp_path / "p.jsonl") == [
        {"id": "1", "prediction": "seen a.png", "score": -0.5, "view": "hires"},
        {"id": "2", "prediction": "seen b.jpg", "score": -0.5, "view": "hires"},
    ]
    assert (
        reader.asked[0].endswith("documents/a.png") and "Answer the question using a single word" not in reader.asked[0]
    )


# -- with the tiny random checkpoint ---------------------------------------------------------
MODEL_OPTIONS = ("--device", "cpu", "--quant", "none")


def test_entitygrid_run_end_to_end_and_resume(tiny_llava, tmp_path):
    folder, out = tmp_path / "eg", tmp_path / "pred.jsonl"
    assert docread("bench", "entitygrid", "generate", "--out", folder, "--n", 12, "--size", 56).returncode == 0
    run = docread(
        "bench",
        "entitygrid",
        "run",
        folder,
        "--model",
        tiny_llava,
        "-o",
        out,
        "--limit",
        6,
        "--max-slices",
        0,
        *MODEL_OPTIONS,
    )
    assert run.returncode == 0, run.stderr
    assert len(_lines(out)) == 6 and "6 of 6 questions answered" in run.stderr
    run = docread("bench", "entitygrid", "run", folder, "--model", tiny_llava, "-o", out, *MODEL_OPTIONS)
    assert run.returncode == 2 and "--resume" in run.stderr
    with open(out, "a") as file:
        file.write('{"id": "eg00006", "pred')
    run = docread(
        "bench",
        "entitygrid",
        "run",
        folder,
        "--model",
        tiny_llava,
        "-o",
        out,
        "--resume",
        "--max-slices",
        4,
        *MODEL_OPTIONS,
    )
    assert run.returncode == 0, run.stderr
    lines = _lines(out)
    assert [r["id"] for r in lines] == [q.id for q in read_questions(folder)]
    for r in lines:  # the letter whose continuation scored best
        assert r["prediction"] == LETTERS[max(range(4), key=r["scores"].__getitem__)]
    run = docread("bench", "entitygrid", "score", folder, out, "--json")
    record = json.loads(run.stdout)
    assert (record["n"], record["missing"], record["malformed"]) == (12, 0, 0)


def _doc_images(root: Path, names) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (300, 200), "white").save(root / name)
    return root


def test_bench_run_docvqa_scores_with_anls(tiny_llava, tmp_path):
    images = _doc_images(tmp_path / "docvqa", ["documents/a.png", "documents/b.png"])
    annotations = tmp_path / "val.json"
    annotations.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "questionId": 1,
                        "question": "What is the date?",
                        "image": "documents/a.png",
                        "answers": ["1/8/93"],
                    },
                    {
                        "questionId": 2,
                        "question": "What is the total?",
                        "image": "documents/b.png",
                        "answers": ["$ 50"],
                    },
                ]
            }
        )
    )
    out = tmp_path / "pred.jsonl"
    run = docread(
        "bench",
        "run",
        "--dataset",
        "docvqa",
        "--annotations",
        annotations,
        "--images",
        images,
        "-o",
        out,
        "--model",
        tiny_llava,
        "--max-new-tokens",
        4,
        "--max-slices",
        0,
        "--json",
        *MODEL_OPTIONS,
    )
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    predictions = {r["id"]: r["prediction"] for r in _lines(out)}
    from docread.bench.metrics import anls

    assert set(predictions) == {"1", "2"}
    expected = (anls(predictions["1"], ["1/8/93"]) + anls(predictions["2"], ["$ 50"])) / 2
    assert (record["dataset"], record["metric"], record["n"], record["missing"]) == ("docvqa", "anls", 2, 0)
    assert record["score"] == pytest.approx(expected)


def test_bench_run_textvqa_reports_a_missing_image_and_scores_the_rest(tiny_llava, tmp_path):
    images = _doc_images(tmp_path / "train_images", ["abc123.jpg"])
    annotations = tmp_path / "TextVQA_0.5.1_val.json"
    annotations.write_text(
        json.dumps(
            {
                "dataset_name": "textvqa",
                "data": [
                    {"question_id": 7, "question": "what brand?", "image_id": "abc123", "answers": ["nokia"] * 10},
                    {"question_id": 8, "question": "what time?", "image_id": "missing", "answers": ["noon"] * 10},
                ],
            }
        )
    )
    run = docread(
        "bench",
        "run",
        "--dataset",
        "textvqa",
        "--annotations",
        annotations,
        "--images",
        images,
        "-o",
        tmp_path / "p.jsonl",
        "--model",
        tiny_llava,
        "--max-new-tokens",
        3,
        "--max-slices",
        0,
        *MODEL_OPTIONS,
    )
    assert run.returncode == 1
    assert "question 8" in run.stderr and "missing.jpg" in run.stderr and "Traceback" not in run.stderr
    assert run.stdout.startswith("textvqa (val) vqa ") and "over 2 questions (1 missing" in run.stdout
    run = docread(
        "bench",
        "run",
        "--dataset",
        "newsqa",
        "--annotations",
        annotations,
        "--images",
        images,
        "-o",
        tmp_path / "q.jsonl",
    )
    assert run.returncode == 2 and "docvqa, infovqa, chartqa, textvqa" in run.stderr
