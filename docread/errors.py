"""docread's known failures: a stable code, one line naming the problem and the fix.

Every error a user can cause (bad input, missing weights, an impossible setting)
is a `DocreadError`. The CLI prints `error: <message>` and exits with `exit_code`;
JSON output carries `{"code": ..., "message": ...}`. Anything else is a bug and
keeps its traceback (shown with `--debug`).
"""

from __future__ import annotations

# Exit codes shared by every command.
EXIT_OK = 0
EXIT_FAILED = 1  # the run went on, but at least one file, page or record failed
EXIT_USAGE = 2  # bad options or arguments: nothing was done


class DocreadError(Exception):
    """A failure with a stable `code` and a one-line `message` that says what to do."""

    def __init__(self, code: str, message: str, *, exit_code: int = EXIT_FAILED, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.param = param  # the read option (a Settings field) to change, when one is the cause

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class ContextOverflow(DocreadError):
    """The prompt, the page and the answer's room need `needed` of the model's `context` tokens."""

    def __init__(self, message: str, *, needed: int, context: int, param: str = "max_new_tokens"):
        super().__init__("context_overflow", message, param=param)
        self.needed, self.context = needed, context


class UsageError(DocreadError):
    """A bad option value: nothing was run (exit 2)."""

    def __init__(self, message: str, code: str = "usage"):
        super().__init__(code, message, exit_code=EXIT_USAGE)
