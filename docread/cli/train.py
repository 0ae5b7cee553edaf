"""`docread train`: the two-stage HiRes-LLaVA training recipe."""

from __future__ import annotations

import typer

app = typer.Typer()
