"""`docread ...` in a process of its own, forked from a server process that has imported docread, torch and
transformers once (multiprocessing's forkserver, one a test process). For tests where the process boundary is
the point (a signal, a SIGKILL, the ranks of a distributed run) but the interpreter's start is not: each real
`python -m docread` spends about ten seconds of CPU importing torch and transformers on the 2-core test
machine. Tests of the start itself (what is imported, what reaches fd 1, `bench load`, the pty session, MCP
over stdio) run real ones. (Forking the test process itself would be cheaper still, but a fork copies the
locks its other threads hold: the child can hang on its first import.)

The child starts as a fresh process would: stdin from /dev/null, fd 1 and fd 2 to files of its own, its own
environment and `sys.argv`, default signal handlers. `Forked` answers as `subprocess.Popen` does (`pid`,
`poll`, `wait`, `send_signal`, `kill`, `returncode`: minus a signal's number when one ended it) and keeps what
the child wrote (`stdout`, `stderr`).
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


class Forked:
    def __init__(self, args, *, env: dict[str, str] | None = None):
        self.args = [str(a) for a in args]
        folder = Path(tempfile.mkdtemp(prefix="docread-forked-"))
        self._out, self._err = folder / "stdout", folder / "stderr"
        environment = dict(os.environ if env is None else env)
        self._process = _context().Process(target=_child, args=(self.args, environment, self._out, self._err))
        self._process.start()
        self.pid = self._process.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self._process.join()
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(["docread", *self.args], timeout)
        self.returncode = self._process.exitcode
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    @property
    def stdout(self) -> str:
        return self._out.read_text(errors="replace") if self._out.exists() else ""

    @property
    def stderr(self) -> str:
        return self._err.read_text(errors="replace") if self._err.exists() else ""


GROUP = "forked"  # the pytest-xdist group of the modules that fork `docread`: one worker, one server

PRELOAD = [
    "docread.cli",
    "docread.loading",
    "docread.serve",
    "docread.batch.core",
    "docread.train",
    "accelerate",
    "peft",
]


def _context():
    """The forkserver context, its server importing PRELOAD (torch and transformers with them) once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _child(args: list[str], env: dict[str, str], out: Path, err: Path) -> None:
    """In the forked process: a fresh process's standard streams, environment and signals, then the console
    entry point (its exit code is the process's)."""
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    for fd, path in ((1, out), (2, err)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, "w", closefd=False))  # block-buffered, off a tty
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # torch, imported by the server, read it there: as a start would
        import torch

        torch.set_num_threads(int(threads))
    sys.argv = ["docread", *args]
    from docread.cli import main

    main()  # SystemExit: multiprocessing flushes the streams and exits with its code


def warm() -> None:
    """Start the server now, for a module whose forked processes come later: it imports PRELOAD meanwhile
    (multiprocessing starts it and returns; the first `Forked` waits only for what is left of the import)."""
    import multiprocessing.forkserver

    _context()
    multiprocessing.forkserver.ensure_running()
