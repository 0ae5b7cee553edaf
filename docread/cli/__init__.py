"""The `docread` command line: each command validates, calls the library, renders.

Answers and JSON go to stdout; progress and diagnostics to stderr. Known failures are
one `error:` line and an exit code (0 ok, 1 something failed, 2 usage); `--debug`
shows tracebacks. torch and transformers load only inside commands that run a model.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from docread import __version__
from docread.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DocreadError, UsageError

app = typer.Typer(
    name="docread",
    help="Ask questions of PDFs and images, locally, with HiRes-LLaVA.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _version(value: bool):
    if value:
        typer.echo(f"docread {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", envvar="DOCREAD_DEBUG", help="Show tracebacks of unexpected errors.")] = False,
):
    """Ask questions of PDFs and images, locally, with HiRes-LLaVA."""
    if debug:
        os.environ["DOCREAD_DEBUG"] = "1"


from docread.cli import batch, bench, models, read, speed, train  # noqa: E402  (command modules register on import)

bench.app.add_typer(speed.app)
app.add_typer(read.app)
app.add_typer(batch.app)
app.add_typer(models.app, name="models")
app.add_typer(train.app)
app.add_typer(bench.app, name="bench")


def main() -> None:
    """Console entry point: run the app, turning known errors into one line and an exit code."""
    try:
        app()
    except DocreadError as e:
        if os.environ.get("DOCREAD_DEBUG"):
            raise
        sys.stderr.write(f"error: {e.message}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except BrokenPipeError:  # `docread ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)


__all__ = ["app", "main", "EXIT_USAGE"]
