"""The one way tests drive `docread ...` in-process: the console entry point (`docread.cli.main`, what
`python -m docread` runs) under click's CliRunner, stdout and stderr apart, shaped like `subprocess.run`'s
result. Tests that need the process boundary itself (signals, a pty, fd 1) run a subprocess (`system`)."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass

from click.testing import CliRunner  # typer's subclass only adds Typer-app conversion


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout then stderr, as a terminal shows both (for messages that may go to either)."""
        return self.stdout + self.stderr


class _EntryPoint:
    """What CliRunner calls: `docread.cli.main()` with `sys.argv` set, so the errors `main` catches
    around a command (option callbacks, Ctrl-C, a closed pipe) are handled as in the real process."""

    name = "docread"

    def main(self, args=(), prog_name="docread", **_):
        from docread.cli import main

        argv = sys.argv
        sys.argv = [prog_name, *args]
        try:
            main()
        finally:
            sys.argv = argv


def docread(*args, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Run:
    """Run `docread *args`; `env` adds to the environment for the run only (as the subprocess's env did)."""
    saved = dict(os.environ)  # a command may set variables for its process (--offline, --debug): not for later tests
    try:
        result = CliRunner().invoke(
            _EntryPoint(),
            [str(a) for a in args],
            input=input,
            env={"HF_HUB_OFFLINE": "1", "NO_COLOR": "1", **(env or {})},
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # what the interpreter would print for an uncaught exception: "Traceback ..." checks still see it
        stderr += "".join(traceback.format_exception(result.exception))
    return Run(result.exit_code, result.stdout, stderr)
