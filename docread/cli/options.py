"""Options and helpers shared by docread's commands, declared once. Read options come from
`docread.settings.Settings`: `@read_options(...)` adds each field as a Typer option and hands the command
one validated `settings`."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from docread.model.weights import Quant as QuantChoice


def _go_offline(value: bool) -> bool:
    """--offline: set before any Hugging Face library is imported, which reads it once."""
    if value:
        os.environ["HF_HUB_OFFLINE"] = "1"
    return value


# -- shared options, declared once ---------------------------------------------------------
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout (JSON).")]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        envvar="DOCREAD_MODEL",
        help="Preset name (see models/), llava-hf hub id, or local llava-hf directory.",
    ),
]
MaxPixels = Annotated[
    int, typer.Option("--max-pixels", min=1, help="Refuse pages larger than this many pixels (decompression bombs).")
]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds one file may take to open and render.")]


def stderr_console(quiet: bool = False):
    """A Rich console on stderr: colour only on a terminal (and never with NO_COLOR), no hard wrapping."""
    from rich.console import Console

    from docread.cli.output import color_system

    return Console(stderr=True, highlight=False, quiet=quiet, soft_wrap=True, color_system=color_system())


def diagnostics(quiet: bool = False):
    """A command's stderr: notes and warnings (none with --quiet), errors (always), user text never markup."""
    from docread.cli.output import Diagnostics

    return Diagnostics(quiet)


def make_limits(max_pixels: int, timeout: float):
    from docread.intake import Limits

    return Limits(max_pixels=max_pixels, timeout_s=timeout)


def load_reader(model, adapter, device, quant, offline, err):
    """A model loaded here (commands that need the model itself: serve, bench)."""
    from docread.loading import load

    with err.status(f"loading {model or 'the default model'}…"):
        return load(model, adapter=adapter, device=device, quant=quant, offline=offline or None)


def choose_reader(server, api_key, model, adapter, device, quant, offline, err):
    """The one choice every reading command makes: the `--server`'s model, or one loaded here
    (`docread.reading.open_reader`, which refuses what a server cannot honour)."""
    from docread.reading import open_reader

    return open_reader(
        server=server,
        api_key=api_key,
        model=model,
        adapter=str(adapter) if adapter else None,
        device=device,
        quant=quant,
        offline=offline,
        status=err.status,
    )


# -- model and generation options (ask, ocr, batch, bench) ----------------------------------
Adapter = Annotated[
    Optional[Path], typer.Option("--adapter", help="Trained HiRes parts: a .safetensors file or a folder.")
]
Quant = Annotated[QuantChoice, typer.Option("--quant", help="auto = 4-bit NF4 on CUDA, none on a CPU.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
Offline = Annotated[
    bool, typer.Option("--offline", callback=_go_offline, help="Never touch the network (as HF_HUB_OFFLINE=1).")
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress, notes or warnings on stderr; errors still show.")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr: grid, tokens, timings.")]


# -- a warm server instead of a local model (ask --server) ----------------------------------------
Server = Annotated[
    Optional[str],
    typer.Option(
        "--server",
        envvar="DOCREAD_SERVER",
        help="A `docread serve` (http://127.0.0.1:8321, its /v1 base URL, or host:port): the file is uploaded, no "
        "model loads here.",
    ),
]
ApiKey = Annotated[
    Optional[str], typer.Option("--api-key", envvar="DOCREAD_API_KEY", help="The server's API key (with --server).")
]


# -- read options, derived from Settings ------------------------------------------------------------
def setting_flags(f) -> tuple[str, ...]:
    """A Settings field's command-line flags (`docread.settings.setting_flags`)."""
    from docread.settings import setting_flags

    return setting_flags(f)


def _setting_callback(f, auto_pages: bool):
    """A bad value fails while options are parsed (exit 2, naming the flag), before any file or model."""
    from docread.settings import AUTO_PAGES, SettingError, Settings

    def check(value):
        if f.name == "pages" and value == AUTO_PAGES and not auto_pages:
            raise typer.BadParameter("auto (ranked pages) is for ask: give page numbers, as 1,3-5,-1")
        try:
            Settings.from_mapping({f.name: value})
        except SettingError as e:
            raise typer.BadParameter(e.message) from None
        return value

    return check


def setting_option(f, default: Any = None, *, auto_pages: bool = True, help: str | None = None):
    """The `Annotated[type, typer.Option(...)]` of one Settings field (flags, help, bounds, envvar)."""
    from docread.settings import field_type

    meta, kind = f.metadata, field_type(f)
    bounds = {}
    if kind in (int, float):
        bounds = {k: kind(meta[k]) for k in ("min", "max") if meta[k] is not None}
    annotation = Optional[kind] if (default is None or f.default is None) and kind is not bool else kind
    flags = setting_flags(f)
    if kind is bool and default is True:  # on by default here (extract's --extractive): --no-... turns it off
        flags = tuple(f"{flag}/--no-{flag[2:]}" for flag in flags if flag.startswith("--"))
    return Annotated[
        annotation,
        typer.Option(
            *flags,
            help=help or _help(f, auto_pages),
            envvar=meta["envvar"],
            callback=_setting_callback(f, auto_pages),
            show_default=not meta["secret"],
            **bounds,
        ),
    ]


def _help(f, auto_pages: bool) -> str:
    from docread.settings import AUTO_PAGES

    if f.name == "pages" and not auto_pages:  # the page-list half of the help: `auto` is ask's alone
        return f.metadata["help"].split(f", or {AUTO_PAGES}")[0] + "."
    return f.metadata["help"]


def read_options(
    *,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
    defaults: dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
    auto_pages: bool = False,
) -> Callable:
    """Add `Settings`' fields to a command as options and call it with one validated `settings: Settings`.
    `only`/`exclude`: the fields this command offers; `defaults`: its own defaults (ocr's longer answers);
    `fixed`: values it always uses, not offered (ocr's task); `auto_pages`: --pages takes `auto` (ask)."""
    from docread.settings import SettingError, Settings

    offered = [f for f in fields(Settings) if (only is None or f.name in only) and f.name not in set(exclude)]
    defaults, fixed = dict(defaults or {}), dict(fixed or {})

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        positional = [p for p in own if p.default is inspect.Parameter.empty]
        rest = [p for p in own if p.default is not inspect.Parameter.empty]
        added = []
        for f in offered:
            default = defaults.get(f.name, f.default)
            default = str(default) if isinstance(default, str) else default  # an enum as Typer shows it
            added.append(
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=setting_option(f, default, auto_pages=auto_pages),
                )
            )
        names = [f.name for f in offered]

        @functools.wraps(command)
        def run(*args, **kwargs):
            values = {**fixed, **{name: kwargs.pop(name) for name in names if name in kwargs}}
            try:
                settings = Settings(**values)
            except SettingError as e:
                flag = next((setting_flags(f)[0] for f in offered if f.name == e.param), e.param)
                raise typer.BadParameter(e.message, param_hint=flag) from None
            return command(*args, settings=settings, **kwargs)

        parameters = positional + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest] + added
        run.__signature__ = signature.replace(parameters=parameters)
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        run.read_settings = names  # the Settings fields this command offers
        return run

    return decorate


def _derived(name: str):
    """One Settings field as an `Annotated` option, for commands that still list their options by hand."""
    from docread.settings import Settings

    f = next(f for f in fields(Settings) if f.name == name)
    return setting_option(f, f.default, auto_pages=False)


# the names bench, speed and train list (derived: no flag, bound or help written here)
MaxSlices = _derived("max_slices")
Dpi = _derived("dpi")
MaxNewTokens = _derived("max_new_tokens")
Task = _derived("task")
View = _derived("view")
