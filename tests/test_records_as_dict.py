"""`records.as_dict`, the records' `to_json`: the same dict as `dataclasses.asdict` for what records hold
(nested dataclasses, lists, dicts, tuples and namedtuples, numpy numbers), built afresh: changing the dict
changes no record."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from docread.records import Answer, AskRecord, as_dict

Point = namedtuple("Point", "x y")


@dataclass
class Inner:
    at: Point
    tags: tuple = ()


@dataclass
class Outer:
    inner: Inner
    rows: list = field(default_factory=list)
    table: dict = field(default_factory=dict)
    score: float | None = None


def test_as_dict_equals_asdict_and_copies_every_container():
    outer = Outer(
        Inner(Point(1, [2, 3]), ("a", 1.5)),
        [Inner(Point(0, 0)), {"k": [None, True]}],
        {"n": {"m": [1, 2]}},
        np.float64(0.25),
    )
    mine, theirs = as_dict(outer), asdict(outer)
    assert mine == theirs and repr(mine) == repr(theirs)  # same types too: namedtuple, tuple, numpy float
    mine["rows"][1]["k"].append(0)
    mine["table"]["n"]["m"].clear()
    assert outer.rows[1] == {"k": [None, True]} and outer.table == {"n": {"m": [1, 2]}}


def test_an_ask_record_is_the_answer_s_fields_then_its_own():
    answer = Answer(**{f.name: None for f in fields(Answer)})
    answer.timing_ms, answer.evidence = {"decode": 1.0}, [{"page": 1, "bbox": [0, 0, 1, 1]}]
    record = AskRecord.answered(answer, "Total?", pages=[{"page": 1, "answer": "4", "score": 0.5}])
    assert record.to_json() == asdict(record) and record.to_json()["question"] == "Total?"
    record.to_json()["evidence"][0]["bbox"].append(2)
    assert answer.evidence == [{"page": 1, "bbox": [0, 0, 1, 1]}]
