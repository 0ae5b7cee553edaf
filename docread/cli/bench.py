"""`docread bench`: quality benchmarks (EntityGrid-QA, document-QA metrics) and speed."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks: EntityGrid-QA, document-QA metrics, speed.", no_args_is_help=True)
