"""`ocr --json`'s record for one page, shared by the `ocr` command and the server's /v1/documents/ocr
(no FastAPI here: the local command imports it)."""

from __future__ import annotations


def ocr_record(file: str, result) -> dict:
    """One page's transcription (a `docread.document.PageAnswer` from `ocr_document`) as ocr --json writes it."""
    answer = result.answer
    if answer is None:
        return {"file": file, "page": result.page, "text": None, "status": "error", "error": result.error.to_json()}
    return {
        "file": file,
        "page": result.page,
        "text": answer.answer,
        "status": "ok",
        "score": answer.score,
        "model": answer.model,
        "rows": answer.rows,
        "cols": answer.cols,
        "stopped_by": answer.stopped_by,
        "timing_ms": answer.timing_ms,
        "view": answer.view,
    }
