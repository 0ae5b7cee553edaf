"""Every record kind has the same keys whatever happened: an error leaves unknown values null."""

from __future__ import annotations

from dataclasses import fields

import pytest

from docread.document import PageAnswer
from docread.errors import DocreadError
from docread.records import Answer, AskRecord, BatchRecord, ErrorRecord, FieldRecord, OcrRecord, ocr_record
from docread.results import DocumentAnswer

ERROR = DocreadError("corrupt", "x.pdf: not a PDF or an image")


def _answer(**changes) -> Answer:
    values = dict(
        file="x.pdf",
        page=1,
        question="What?",
        answer="42",
        score=-0.5,
        model="tiny",
        rows=1,
        cols=2,
        tiles=2,
        visual_tokens=40,
        image_tokens=44,
        prompt_tokens=60,
        generated_tokens=2,
        max_slices=2,
        reduced_from=None,
        stopped_by="eos",
        timing_ms={"encode": 1.0},
        evidence=[{"text": "42"}],
        grounded=True,
        text_prompt={"source": "layer", "tokens": 5, "cut": False},
    )
    return Answer(**{**values, **changes})


def test_ask_records_have_one_key_list():
    ok = DocumentAnswer("x.pdf", "What?", _answer(), [_answer()]).to_json()
    failed = DocumentAnswer("x.pdf", "What?", None, [], [(1, ERROR)], repaired=True).to_json()
    assert list(ok) == list(failed) == [f.name for f in fields(AskRecord)]
    assert failed["status"] == "error" and failed["error"] == {"code": "corrupt", "message": ERROR.message}
    assert failed["repaired"] is True and failed["page"] is None and failed["evidence"] == []
    assert ok["status"] == "ok" and ok["error"] is None and ok["answer"] == "42"
    # the CLI rebuilds the best Answer from an ok record's fields
    assert Answer(**{f.name: ok[f.name] for f in fields(Answer)}) == _answer()


def test_ocr_records_have_one_key_list():
    ok = ocr_record("x.pdf", PageAnswer("Transcribe", 1, _answer(answer="page text")))
    failed = ocr_record("x.pdf", PageAnswer("Transcribe", 2, None, ERROR))
    assert list(ok) == list(failed) == [f.name for f in fields(OcrRecord)]
    assert ok["text"] == "page text" and failed["text"] is None and failed["error"]["code"] == "corrupt"


def test_batch_records_have_one_key_list():
    common = dict(view="hires", settings="abc123")
    ok = BatchRecord.answered("k", "sha", _answer(), degraded=False, repaired=False, **common).to_json()
    failed = BatchRecord.failed("k", "x.pdf", None, None, "What?", ERROR, **common).to_json()
    assert list(ok) == list(failed) == [f.name for f in fields(BatchRecord)]
    assert failed["repaired"] is None and failed["settings"] == ok["settings"] == "abc123"
    assert ok["text_prompt"] == {"source": "layer", "tokens": 5, "cut": False} and failed["text_prompt"] is None


@pytest.mark.parametrize("error", [ERROR, {"code": "corrupt", "message": ERROR.message}])
def test_error_records_and_extract_fields_have_one_key_list(error):
    assert ErrorRecord.of(error).to_json() == ERROR.to_json()
    ok = FieldRecord(42.0, "42", 1, -0.5, [], None).to_json()
    assert list(ok) == list(FieldRecord.failed("no answer").to_json()) == [f.name for f in fields(FieldRecord)]
