"""`docread inspect`: how each page of each file would be sliced, without loading a model."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from docread.errors import DocreadError
from docread.presets import Preset
from docread.slicing import count_tokens, plan_slices


def inspect_paths(paths: list[str], *, preset: Preset, pages: str | None = None, max_slices: int | None = None,
                  dpi: float = 200.0, password: str | None = None, limits=None,
                  preview: Path | None = None) -> Iterator[dict]:
    """One record per page (or one error record per failed file or page), in input order."""
    from docread.intake import Limits, expand_paths, open_document

    limits = limits or Limits()
    max_slices = preset.max_slices if max_slices is None else max_slices
    try:
        files = expand_paths(paths)
    except DocreadError as e:
        yield {"file": str(paths[0]) if len(paths) == 1 else None, "page": None, "error": e.to_json()}
        return
    previews = _PreviewNames(preview)
    for file in files:
        try:
            document = open_document(file, pages=pages, password=password, dpi=dpi, limits=limits)
        except DocreadError as e:
            yield {"file": file, "page": None, "error": e.to_json()}
            continue
        with document:
            for page in document.pages:
                plan = plan_slices(page.width, page.height, size=preset.size, max_slices=max_slices)
                tokens = count_tokens(plan, patch=preset.patch, k=preset.k)
                record = {
                    "file": file, "page": page.number, "width": plan.width, "height": plan.height,
                    "rows": plan.rows, "cols": plan.cols, "tiles": plan.tiles,
                    "visual_tokens": tokens.visual_tokens, "separator_tokens": tokens.separator_tokens,
                    "image_tokens": tokens.image_tokens, "source_width": page.width, "source_height": page.height,
                    "dpi": round(dpi * plan.width / page.width, 1) if page.dpi else None,
                }
                if preview is not None:
                    try:
                        target = previews.name(file, page.number, len(document.pages), len(files))
                        _write_preview(document, page, plan, target)
                        record["preview"] = str(target)
                    except DocreadError as e:
                        record = {"file": file, "page": page.number, "error": e.to_json()}
                yield record


class _PreviewNames:
    """OUT.png for a single page; OUT/<stem>-p<N>.png when there are several."""

    def __init__(self, target: Path | None):
        self.target = target

    def name(self, file: str, page: int, pages_in_file: int, files: int) -> Path:
        assert self.target is not None
        single = files == 1 and pages_in_file == 1
        if single and self.target.suffix.lower() == ".png" and not self.target.is_dir():
            self.target.parent.mkdir(parents=True, exist_ok=True)
            return self.target
        if self.target.suffix.lower() == ".png" and not self.target.is_dir():
            raise DocreadError("usage", f"--preview {self.target} is one file but there are several pages: "
                               "pass a folder instead", exit_code=2)
        self.target.mkdir(parents=True, exist_ok=True)
        stem = "stdin" if file == "-" else Path(file).stem
        return self.target / f"{stem}-p{page}.png"


def _write_preview(document, page, plan, target: Path) -> None:
    from docread.preview import draw_preview

    image = document.render(page, plan.width, plan.height)
    try:
        draw_preview(image, plan).save(target)
    except OSError as e:
        raise DocreadError("unwritable", f"cannot write preview {target}: {e.strerror or e}") from None


def render_table(records: Iterator[dict], preset: Preset) -> bool:
    """Print records as a table on stdout (errors as lines on stderr); True when any failed."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    table = Table(title=f"slicing for {preset.name} (S={preset.size}, k={preset.k})", title_justify="left")
    for column, justify in [("file", "left"), ("page", "right"), ("rendered", "right"), ("grid", "right"),
                            ("tiles", "right"), ("visual tokens", "right"), ("dpi", "right")]:
        table.add_column(column, justify=justify, overflow="fold")
    failed = False
    for r in records:
        if "error" in r:
            failed = True
            message = r["error"]["message"]
            if r["file"] is not None and str(r["file"]) not in message:  # most messages name their file already
                message = f"{r['file']}" + (f" page {r['page']}" if r.get("page") else "") + f": {message}"
            err.print(f"[red]error[/] {escape(message)}", markup=True, soft_wrap=True)
            continue
        table.add_row(r["file"], str(r["page"]), f"{r['width']}x{r['height']}", f"{r['rows']}x{r['cols']}",
                      str(r["tiles"]), f"{r['visual_tokens']} (+{r['separator_tokens']} sep)",
                      "" if r["dpi"] is None else f"{r['dpi']:g}")
    if table.row_count:
        out.print(table)
    return failed
