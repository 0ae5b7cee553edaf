"""Continuous batching for `docread serve --max-batch N`: up to N requests are served at once, their answers
decoded as rows of one running batch (`generate.loop.decode_joining`) that a new request's rows join at the
next decode step and a finished or cancelled one's leave.

Each running request is a thread of its own running the same library call as one-at-a-time serving
(`ask_document`, `ocr_document`), but cooperatively: only one thread runs at a time, handed the worker in
turn, so the model, PyMuPDF and the tokenizer are never used by two threads at once. A request runs until
its reader asks to decode (`DocReader.decode`, through `joiner`): its rows wait to join, and it sleeps
until the batch has tokens for it. Its page is opened and encoded then, between two decode steps. A request
whose client reads the answer as it comes (`Job.streams`) is woken once a step while its rows decode; one
that needs the answer whole only when a row of its ends (or its client left, or its time is up): each wake
is two thread switches, which would cost more than a step of a small model.

Work that touches neither the model nor PyMuPDF (OCR of a rendered page: `aside`) runs beside the batch: the
request hands the worker back for its length, and waits for its turn again when it is done. PyMuPDF stays
on the worker (it does not support threads, not even on separate documents), as do the model and tokenizer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from docread.serve.worker import Job, Worker


class _Task:
    """One running request's thread, run only while the batcher waits for it (`resume`), until it pauses
    for its next token or ends."""

    def __init__(self, job: Job, batcher: Batcher):
        self.job, self.batcher = job, batcher
        self.wake = threading.Semaphore(0)
        self.rows: list = []  # the rows it has decoded, is decoding or waits to (cancelled when it ends)
        self.failure: BaseException | None = None  # the batch failed: raised in the request
        self.done = False
        self.aside = False  # running work beside the batch (`Batcher.aside`): not resumed until it is back
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._main, name="docread-request", daemon=True)

    def _main(self) -> None:
        self.wake.acquire()
        outcome = None
        try:
            self.job.check()
            outcome = ("done", self.job.run(self.job))
        except Exception as e:  # noqa: BLE001  DocreadError, or a bug that must not stop the server (a 500)
            outcome = ("error", e)
        finally:
            self.done = True
            self.batcher._end(self)  # still holding the worker: counted before the answer leaves (/health agrees)
            if outcome is not None:
                self.job.emit(*outcome)
            self.batcher._back.release()

    def pause(self) -> None:
        """Hand the worker back to the batcher; return when it resumes this request."""
        self.batcher._back.release()
        self.wake.acquire()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        self.job.check()  # the client left or the time is up: the request ends here, its rows leave

    def beside(self, work: Callable, *args):
        """`work(*args)` run while the batch goes on without this request; then its turn again."""
        self.aside = True
        self.batcher._back.release()
        try:
            return work(*args)
        finally:
            self.batcher._returned.put(self)
            self.batcher._wake.set()
            self.wake.acquire()


class Batcher(Worker):
    """A worker that serves up to `max_batch` requests at once, their answers decoded in one running batch;
    at most `max_queue` wait to start. Set as `reader.joiner` while it runs."""

    def __init__(self, reader, max_queue: int, max_batch: int):
        super().__init__(max_queue)
        self.reader, self.max_batch = reader, max_batch
        self._thread = threading.Thread(target=self._loop, name="docread-batcher", daemon=True)
        self._back = threading.Semaphore(0)  # released when the running request hands the worker back
        self._tasks: dict[int, _Task] = {}  # thread id -> running request
        self._pending: deque = deque()  # rows waiting to join the batch, in arrival order
        self._owners: dict[int, tuple] = {}  # id(row) -> (task, inbox, index in its call, row)
        self._returned: queue.SimpleQueue = queue.SimpleQueue()  # requests back from work aside, to resume
        self._ready: dict[int, _Task] = {}  # requests with tokens to hand over, resumed before the next step
        self._wake = threading.Event()  # set when a request arrives or comes back, or on stop()
        self._stopping = False

    @property
    def active(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self.reader.joiner = self.join
        super().start()

    def _put(self, job: Job | None) -> None:
        super()._put(job)
        self._wake.set()

    def aside(self, work: Callable) -> Callable:
        """`work` run beside the batch when a request calls it: the batch decodes meanwhile. Only for work
        that touches neither the model, the tokenizer nor PyMuPDF, and is safe on any thread (OCR)."""

        def beside(*args):
            task = self._tasks.get(threading.get_ident())  # read while this request holds the worker
            return work(*args) if task is None else task.beside(work, *args)

        return beside

    # -- on a request's thread ------------------------------------------------------------------
    def join(self, rows: list, *, fast: bool = False):
        """`decode_rows`' events for `rows`, decoded in the running batch; None (the caller decodes them alone,
        here, holding the worker) off a request's thread, and for `fast` rows: the static cache they decode in
        has one shape, so they cannot join, and in the dynamic cache their log-probs would not be `--fast`'s."""
        task = self._tasks.get(threading.get_ident())
        return None if task is None or fast else self._events(task, rows)

    def _events(self, task: _Task, rows: list):
        inbox: deque = deque()  # this call's own: an abandoned call's late tokens go nowhere
        for index, row in enumerate(rows):
            self._owners[id(row)] = (task, inbox, index, row)
        task.rows.extend(rows)
        self._pending.extend(rows)
        left = len(rows)
        try:
            while left:
                while not inbox:
                    task.pause()
                event = inbox.popleft()
                left -= event[1] is None
                yield event
        finally:
            for row in rows:
                row.cancelled = True  # no-op for rows that ended; the others leave the batch

    # -- on the batcher's thread ----------------------------------------------------------------
    def _loop(self) -> None:
        from docread.generate.joining import JoiningStep
        from docread.generate.loop import decode_joining

        hires = self.reader.hires
        try:
            while not (self._stopping and not self._tasks):
                step = JoiningStep(hires.language_model, hires.lm_head)
                rows = decode_joining(
                    step,
                    self._arrivals,
                    eos_token_ids=self.reader.eos_token_ids,
                    max_rows=self.max_batch,
                    failed=self._refuse,
                )
                try:
                    for row, token, logprob in rows:
                        self._deliver(row, token, logprob)
                except Exception as e:  # noqa: BLE001  the batch failed (a bug, out of memory): each request hears
                    self._fail(e)
        finally:
            self.reader.joiner = None

    def _arrivals(self, free: int, empty: bool) -> list:
        """The rows that join the batch now (at most `free`); with an empty batch, waits for some, or for
        the end ([] once stopping and every request is done)."""
        self.rows = self.max_batch - free  # the rows still in the batch
        while True:
            self._wake.clear()  # whatever comes after this sets it again: the wait below misses nothing
            while self._ready:  # their tokens so far: on until they pause for more or end
                task = self._ready.pop(next(iter(self._ready)))
                if not task.done and not task.aside:
                    self._resume(task)
            while not self._returned.empty():  # back from work aside: on until it pauses or ends
                task = self._returned.get()
                task.aside = False
                self._resume(task)
            self._start_requests()
            for task in list(self._tasks.values()):  # a request whose client left or whose time is up ends now
                if not task.aside and (task.job.cancelled or time.monotonic() > task.job.deadline):
                    self._resume(task)
            joining = []
            while self._pending and len(joining) < free:
                row = self._pending.popleft()
                if not row.cancelled:
                    joining.append(row)
            self.rows = self.max_batch - free + len(joining)
            self.most_rows = max(self.most_rows, self.rows)
            if joining or not empty or (self._stopping and not self._tasks):
                return joining
            self._wake.wait(0.05 if self._tasks else None)  # a request arrives or comes back (or time is up)

    def _start_requests(self) -> None:
        """Start waiting requests while fewer than max_batch run; each runs until it needs its first token."""
        while len(self._tasks) < self.max_batch and not self._stopping:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is None:  # stop(): the requests already queued came before it
                self._stopping = True
                return
            with self._lock:
                self.waiting -= 1
                self.running = True
            task = _Task(job, self)
            task.thread.start()
            self._tasks[task.thread.ident] = task
            self._resume(task)

    def _deliver(self, row, token, logprob) -> None:
        """Put the event in its call's inbox; its request is resumed before the next step when it streams or
        the row ended (a request that is not streamed sleeps through its row's tokens)."""
        task, inbox, index, _ = self._owners[id(row)]
        if token is None:
            del self._owners[id(row)]
        if not task.done:
            inbox.append((index, token, logprob))
            if token is None or task.job.streams:
                self._ready[id(task)] = task

    def _refuse(self, row, error: Exception) -> None:
        """A newcomer's prefill failed: its own request hears the error; the batch goes on."""
        owner = self._owners.pop(id(row), None)
        if owner is not None and not owner[0].done and not owner[0].aside:
            owner[0].failure = error
            self._resume(owner[0])

    def _resume(self, task: _Task) -> None:
        """Let `task` run until it pauses or ends."""
        task.wake.release()
        self._back.acquire()  # when it ended, it has left (`_end`)

    def _end(self, task: _Task) -> None:
        self._tasks.pop(task.thread.ident, None)
        for row in task.rows:
            row.cancelled = True
            self._owners.pop(id(row), None)
        with self._lock:
            self.running = bool(self._tasks)
            self.served += 1
            self.mean_s = 0.8 * self.mean_s + 0.2 * (time.monotonic() - task.started)

    def _fail(self, error: Exception) -> None:
        """The batch is lost: every request with rows in it or waiting hears `error`; the next batch starts empty.
        A request whose rows all ended before it is resumed as it would have been, with its answers."""
        self._pending.clear()
        self.rows = 0
        failing = {id(t): t for t, _, _, _ in self._owners.values()}
        ended = [task for key, task in self._ready.items() if key not in failing]
        self._ready.clear()
        self._owners.clear()
        for task in failing.values():
            if not task.done and not task.aside:
                task.failure = error
                self._resume(task)
        for task in ended:
            if not task.done and not task.aside:
                self._resume(task)
