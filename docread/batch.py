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

from docread.api import Answer, DocReader, EncodedPage, PageSource
from docread.errors import DocreadError
from docread.intake import Document, Limits, open_document
from docread.records import JsonLinesLog

OOM_SLICES = (16, 9, 4, 0)  # tile budgets tried, in turn, when a page does not fit in GPU memory
VISION_BATCH = 4            # pages of one file through the vision encoder in one pass (~52 views at 16 tiles)


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


def record_key(file: str, sha256: str | None, page: int | None, question: str, fingerprint: dict) -> str:
    """A record's identity for --resume: file (path and content hash: two copies of a file are two
    files; an edited file is a new one), page, question, model and settings."""
    text = json.dumps([file, sha256, page, question, fingerprint], sort_keys=True, ensure_ascii=False)
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
def page_source(document: Document, page) -> PageSource:
    return PageSource(lambda w, h: document.render(page, w, h), page.width, page.height, document.name, page.number)


def _free_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_with_fallback(reader: DocReader, document: Document, page, questions: Sequence[str],
                         settings: Settings, *, below: int | None = None) -> tuple[EncodedPage, bool]:
    """Encode a page and prefill its prefix; on CUDA out-of-memory free memory and retry with fewer
    tiles (16 -> 9 -> 4 -> 0), or only budgets under `below` when a larger one already failed.
    Returns the encoded page and whether it had to be degraded."""
    import torch

    requested = reader.preset.max_slices if settings.max_slices is None else settings.max_slices
    budgets = [requested] + [n for n in OOM_SLICES if n < requested]
    if below is not None:
        budgets = [n for n in budgets if n < below]
    for budget in budgets:
        try:
            (encoded,) = reader.encode_pages([page_source(document, page)], questions, max_slices=budget,
                                             max_new_tokens=settings.max_new_tokens)
            encoded.cache  # noqa: B018  prefill now, so an out-of-memory shows here
            return encoded, budget != requested
        except torch.cuda.OutOfMemoryError:
            _free_gpu_memory()
    raise DocreadError("out_of_memory", f"{document.name} page {page.number} does not fit in GPU memory even "
                       "without tiles: free the GPU, or use --device cpu")


def encode_group(reader: DocReader, document: Document, pages: Sequence, questions: Sequence[str],
                 settings: Settings) -> list[EncodedPage] | None:
    """Several pages through the vision encoder in one pass; None on CUDA out-of-memory (the caller
    then encodes page by page, with the fallback)."""
    import torch

    try:
        return reader.encode_pages([page_source(document, p) for p in pages], questions,
                                   max_slices=settings.max_slices, max_new_tokens=settings.max_new_tokens)
    except torch.cuda.OutOfMemoryError:
        _free_gpu_memory()
        return None


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
                key = record_key(file, sha, None, question, fingerprint)
                if key not in sink.done:
                    emit(_error_record(key, file, sha, None, question, e))
            continue
        with document:
            _batch_document(reader, document, questions, sha, fingerprint, sink.done, settings, emit, should_stop)
    return failed


def _batch_document(reader, document, questions, sha, fingerprint, done, settings, emit, should_stop) -> None:
    """The document's pages in groups of VISION_BATCH: one vision pass a group, then each page's
    questions on its own KV prefix, freed before the next page's."""
    from docread.prompt import task_question

    pending = []
    for page in document.pages:
        keyed = {q: record_key(document.name, sha, page.number, q, fingerprint) for q in questions}
        todo = [q for q in questions if keyed[q] not in done]
        if todo:
            pending.append((page, todo, keyed))
    prompts = [task_question(settings.task, q) for q in questions]
    for start in range(0, len(pending), VISION_BATCH):
        group = pending[start : start + VISION_BATCH]
        if should_stop():
            return
        try:
            encoded = encode_group(reader, document, [page for page, _, _ in group], prompts, settings)
        except DocreadError as e:  # a page of the group failed to render: go page by page
            encoded = None
            if len(group) == 1:
                page, todo, keyed = group[0]
                for question in todo:
                    emit(_error_record(keyed[question], document.name, sha, page.number, question, e))
                continue
        for index, (page, todo, keyed) in enumerate(group):
            page_encoded = encoded[index] if encoded is not None else None
            _batch_page(reader, document, page, page_encoded, todo, keyed, sha, settings, emit, should_stop)
            if page_encoded is not None:
                page_encoded.release()
            if should_stop():
                return


def _batch_page(reader, document, page, encoded, todo, keyed, sha, settings, emit, should_stop) -> None:
    """Answer a page's outstanding questions (stopping after a record when asked); on out-of-memory
    re-encode the page with fewer tiles."""
    import torch

    from docread.prompt import task_question

    prompts = {q: task_question(settings.task, q) for q in todo}
    answered: set[str] = set()
    degraded = False
    try:
        if encoded is None:
            encoded, degraded = encode_with_fallback(reader, document, page, list(prompts.values()), settings)
        for question in todo:
            while True:
                try:
                    (answer,) = answer_all(reader, encoded, [prompts[question]], settings)
                    break
                except torch.cuda.OutOfMemoryError:
                    encoded.release()
                    _free_gpu_memory()
                    encoded, _ = encode_with_fallback(reader, document, page, list(prompts.values()), settings,
                                                      below=encoded.page_plan.max_slices)
                    degraded = True
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
