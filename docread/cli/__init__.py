"""The `docread` command line: each command validates, calls the library, renders.

Answers and JSON go to stdout; progress and diagnostics to stderr. Known failures are
one `error:` line and an exit code (0 ok, 1 something failed, 2 usage); `--debug`
shows tracebacks. torch and transformers load only inside commands that run a model.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated

import typer
import typer.main
import typer.rich_utils
from typer.core import TyperArgument, TyperGroup, TyperOption

from docread import __version__
from docread.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, DocreadError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class _Root(TyperGroup):
    """Every command runs inside this: a known error is one `error:` line and its exit code, a closed
    stdout (`| head`) is a normal end, Ctrl-C says so, and anything unexpected is one line too
    (its traceback with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DocreadError as e:
            if _debug():
                raise
            _stderr_line(f"error: {e.message}")
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:  # the reader left; what it read was complete
            _silence_stdout()
            raise typer.Exit(EXIT_OK) from None
        except KeyboardInterrupt:
            _stderr_line("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors and exits: Typer's own way
            raise
        except Exception as e:  # a bug: say so in one line, keep the traceback for --debug
            if _debug():
                raise
            from docread.cli.output import one_line

            _stderr_line(
                f"error: unexpected {type(e).__name__}: {one_line(e)} "
                "(a bug: rerun with --debug for the traceback and report it)"
            )
            raise typer.Exit(EXIT_FAILED) from None


def _debug() -> bool:
    return bool(os.environ.get("DOCREAD_DEBUG"))


def _stderr_line(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed too: the exit code still tells
        pass


def _silence_stdout() -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_display_type = TyperOption.display_type_rich
# A flag takes no value: Typer's help would show it as `--json <bool>`; show `--json` alone.
TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag and not self.count else _display_type(self, ctx)


def _usage_name(self) -> str:
    """An argument in the usage line as click writes it: FILE, [FILE], QUESTION... (Typer's: {file})."""
    name = self.metavar or (self.name or "").upper()
    if self.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if self.required else f"[{name}]"


TyperArgument._usage_display_name = _usage_name


def _whole_paragraphs(paragraphs: list[str], markup_mode) -> str:
    """A docstring's later paragraphs as flowing text: a line break inside a paragraph is a space (Typer's
    rich mode keeps them, so help wrapped at another width broke mid-sentence). A paragraph that opens
    with \\b keeps its lines, as click's does."""
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


typer.rich_utils._fix_linebreaks = _whole_paragraphs
_command_help = typer.rich_utils._make_command_help


def _whole_first_paragraph(*, help_text: str, markup_mode):
    """A command's line in its group's list: the first paragraph of its help, flowing like the others."""
    import inspect

    first = inspect.cleandoc(help_text).split("\n\n")[0]
    return _command_help(help_text=_whole_paragraphs([first], markup_mode), markup_mode=markup_mode)


typer.rich_utils._make_command_help = _whole_first_paragraph


def _honour_no_color() -> None:
    """NO_COLOR (any non-empty value): Typer's help and usage errors in plain text, no bold or dim either
    (Rich's own NO_COLOR handling drops colours only)."""
    typer.rich_utils.COLOR_SYSTEM = None if os.environ.get("NO_COLOR") else "auto"


app = typer.Typer(
    cls=_Root,
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
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="DOCREAD_DEBUG", help="Show tracebacks of unexpected errors.")
    ] = False,
):
    """Ask questions of PDFs and images, locally, with HiRes-LLaVA."""
    if debug:
        os.environ["DOCREAD_DEBUG"] = "1"


from docread.cli import (  # noqa: E402  (command modules register on import)
    batch,
    bench,
    bench_throughput,
    chat,
    entitygrid,
    extract,
    inspect,
    locate,
    mcp,
    models,
    read,
    serve,
    speed,
    train,
)

bench.app.add_typer(entitygrid.app, name="entitygrid")
bench.app.add_typer(speed.app)
bench.app.add_typer(bench_throughput.app)
app.add_typer(inspect.app)
app.add_typer(read.app)
app.add_typer(batch.app)
app.add_typer(chat.app)
app.add_typer(locate.app)
app.add_typer(extract.app)
app.add_typer(serve.app)
app.add_typer(mcp.app)
app.add_typer(models.app, name="models")
app.add_typer(train.app)
app.add_typer(bench.app, name="bench")


@functools.cache
def command() -> TyperGroup:
    """The click command tree, built from the Typer app once per process (calling the app rebuilds it,
    every command and option, each time: a tenth of a second for each in-process run)."""
    return typer.main.get_command(app)


def main() -> None:
    """Console entry point. Errors inside commands are handled by `_Root`; this catches what happens
    around them (a closed pipe while exiting, Ctrl-C before a command starts)."""
    from docread.model.noise import quiet_third_parties

    _honour_no_color()
    quiet_third_parties()
    try:
        command()()  # what `app()` does, less the rebuild (pretty exceptions are off: no hook to set)
    except KeyboardInterrupt:
        _stderr_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(EXIT_OK)
    except DocreadError as e:  # raised outside a command (an option callback)
        if _debug():
            raise
        _stderr_line(f"error: {e.message}")
        sys.exit(e.exit_code)


__all__ = ["app", "command", "main", "EXIT_USAGE", "EXIT_INTERRUPTED"]
