"""One model, one worker: requests wait in a bounded FIFO queue and run one at a time on a thread of
their own (the event loop stays free to accept, refuse and stream); pages stay encoded across requests
in a bounded LRU cache, so a second question about a page pays only its decode."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from docread.errors import DocreadError


class Busy(Exception):
    """The queue is full: the client should retry later (503 + Retry-After)."""


class Cancelled(DocreadError):
    def __init__(self, why: str):
        super().__init__("cancelled", why)


class Job:
    """One request's work: `run(job)` executes on the worker thread; what it `emit`s reaches the request's
    coroutine, in order, through `next()`. `streams`: the client reads the answer as it comes (a streamed
    chat, ask's live events); otherwise it needs it only whole, and a batch hands a row's tokens over at its end."""

    def __init__(
        self, run: Callable[[Job], Any], loop: asyncio.AbstractEventLoop, deadline: float, streams: bool = True
    ):
        self.run, self.loop, self.deadline, self.streams = run, loop, deadline, streams
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False  # the client left: stop at the next token

    def emit(self, kind: str, value: Any = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))

    def check(self) -> None:
        """Raise when the request should stop: the client left, or its time is up."""
        if self.cancelled:
            raise Cancelled("the client closed the connection")
        if time.monotonic() > self.deadline:
            raise DocreadError("timeout", "the request took longer than the server's --request-timeout")

    async def next(self) -> tuple[str, Any]:
        return await self.events.get()


class Worker:
    """A thread that runs jobs in arrival order; at most `max_queue` wait behind the one running."""

    max_batch = 1  # requests served at once (`batcher.Batcher`: more)

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = False
        self.served = 0
        self.mean_s = 1.0  # running mean of a request's time on the worker (Retry-After's estimate)
        self.rows = 0  # answers being decoded together now (one at a time here)
        self.most_rows = 0  # the most answers one decode step has held
        self._thread = threading.Thread(target=self._loop, name="docread-worker", daemon=True)

    @property
    def active(self) -> int:
        """Requests being served now."""
        return int(self.running)

    def start(self) -> None:
        self._thread.start()

    def aside(self, work: Callable) -> Callable:
        """`work` as a request runs it (`batcher.Batcher`: beside the batch); here, as it is: one job at a time."""
        return work

    def stop(self, timeout: float = 30.0) -> None:
        """Let the jobs already queued finish, then end the thread."""
        self._put(None)
        self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self.waiting >= self.max_queue:
                raise Busy(f"{self.waiting} requests are already waiting (--max-queue {self.max_queue})")
            self.waiting += 1
        self._put(job)

    def _put(self, job: Job | None) -> None:
        self._queue.put(job)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                self.waiting -= 1
                self.running = True
                self.rows = self.most_rows = 1
            start = time.monotonic()
            try:
                job.check()
                outcome = ("done", job.run(job))
            except Exception as e:  # noqa: BLE001  DocreadError, or a bug that must not kill the one worker (a 500)
                outcome = ("error", e)
            finally:
                with self._lock:
                    self.running, self.rows = False, 0
                    self.served += 1
                    self.mean_s = 0.8 * self.mean_s + 0.2 * (time.monotonic() - start)
            job.emit(*outcome)  # after the counts: a client that has its answer finds it served in /health
