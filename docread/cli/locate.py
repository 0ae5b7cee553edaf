"""`docread locate FILE TEXT...`: where each text occurs, a thin loop over
`docread.text.evidence.locate_document`."""

from __future__ import annotations

from typing import Annotated

import typer

from docread.cli.options import (
    MaxPixels,
    Offline,
    Quiet,
    Timeout,
    diagnostics,
    make_limits,
    read_options,
)
from docread.cli.output import write_json, write_out
from docread.errors import EXIT_FAILED, EXIT_OK
from docread.intake.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from docread.records import locate_record
from docread.settings import TASK_FIELDS, Settings

app = typer.Typer()


@app.command(
    epilog='Examples:\n\n  docread locate invoice.pdf "Total amount" 1234.56\n\n'
    '  docread locate scan.png "ACME GmbH" --text ocr --json'
)
@read_options(only=TASK_FIELDS["locate"])
def locate(
    file: Annotated[str, typer.Argument(help="A PDF or image; - reads stdin.")],
    texts: Annotated[list[str], typer.Argument(metavar="TEXT...", help="Texts to find (words, numbers, dates).")],
    json_out: Annotated[bool, typer.Option("--json", help="One JSON line per occurrence on stdout.")] = False,
    quiet: Quiet = False,
    offline: Offline = False,  # nothing here touches the network; accepted as everywhere
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    *,
    settings: Settings,
):
    """Where each text occurs: every page, every box (PDF points and rendered pixels), and how it matched.
    The page's characters are searched, spaces aside, so glued words, scripts without spaces, vertical
    and right-to-left text are found. Kinds, best first (a weaker one only on a page where no better
    one hit): exact (the characters as written); normalized (case, accents, punctuation, currency,
    number and date formats: 1,234.56 = 1.234,56, 14 March 2026 = 2026-03-14); fuzzy (OCR noise: one
    letter edit per 5 letters; CJK characters never). Digits are never fuzzy: a number's digits, a
    date's day, month and year and an identifier's digits must be equal (319.45 never matches 319.44).
    Page text comes from the PDF's text layer, else OCR (the ocr extra). Exit 1 when a text is found
    nowhere."""
    from docread.text.evidence import locate_document

    err = diagnostics(quiet)
    seen: dict[str, int] = {}
    failed = False
    for located in locate_document(
        file,
        texts,
        pages=settings.pages,
        password=settings.password,
        text=settings.text,
        limits=make_limits(max_pixels, timeout),
        dpi=settings.dpi,  # bbox_px are pixels of the page rendered at this resolution
    ):
        if located.error is not None:
            failed = True
            err.error(located.error.message)
            continue
        if located.source == "none":
            err.warn(f"page {located.page}: no text layer and no OCR; nothing to search")
        for query, occurrences in located.found.items():
            seen[query] = seen.get(query, 0) + len(occurrences)
            for o in occurrences:
                if json_out:
                    write_json(locate_record(file, query, o))
                else:
                    box = ", ".join(f"{v:.1f}" for v in o["bbox"])
                    write_out(f"{query}\tpage {o['page']}\t{o['match']}\t{o['text']}\t[{box}]\n")
    missing = [q for q, n in seen.items() if n == 0]
    for query in missing:
        err.warn(f"not found: {query}")
    raise typer.Exit(EXIT_FAILED if failed or missing else EXIT_OK)
