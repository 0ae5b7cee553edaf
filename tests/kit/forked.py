"""`docread ...` in a process of its own, forked from a server process that has imported docread, torch and
transformers once (multiprocessing's forkserver, one a test process). For tests where the process boundary is
the point (a signal, a SIGKILL, the ranks of a distributed run, a terminal, MCP's stdio transport) but the
interpreter's start is not: each real `python -m docread` spends about ten seconds of CPU importing torch and
transformers on the 2-core test machine. Tests of the start itself (what is imported, what reaches fd 1,
`bench load`'s first run, `.ci/gpu`) run real ones. (Forking the test process itself would be cheaper still,
but a fork copies the locks its other threads hold: the child can hang on its first import.)

The child starts as a fresh process would: stdin from /dev/null, fd 1 and fd 2 to files of its own (or FIFOs,
or a pseudo-terminal it leads a session on), its own environment and `sys.argv`, default signal handlers.
`Forked` answers as `subprocess.Popen` does (`pid`, `poll`, `wait`, `send_signal`, `kill`, `returncode`: minus
a signal's number when one ended it) and keeps what the child wrote (`stdout`, `stderr`). `relayed` gives a
forked child and a relay's command line, for a client that starts its server itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


class Forked:
    """`docread *args` forked from the server. Its standard streams: stdin from /dev/null, stdout and stderr to
    files of its own (`stdout`, `stderr` read them); or `stdin`/`stdout` paths to open instead (FIFOs: a pipe
    to a peer that is not this process); or `terminal`, a pseudo-terminal's path, for all three (the child
    leads a session of its own, and the terminal is its controlling one: Ctrl-C on it is a SIGINT)."""

    def __init__(
        self,
        args,
        *,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        stdout: str | None = None,
        terminal: str | None = None,
    ):
        self.args = [str(a) for a in args]
        folder = Path(tempfile.mkdtemp(prefix="docread-forked-"))
        self._out, self._err = folder / "stdout", folder / "stderr"
        environment = dict(os.environ if env is None else env)
        streams = (stdin or os.devnull, stdout or str(self._out), str(self._err))
        if terminal:
            streams = (terminal,) * 3
        self._process = _context().Process(target=_child, args=(self.args, environment, streams, bool(terminal)))
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


def _child(args: list[str], env: dict[str, str], streams: tuple[str, str, str], terminal: bool) -> None:
    """In the forked process: a fresh process's standard streams (opened from `streams`' paths; on a terminal,
    as its session's controlling one), environment and signals, then the console entry point (its exit code
    is the process's)."""
    if terminal:
        os.setsid()  # a session of its own, whose first terminal opened becomes its controlling one
    for fd, path in zip((0, 1, 2), streams):
        flags = os.O_RDWR if terminal else os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        opened = os.open(path, flags, 0o644)  # a FIFO's open waits for its peer, stdin's first
        os.dup2(opened, fd)
        os.close(opened)
    # as a fresh interpreter's: block-buffered off a terminal, line-buffered on one (stderr: always)
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr.reconfigure(line_buffering=True)
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


RELAY = """
import os, sys, threading
to_child = os.open(sys.argv[1], os.O_WRONLY)  # the child's stdin first, as the child opens its own
from_child = os.open(sys.argv[2], os.O_RDONLY)
def pump(source, target):
    while chunk := os.read(source, 1 << 16):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view):]
threading.Thread(target=lambda: (pump(0, to_child), os.close(to_child)), daemon=True).start()
pump(from_child, 1)
"""


def relayed(args, *, env: dict[str, str] | None = None) -> tuple[Forked, list[str]]:
    """`docread *args` forked with FIFOs for stdin and stdout, and the command line of a relay (a bare
    interpreter, no imports) that joins them to its own stdin and stdout: for a client that starts its
    server itself (the MCP SDK's stdio client). The relay's end of input is the child's; the child's end
    of output is the relay's."""
    folder = Path(tempfile.mkdtemp(prefix="docread-relay-"))
    to_child, from_child = folder / "stdin", folder / "stdout"
    os.mkfifo(to_child)
    os.mkfifo(from_child)
    child = Forked(args, env=env, stdin=str(to_child), stdout=str(from_child))
    return child, [sys.executable, "-I", "-c", RELAY, str(to_child), str(from_child)]
