"""Gold and prediction files as people write them (one line, a byte-order mark, pretty-printed), the
counts `bench score` reports about them, and `bench speed --json` writing nothing but the JSON."""

import json
import os

import pytest
from kit.cli import docread  # in-process: the same entry point as `python -m docread`
from kit.forked import GROUP

from docread.bench.datasets import read_gold, read_predictions
from docread.cli.speed import stdout_to_stderr
from docread.records import read_json_or_lines


def test_a_one_line_json_lines_file_is_its_record(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text('{"id": "a", "answers": ["x"]}\n')
    assert read_json_or_lines(one) == [{"id": "a", "answers": ["x"]}]
    container = tmp_path / "val.json"
    container.write_text('{"dataset_name": "docvqa", "data": [{"questionId": 1}]}')  # one line too: a container
    assert read_json_or_lines(container) == {"dataset_name": "docvqa", "data": [{"questionId": 1}]}
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"id": "a", "answers": ["x"]}\r\n{"id": "b", "answer": "y"}\r\n')
    assert read_json_or_lines(bom) == [{"id": "a", "answers": ["x"]}, {"id": "b", "answer": "y"}]


def test_one_line_gold_and_prediction_files(tmp_path):
    gold, pred = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
    gold.write_text('{"id": "7", "answers": ["Paris"]}')  # no final newline either
    pred.write_text('{"id": 7, "prediction": "paris"}\n')
    assert read_gold(gold) == {"7": ("Paris",)}
    assert read_predictions(pred) == read_predictions(pred).__class__({"7": "paris"}, 0)
    run = docread("bench", "score", "--metric", "exact", gold, pred)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "exact 1.0000 over 1 question (0 missing, 0 malformed)\n"


def test_nothing_well_formed_is_counted_malformed(tmp_path):
    bom = tmp_path / "bom.jsonl"  # Windows editors and PowerShell write a byte-order mark
    bom.write_bytes(b'\xef\xbb\xbf{"id": "1", "prediction": "a"}\r\n{"id": "2", "prediction": "b"}\r\n\r\n')
    assert read_predictions(bom) == read_predictions(bom).__class__({"1": "a", "2": "b"}, 0)
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps({"id": "1", "prediction": "a"}, indent=2))
    assert read_predictions(pretty).answers == {"1": "a"} and read_predictions(pretty).malformed == 0
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"questionId": 1, "answer": "a"}, {"questionId": 2, "answer": None}], indent=1))
    assert (read_predictions(results).answers, read_predictions(results).malformed) == ({"1": "a"}, 1)


def test_bench_score_counts_and_wording(tmp_path):
    gold, pred = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
    gold.write_text('{"id": "1", "answers": ["a"]}\n{"id": "2", "answers": ["b"]}\n')
    pred.write_text('{"id": "1", "prediction": "a"}\n{"id": "2", "predic')  # one torn line: 1 malformed, 1 missing
    run = docread("bench", "score", "--metric", "exact", gold, pred)
    assert run.stdout == "exact 0.5000 over 2 questions (1 missing, 1 malformed)\n"


def test_stdout_to_stderr_moves_native_writes(capfd):
    with stdout_to_stderr():
        os.write(1, b"\n\n")  # what the tokenizers trainer does from Rust
    os.write(1, b"result\n")
    out, err = capfd.readouterr()
    assert out == "result\n" and err == "\n\n"


@pytest.mark.system
@pytest.mark.xdist_group(GROUP)  # conftest's speed_run, forked: on the worker of kit.forked's server
def test_speed_json_stdout_is_exactly_the_json(speed_run):
    run = speed_run  # conftest: a real process, shared with tests/test_speed.py; fd 1 writes are the point
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("{") and run.stdout.endswith("}\n") and run.stdout.count("\n") == 1
    assert json.loads(run.stdout)["benchmark"] == "speed"
