"""Many questions over many pages: each page rendered and encoded once for all its questions,
records written one complete JSON line at a time, resumable after any kill.

`ask_pages` drives one document (the `ask` and `ocr` commands); `run_batch` drives files x
pages x questions into a record sink (the `batch` command). Nothing here prints: progress
goes to an `on_record` callback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from docread.api import Answer, DocReader, EncodedPage
from docread.errors import DocreadError
from docread.intake import Document, Limits, open_document
from docread.records import JsonLinesLog

OOM_SLICES = (16, 9, 4, 0)  # tile budgets tried, in turn, when a page does not fit in GPU memory


@dataclass
class Settings:
    """What shapes an answer besides the file, page and question (part of the resume key)."""

    task: str = "qa"
    max_slices: int | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None
    dpi: float = 200.0
    fast: bool = False

    def fingerprint(self, reader: DocReader) -> dict:
        return {"model": reader.name, "adapter": reader.adapter, "task": self.task, "max_slices": self.max_slices,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": self.seed,
                "dpi": self.dpi}


def record_key(sha256: str | None, page: int | None, question: str, fingerprint: dict) -> str:
    """A record's identity for --resume: file hash, page, question, model and settings."""
    text = json.dumps([sha256, page, question, fingerprint], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


# -- one page, several questions ------------------------------------------------------------------
def encode_with_fallback(reader: DocReader, document: Document, page, questions: Sequence[str],
                         settings: Settings) -> tuple[EncodedPage, bool]:
    """Encode a page; on CUDA out-of-memory free memory and retry with fewer tiles (16 -> 9 -> 4 -> 0).
    Returns the encoded page and whether it had to be degraded."""
    import torch

    requested = reader.preset.max_slices if settings.max_slices is None else settings.max_slices
    budgets = [requested] + [n for n in OOM_SLICES if n < requested]
    for attempt, budget in enumerate(budgets):
        try:
            encoded = reader.encode(lambda w, h: document.render(page, w, h), page.width, page.height, questions,
                                    file=document.name, page=page.number, max_slices=budget,
                                    max_new_tokens=settings.max_new_tokens)
            return encoded, attempt > 0
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if budget == 0 or attempt == len(budgets) - 1:
                raise DocreadError("out_of_memory", f"{document.name} page {page.number} does not fit in GPU memory "
                                   "even without tiles: free the GPU or use --device cpu") from None
    raise AssertionError("unreachable")


def answer_all(reader: DocReader, encoded: EncodedPage, questions: Sequence[str], settings: Settings,
               on_chunk: Callable[[str], None] | None = None) -> Iterator[Answer]:
    """Answer each question about one encoded page, in order."""
    for question in questions:
        stream = reader.answer(encoded, question, max_new_tokens=settings.max_new_tokens,
                               temperature=settings.temperature, seed=settings.seed, fast=settings.fast)
        for chunk in stream:
            if on_chunk is not None:
                on_chunk(chunk)
        yield stream.answer


@dataclass
class DocumentAnswer:
    """One question over several pages: the best-scoring page's answer, every page's kept."""

    best: Answer
    pages: list[Answer] = field(default_factory=list)

    def to_json(self) -> dict:
        record = self.best.to_json()
        record["pages"] = [{"page": a.page, "answer": a.answer, "score": a.score} for a in self.pages]
        return record


def best_of(answers: Sequence[Answer]) -> DocumentAnswer:
    """The answer with the highest mean token log-probability (an empty answer scores lowest)."""
    best = max(answers, key=lambda a: float("-inf") if a.score is None else a.score)
    return DocumentAnswer(best=best, pages=list(answers))


# -- batch: files x pages x questions ------------------------------------------------------------
def record_log(path: str, *, resume: bool) -> JsonLinesLog:
    """The batch output: records keyed by `key` (see `record_key`)."""
    return JsonLinesLog(path, key_field="key", resume=resume)


def run_batch(reader: DocReader, files: Sequence[str], questions: Sequence[str], sink: JsonLinesLog, *,
              settings: Settings, pages: str | None = None, password: str | None = None,
              limits: Limits | None = None, on_record: Callable[[dict], None] = lambda r: None,
              should_stop: Callable[[], bool] = lambda: False) -> int:
    """Write one record per (file, page, question) not already in `sink`; returns how many failed."""
    fingerprint = settings.fingerprint(reader)
    failed = 0

    def emit(record: dict) -> None:
        nonlocal failed
        failed += record["status"] == "error"
        sink.write(record)
        on_record(record)

    for file in files:
        if should_stop():
            break
        sha = file_sha256(file)
        try:
            document = open_document(file, pages=pages, password=password, dpi=settings.dpi, limits=limits)
        except DocreadError as e:
            for question in questions:
                key = record_key(sha, None, question, fingerprint)
                if key not in sink.done:
                    emit(_error_record(key, file, sha, None, question, e))
            continue
        with document:
            for page in document.pages:
                if should_stop():
                    break
                keyed = {q: record_key(sha, page.number, q, fingerprint) for q in questions}
                todo = [q for q in questions if keyed[q] not in sink.done]
                if todo:
                    _batch_page(reader, document, page, todo, keyed, sha, settings, emit, should_stop)
    return failed


def _batch_page(reader, document, page, todo, keyed, sha, settings, emit, should_stop) -> None:
    from docread.prompt import task_question

    prompts = {q: task_question(settings.task, q) for q in todo}
    answered: set[str] = set()
    try:
        encoded, degraded = encode_with_fallback(reader, document, page, list(prompts.values()), settings)
        for question in todo:
            (answer,) = answer_all(reader, encoded, [prompts[question]], settings)
            emit({"key": keyed[question], "file": document.name, "sha256": sha, "page": page.number,
                  "question": question, "answer": answer.answer, "score": answer.score, "status": "ok",
                  "error": None, "degraded": degraded, "model": answer.model, "rows": answer.rows,
                  "cols": answer.cols, "visual_tokens": answer.visual_tokens, "timing_ms": answer.timing_ms})
            answered.add(question)
            if should_stop():
                return
    except DocreadError as e:  # the page failed: the questions it still owed become error records
        for question in todo:
            if question not in answered:
                emit(_error_record(keyed[question], document.name, sha, page.number, question, e))


def _error_record(key, file, sha, page, question, error: DocreadError) -> dict:
    return {"key": key, "file": file, "sha256": sha, "page": page, "question": question, "answer": None,
            "score": None, "status": "error", "error": error.to_json(), "timing_ms": {}}
