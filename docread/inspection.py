"""`docread inspect`: how each page of each file would be sliced, without loading a model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from docread.errors import DocreadError, UsageError
from docread.intake.limits import DEFAULT_DPI
from docread.model.presets import Preset
from docread.views.slicing import SlicePlan, count_tokens, plan_slices


def inspect_paths(
    paths: list[str],
    *,
    preset: Preset,
    pages: str | None = None,
    max_slices: int | None = None,
    dpi: float = DEFAULT_DPI,
    password: str | None = None,
    limits=None,
    preview: Path | None = None,
    on_warning=lambda message: None,
    view: str = "hires",
) -> Iterator[dict]:
    """One record per page (or one error record per failed file or page), in input order; a file's
    warnings (a PDF MuPDF repaired, pages left out) go to `on_warning`. `view="native"`: the base
    checkpoint's own grid and token count (its config.json read locally, no model loaded)."""
    from docread.intake import Limits, expand_paths, open_document

    limits = limits or Limits()
    max_slices = preset.max_slices if max_slices is None else max_slices
    try:
        files = expand_paths(paths)
    except DocreadError as e:
        yield {"file": str(paths[0]) if len(paths) == 1 else None, "page": None, "error": e.to_json()}
        return
    if view == "native" and preview is not None:
        raise UsageError("--preview draws docread's tile grid: use it with --view hires")
    count = _native_counter(preset) if view == "native" else _hires_counter(preset, max_slices)
    previews = _PreviewNames(preview)
    if preview is not None:
        previews.check(len(files), 1)
    for file in files:
        try:
            document = open_document(file, pages=pages, password=password, dpi=dpi, limits=limits)
        except DocreadError as e:
            yield {"file": file, "page": None, "error": e.to_json()}
            continue
        with document:
            for warning in document.warnings:
                on_warning(warning)
            if preview is not None:
                previews.check(len(files), len(document.pages))
            for page in document.pages:
                if (failed := document.page_error(page)) is not None:
                    yield {"file": file, "page": page.number, "error": failed.to_json()}
                    continue
                plan, record = count(page)
                record = {
                    "file": file,
                    "page": page.number,
                    **record,
                    "source_width": page.width,
                    "source_height": page.height,
                    "dpi": round(dpi * plan.width / page.width, 1) if page.dpi else None,
                    "repaired": document.repaired,
                    "view": view,
                }
                if preview is not None:
                    try:
                        target = previews.page(file, page.number)
                        _write_preview(document, page, plan, target)
                        record["preview"] = str(target)
                    except DocreadError as e:
                        record = {"file": file, "page": page.number, "error": e.to_json()}
                yield record


def _hires_counter(preset: Preset, max_slices: int):
    def count(page):
        plan = plan_slices(page.width, page.height, size=preset.size, max_slices=max_slices)
        tokens = count_tokens(plan, patch=preset.patch, k=preset.k)
        return plan, _fields(plan, tokens)

    return count


def _native_counter(preset: Preset):
    """The checkpoint's own AnyRes grid (or single view), from its config.json alone."""
    from docread.views.native import native_spec, native_tokens, read_config

    spec = native_spec(read_config(preset))

    def count(page):
        rows, cols, tokens = native_tokens(page.width, page.height, spec)
        plan = SlicePlan(rows=rows, cols=cols, size=spec.size, width=page.width, height=page.height)
        return plan, _fields(plan, tokens)

    return count


def _fields(plan, tokens) -> dict:
    return {
        "width": plan.width,
        "height": plan.height,
        "rows": plan.rows,
        "cols": plan.cols,
        "tiles": plan.tiles,
        "visual_tokens": tokens.visual_tokens,
        "separator_tokens": tokens.separator_tokens,
        "image_tokens": tokens.image_tokens,
    }


class _PreviewNames:
    """OUT.png for a single page; OUT/<stem>-p<N>.png when there are several (a second file with the
    same stem, from another folder, gets <stem>-2-p<N>.png: no picture overwrites another)."""

    def __init__(self, target: Path | None):
        self.target = target
        self.stems: dict[str, str] = {}  # file -> the stem its pictures use
        self.taken: set[str] = set()

    @property
    def single_file(self) -> bool:
        return self.target is not None and self.target.suffix.lower() == ".png" and not self.target.is_dir()

    def check(self, files: int, pages: int) -> None:
        """A one-picture target with several pages is a usage error, found before any is drawn."""
        if self.single_file and (files > 1 or pages > 1):
            raise UsageError(
                f"--preview {self.target} names one picture but there are several pages: "
                "pass a folder instead, or select one page with --pages"
            )

    def name(self, file: str) -> Path:
        assert self.target is not None
        if self.single_file:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            return self.target
        self.target.mkdir(parents=True, exist_ok=True)
        if file not in self.stems:
            stem = base = "stdin" if file == "-" else Path(file).stem
            copy = 1
            while stem in self.taken:
                copy += 1
                stem = f"{base}-{copy}"
            self.stems[file] = stem
            self.taken.add(stem)
        return self.target / self.stems[file]

    def page(self, file: str, page: int) -> Path:
        where = self.name(file)
        return where if self.single_file else where.with_name(f"{where.name}-p{page}.png")


def _write_preview(document, page, plan, target: Path) -> None:
    from docread.views.preview import draw_preview

    image = document.render(page, plan.width, plan.height)
    try:
        draw_preview(image, plan).save(target)
    except OSError as e:
        raise DocreadError("unwritable", f"cannot write preview {target}: {e.strerror or e}") from None
