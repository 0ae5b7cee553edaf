"""Readers of the general benchmarks' own released files (nothing is downloaded, nothing converted).

- ST-VQA: `train_task_3.json` / `test_task_3.json`: {"data": [{"question_id", "question",
  "file_path": "coco-text/….jpg", "answers": [...]}]} (test: no answers); images under --images.
- AI2D: `ai2d/questions/<image>.json` (a folder of them, or one): {"imageName", "questions":
  {question text: {"questionId", "answerTexts": [4 options], "correctAnswer": index}}};
  images `ai2d/images/<imageName>`. The test split is the diagrams listed in the release's
  `ai2d_test_ids.csv` (one image id a line, "1007" for `1007.png.json`; in `ai2d/` or `questions/`):
  3,088 questions; train is the rest.
- ChartQA: `test/test_human.json` and `test/test_augmented.json` ([{"imgname", "query", "label"}]):
  their folder (split "test": both) or one of them; ids `<file stem>/<position>`.
- ScienceQA: `problems.json`: {pid: {"question", "choices", "answer": index, "hint", "image":
  "image.png" | null, "split"}}; the test split's questions with an image (as LLaVA evaluates);
  images `images/test/<pid>/image.png` (--images is the `images` folder).
- MMBench: the TSV (`mmbench_dev_20230712.tsv`, ...): index, question, hint, A-D, answer,
  category, image (base64, or the index of a row holding it). Each question with N options becomes
  N samples `<index>@<k>`, options rotated k steps (LLaVA's --all-rounds), for CircularEval.
- POPE: `coco_pope_{adversarial,popular,random}.json` (JSON Lines {"question_id", "image",
  "text", "label"}), one file or a folder of them; the split is the file name's last word; ids
  `<split>/<question_id>`; images are COCO val2014 files.
- HallusionBench: `HallusionBench.json`: [{"category": VD|VS, "subcategory", "set_id",
  "figure_id", "question_id", "visual_input": 0|1|2, "question", "gt_answer": "1"|"0"}];
  images `<category>/<subcategory>/<set_id>_<figure_id>.png` under the `hallusion_bench` folder
  (as the authors' `get_image_file_location`); visual_input 0 questions have no image.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from docread.bench.choice import LETTERS
from docread.bench.datasets import Sample, read_annotations
from docread.errors import DocreadError, UsageError
from docread.records import read_json_or_lines


def _require(record: dict, keys: tuple[str, ...], where: str, dataset: str) -> None:
    missing = [key for key in keys if key not in record]
    if missing:
        raise DocreadError(
            "bad_annotations", f"{where} has no {', '.join(missing)}; is this the official {dataset} annotation file?"
        )


def _load(path: Path):
    if not Path(path).exists():
        raise DocreadError("not_found", f"{path}: no such file")
    return read_json_or_lines(path)


def read_stvqa(path: Path) -> list[Sample]:
    data = _load(path)
    records = data["data"] if isinstance(data, dict) else data
    samples = []
    for index, record in enumerate(records):
        _require(record, ("question_id", "question"), f"{path}: question {index}", "ST-VQA")
        image = record.get("file_path") or record.get("file_name")
        if not image:
            raise DocreadError("bad_annotations", f"{path}: question {index} has no file_path")
        answers = tuple(str(a) for a in record.get("answers", ()))
        samples.append(Sample(str(record["question_id"]), record["question"], str(image), answers))
    return samples


AI2D_TEST_IDS = "ai2d_test_ids.csv"  # the release's list of test diagrams (982 diagrams, 3,088 questions)
AI2D_SPLITS = ("test", "train", "all")


def _ai2d_test_ids(path: Path) -> set[str]:
    """The image ids of AI2D's test split, from the ai2d_test_ids.csv nearest `path` (its folder or above)."""
    folder = path if path.is_dir() else path.parent
    for place in (folder, folder.parent, folder.parent.parent):
        if (place / AI2D_TEST_IDS).is_file():
            lines = (place / AI2D_TEST_IDS).read_text(encoding="utf-8-sig").splitlines()
            return {line.strip() for line in lines if line.strip()}
    raise DocreadError(
        "not_found",
        f"{path}: AI2D's test split is the diagrams listed in {AI2D_TEST_IDS} (from the AI2D release), "
        f"not found in {folder} or the two folders above it; put it in ai2d/, or pass --split all",
    )


def read_ai2d(path: Path, split: str = "test") -> list[Sample]:
    """AI2D's questions of `split`: test (the diagrams ai2d_test_ids.csv lists), train (the rest) or all."""
    path = Path(path)
    if split not in AI2D_SPLITS:
        raise UsageError(f"--split {split!r}: AI2D has {', '.join(AI2D_SPLITS)}")
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise DocreadError("bad_annotations", f"{path}: no AI2D question files (*.json) in this folder")
    if split != "all":
        test = _ai2d_test_ids(path)
        files = [f for f in files if (f.name.split(".")[0] in test) == (split == "test")]
    samples = []
    for file in files:
        data = _load(file)
        record = data[0] if isinstance(data, list) and len(data) == 1 else data
        _require(record, ("imageName", "questions"), str(file), "AI2D")
        for text, question in record["questions"].items():
            _require(question, ("questionId", "answerTexts", "correctAnswer"), f"{file}: {text!r}", "AI2D")
            options = tuple(str(o) for o in question["answerTexts"])
            samples.append(
                Sample(
                    str(question["questionId"]),
                    text,
                    record["imageName"],
                    (LETTERS[int(question["correctAnswer"])],),
                    options,
                )
            )
    return samples


def read_scienceqa(path: Path, split: str = "test") -> list[Sample]:
    if not Path(path).is_file():
        raise DocreadError("not_found", f"{path}: no such file")
    try:  # one JSON object of problems by id, which read_json_or_lines would take for one record
        problems = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DocreadError("bad_json", f"{path}: not JSON ({e})") from None
    if not isinstance(problems, dict):
        raise DocreadError("bad_annotations", f"{path}: expected ScienceQA's problems.json ({{pid: problem}})")
    samples = []
    for pid, problem in problems.items():
        _require(problem, ("question", "choices", "answer", "split"), f"{path}: problem {pid}", "ScienceQA")
        if problem["split"] != split or not problem.get("image"):  # LLaVA's image subset of the test split
            continue
        hint = (problem.get("hint") or "").strip()
        question = f"Context: {hint}\n{problem['question']}" if hint else problem["question"]
        samples.append(
            Sample(
                str(pid),
                question,
                f"{split}/{pid}/{problem['image']}",
                (LETTERS[int(problem["answer"])],),
                tuple(str(c) for c in problem["choices"]),
            )
        )
    return samples


def _blank(value) -> bool:
    return value is None or str(value).strip() in ("", "nan", "NaN", "None")


def read_mmbench(path: Path) -> list[Sample]:
    if not Path(path).is_file():
        raise DocreadError("not_found", f"{path}: no such file")
    csv.field_size_limit(sys.maxsize)  # images are base64 cells of many megabytes
    with open(path, encoding="utf-8-sig", newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    by_index = {row.get("index"): row for row in rows}
    samples = []
    for number, row in enumerate(rows, 2):
        _require(row, ("index", "question", "A", "B", "answer", "image"), f"{path} line {number}", "MMBench")
        options = []
        for letter in LETTERS[:4]:  # options stop at the first empty one, as LLaVA's get_options does
            if _blank(row.get(letter)):
                break
            options.append(row[letter])
        image = row["image"]
        if len(image) < 64 and image in by_index:  # VLMEvalKit's TSVs point a repeated image at its row
            image = by_index[image]["image"]
        question = row["question"] if _blank(row.get("hint")) else f"{row['hint']}\n{row['question']}"
        gold = LETTERS.index(row["answer"].strip())
        for k in range(len(options)):  # pass k shows options[k:] + options[:k] as A, B, ...
            samples.append(
                Sample(
                    f"{row['index']}@{k}",
                    question,
                    "",
                    (LETTERS[(gold - k) % len(options)],),
                    tuple(options[k:] + options[:k]),
                    {"question": row["index"], "category": row.get("category") or "", "round": str(k)},
                    inline_image=image,
                )
            )
    return samples


CHARTQA_SPLITS = ("test", "test_human", "test_augmented")  # "test": both halves, each scored, then averaged


def read_chartqa(path: Path, split: str = "test") -> list[Sample]:
    """ChartQA's questions: from a folder, `split`'s files (test = test_human + test_augmented); from
    one file, that file (its stem is its split). Ids `<stem>/<position>`, the split in `groups`."""
    path = Path(path)
    if path.is_dir():
        stems = ("test_human", "test_augmented") if split == "test" else (split,)
        files = [path / f"{stem}.json" for stem in stems]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise DocreadError("not_found", f"{path}: no {', '.join(absent)} in this folder (ChartQA's test/ folder?)")
    else:
        files = [path]
    samples = []
    for file in files:
        samples += [
            Sample(f"{file.stem}/{s.id}", s.question, s.image, s.answers, groups={"split": file.stem})
            for s in read_annotations(file, "chartqa")
        ]
    return samples


POPE_SPLITS = ("all", "adversarial", "popular", "random")


def read_pope(path: Path, split: str = "all") -> list[Sample]:
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if split != "all":
        files = [f for f in files if f.stem.rsplit("_", 1)[-1] == split]
    if not files:
        raise DocreadError("bad_annotations", f"{path}: no POPE files (coco_pope_<split>.json) of split {split}")
    samples = []
    for file in files:
        split = file.stem.rsplit("_", 1)[-1]  # coco_pope_adversarial -> adversarial
        for index, record in enumerate(_load(file)):
            _require(record, ("question_id", "image", "text", "label"), f"{file}: question {index}", "POPE")
            samples.append(
                Sample(
                    f"{split}/{record['question_id']}",
                    record["text"],
                    record["image"],
                    (record["label"].strip().lower(),),
                    groups={"split": split},
                )
            )
    return samples


def read_hallusionbench(path: Path) -> list[Sample]:
    samples = []
    for index, record in enumerate(_load(path)):
        keys = (
            "category",
            "subcategory",
            "set_id",
            "figure_id",
            "question_id",
            "visual_input",
            "question",
            "gt_answer",
        )
        _require(record, keys, f"{path}: question {index}", "HallusionBench")
        groups = {key: str(record[key]) for key in keys[:6]}
        image = (
            ""
            if groups["visual_input"] == "0"
            else f"{groups['category']}/{groups['subcategory']}/{groups['set_id']}_{groups['figure_id']}.png"
        )
        key = "_".join(groups[k] for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))
        answer = "yes" if str(record["gt_answer"]) == "1" else "no"
        samples.append(Sample(key, record["question"], image, (answer,), groups=groups))
    return samples
