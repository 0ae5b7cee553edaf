"""Where answers and texts come from on the page: `PageTexts` (each page's text, read once per document, and
`TextCache`, kept across requests by a server), `locate_document` (every occurrence of some texts in a file,
the `locate` command), `evidence` (where an answer occurs in its page's text) and `draw_highlight` (the page
with its evidence boxes and, faintly, its tile grid)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from docread.errors import DocreadError, UsageError
from docread.settings import TextMode
from docread.text.grounding import ground
from docread.text.match import find
from docread.text.pagetext import PageText, ocr_words, page_text

if TYPE_CHECKING:
    from PIL import Image

    from docread.events import Events
    from docread.intake import Document, Limits, Page
    from docread.results import DocumentAnswer

EVIDENCE_RGB = (255, 170, 0)  # evidence boxes: orange, drawn over a translucent fill
GRID_RGBA = (220, 30, 30, 70)  # the tile grid, faint: where the model's tiles cut the page


class TextCache:
    """Page texts kept across reads (a server's, beside its encoded pages): by the file's content sha256, the
    page, its rendered size (the dpi) and the text mode, least recently used out beyond `capacity` (0: none
    kept), so a second question about a page pays no OCR. A page whose text fails is not kept: the next read
    tries again. `beside(work)`: `work` as it runs off the model (a server's `Worker.aside`: OCR, and a wait
    for the same page's text that another request is reading, run while its batch decodes)."""

    def __init__(self, capacity: int, beside: Callable[[Callable], Callable] = lambda work: work):
        self.capacity, self.beside = capacity, beside
        self._texts: OrderedDict[tuple, PageText] = OrderedDict()
        self._reading: dict[tuple, threading.Event] = {}  # pages whose text a read is getting now
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._texts)

    def read(self, document: Document, page: Page, mode: str) -> PageText:
        key = (document.sha256, page.number, page.width, page.height, str(TextMode(mode)))
        if self.capacity <= 0 or not document.sha256:
            return page_text(document, page, mode, ocr=self.beside(ocr_words))
        while key in self._reading:  # another request reads this page now: its text, once it has it
            self.beside(self._reading[key].wait)()
        kept = self._texts.get(key)
        if kept is not None:
            self.hits += 1
            self._texts.move_to_end(key)
            return kept
        self.misses += 1
        self._reading[key] = reading = threading.Event()
        try:
            text = page_text(document, page, mode, ocr=self.beside(ocr_words))
        finally:
            del self._reading[key]
            reading.set()
        self._texts[key] = text
        while len(self._texts) > self.capacity:
            self._texts.popitem(last=False)
        return text


class PageTexts:
    """Each page's text, read once per document (evidence, ranking and prompts share it), through `kept` (a
    TextCache across documents) when given. A page whose text cannot be read keeps its error; `get` raises it."""

    def __init__(self, document: Document, mode: str = TextMode.auto, kept: TextCache | None = None):
        self.document, self.mode, self.kept = document, TextMode(mode), kept
        self._texts: dict[int, PageText | DocreadError] = {}

    def get(self, page: Page) -> PageText:
        if page.number not in self._texts:
            if self.mode == TextMode.off:
                self._texts[page.number] = PageText(page.number, "none", page.width, page.height)
            else:
                try:
                    self._texts[page.number] = (
                        self.kept.read(self.document, page, self.mode)
                        if self.kept is not None
                        else page_text(self.document, page, self.mode)
                    )
                except DocreadError as e:
                    self._texts[page.number] = e
        found = self._texts[page.number]
        if isinstance(found, DocreadError):
            raise found
        return found


# -- evidence for an answer ------------------------------------------------------------------------
def evidence(text: PageText | None, answer: str | None) -> list[dict]:
    """Where `answer`, or its values and longest content span, occur in the page's text: `[{page, text,
    bbox, bbox_px, match, lines, part, role}]`, empty when the page has no text or nothing is on it."""
    return ground(text, answer)[0]


def evidence_fields(texts: PageTexts | None, page: Page, answer: str | None, on_error=None) -> dict:
    """`{"evidence": [...], "grounded": true | false | null}` for a record (docs/method.md#matching):
    null when no page text was checked (`--text off`, no text layer and no OCR, or the page's text
    failed: its error goes to `on_error`)."""
    text = None
    if texts is not None:
        try:
            text = texts.get(page)
        except DocreadError as e:
            if on_error is not None:
                on_error(e)
    found, grounded = ground(text, answer)
    return {"evidence": found, "grounded": grounded}


# -- locate ------------------------------------------------------------------------------------------
@dataclass
class Located:
    """One page's result for `locate`: each query's occurrences there, or the page's error."""

    page: int
    source: str  # layer | ocr | none
    found: dict[str, list[dict]] = field(default_factory=dict)
    error: DocreadError | None = None


def locate_document(
    source: str | Document,
    queries: Sequence[str],
    *,
    pages: str | None = None,
    password: str | None = None,
    limits: Limits | None = None,
    text: str = TextMode.auto,
    dpi: float | None = None,
) -> Iterator[Located]:
    """Every occurrence of each query in the selected pages of a file, page by page. A page whose text
    cannot be read yields its error and the others go on; a file that cannot be opened raises."""
    from contextlib import nullcontext

    from docread.intake import Document, open_document

    if any(not q.strip() for q in queries):  # an empty text is a mistake (a shell variable unset), not a wish
        raise UsageError("an empty text to locate: give each text some characters", code="no_texts")
    queries = list(dict.fromkeys(" ".join(q.split()) for q in queries))
    if not queries:
        raise UsageError("no text given: name at least one non-empty text to locate", code="no_texts")
    if TextMode(text) == TextMode.off:
        raise UsageError("--text off leaves nothing to search: use auto, layer or ocr", code="text_off")
    opened = (
        nullcontext(source)
        if isinstance(source, Document)
        else open_document(source, pages=pages, password=password, limits=limits, **({"dpi": dpi} if dpi else {}))
    )
    with opened as document:
        texts = PageTexts(document, text)
        for page in document.pages:
            try:
                page_words = texts.get(page)
            except DocreadError as e:
                yield Located(page.number, "none", {}, e)
                continue
            yield Located(
                page.number,
                page_words.source,
                {q: [o.to_json(page_words) for o in find(page_words, q)] for q in queries},
            )


# -- highlight ---------------------------------------------------------------------------------------
def draw_highlight(image: Image.Image, found: Sequence[dict], grid=None) -> Image.Image:
    """The rendered page with each evidence line boxed, and the tile grid (`grid`: the tile boxes in the
    image's pixels) drawn faintly underneath."""
    from PIL import Image, ImageDraw

    page = image.convert("RGBA")
    overlay = Image.new("RGBA", page.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for box in grid or []:
        draw.rectangle(tuple(box[:2]) + (box[2] - 1, box[3] - 1), outline=GRID_RGBA, width=2)
    for item in found:
        for line in item.get("lines") or [item]:
            x0, y0, x1, y1 = line["bbox_px"]
            draw.rectangle(
                (x0 - 2, y0 - 2, x1 + 2, y1 + 2), fill=EVIDENCE_RGB + (60,), outline=EVIDENCE_RGB + (255,), width=3
            )
    return Image.alpha_composite(page, overlay).convert("RGB")


def highlight_answer(document: Document, answer, size: int | None = None) -> Image.Image:
    """The answer's page rendered at its nominal size with the answer's evidence boxed and, when the
    tile size `size` is given and the answer was read in the hires view, its tile grid."""
    from docread.views.slicing import plan_slices

    page = next(p for p in document.pages if p.number == answer.page)
    image = document.render(page, page.width, page.height)
    grid = []
    if size and answer.view == "hires" and answer.tiles:
        plan = plan_slices(page.width, page.height, size=size, max_slices=answer.max_slices)
        if (plan.rows, plan.cols) == (answer.rows, answer.cols):
            f = page.width / plan.width  # the plan renders the page at plan.width; the picture at page.width
            grid = [tuple(round(v * f) for v in box) for box in plan.boxes()]
    return draw_highlight(image, answer.evidence, grid)


def attach_evidence(texts: PageTexts, pages: Sequence, results: Sequence[DocumentAnswer], events: Events) -> None:
    """Each best answer's `evidence` and `grounded`, from its page's text (read once per page)."""
    by_number = {page.number: page for page in pages}
    for result in results:
        if result.best is not None:
            fields = evidence_fields(
                texts,
                by_number[result.best.page],
                result.best.answer,
                on_error=lambda e: events.warning(f"no evidence: {e.message}"),
            )
            result.best.evidence, result.best.grounded = fields["evidence"], fields["grounded"]
