"""Word gaps of an OCR line, rebuilt: rapidocr's recogniser often reads a line's words run together
(`TrafficVolunteersfortheweek`), but it also says where each character sits (the CTC column of its
spike, as a character box). The page image says where the ink is: a run of blank columns at least
`SPACE_GAP` times the line's ink height, lying between two characters, is a word space. Pure functions
on boxes and an ink profile, so they are tested on synthetic lines as on real ones.
"""

from __future__ import annotations

from collections.abc import Sequence

SPACE_GAP = 0.2  # a blank run at least this share of the line's ink height separates words,
PITCH_GAP = 0.5  # and at least this share of the line's character pitch (median distance between centres)
INK_CONTRAST = 40  # grey levels between ink and paper below which a crop is not read for gaps

Span = tuple[float, float]  # x0, x1 in the page image's pixels


def ink_gaps(profile: Sequence[bool], min_width: float, offset: float = 0.0) -> list[Span]:
    """Runs of blank columns (`profile[i]` False) at least `min_width` wide, between inked columns (a
    line's margins are not gaps), as x spans shifted by `offset` (the crop's left edge)."""
    gaps, start, seen_ink = [], None, False
    for x, inked in enumerate(profile):
        if inked:
            if start is not None and seen_ink and x - start >= min_width:
                gaps.append((offset + start, offset + x))
            start, seen_ink = None, True
        elif start is None:
            start = x
    return gaps


def spaced_words(chars: Sequence[str], boxes: Sequence[Span], gaps: Sequence[Span]) -> list[tuple[str, Span]]:
    """A line's characters (with their x spans, in reading order) cut into words: at the spaces the
    engine read, and wherever an ink gap's middle lies between two characters' centres."""
    centres = [(b[0] + b[1]) / 2 for b in boxes]
    middles = sorted((g[0] + g[1]) / 2 for g in gaps)
    words: list[tuple[str, Span]] = []
    text, x0, x1 = "", 0.0, 0.0
    for i, ch in enumerate(chars):
        if not ch.strip():
            if text:
                words.append((text, (x0, x1)))
            text = ""
            continue
        if text and not _wide(chars[i - 1]) and not _wide(ch) and any(centres[i - 1] < m < centres[i] for m in middles):
            words.append((text, (x0, x1)))
            text = ""
        if not text:
            x0 = boxes[i][0]
        text, x1 = text + ch, boxes[i][1]
    if text:
        words.append((text, (x0, x1)))
    return words


def _wide(ch: str) -> bool:
    """CJK ideographs, kana, full-width forms: scripts written without spaces, whose gaps are not words'."""
    import unicodedata

    return unicodedata.east_asian_width(ch) in ("W", "F")


def pitch(chars: Sequence[str], boxes: Sequence[Span]) -> float:
    """The median distance between the centres of neighbouring characters (spaces aside); 0 for one."""
    import statistics

    centres = [(b[0] + b[1]) / 2 for ch, b in zip(chars, boxes) if ch.strip()]
    steps = [b - a for a, b in zip(centres, centres[1:]) if b > a]
    return statistics.median(steps) if steps else 0.0


def line_profile(gray, box: tuple[float, float, float, float]) -> tuple[list[bool], float] | None:
    """Which columns of `box` in a greyscale image (a 2-D numpy array) hold ink, and the ink's height
    (first to last inked row); None when the crop has no contrast. Ink is the minority of the two
    levels, so light text on a dark band reads as well as dark on light."""
    import numpy as np

    h, w = gray.shape
    x0, y0, x1, y1 = max(0, int(box[0])), max(0, int(box[1])), min(w, int(box[2]) + 1), min(h, int(box[3]) + 1)
    crop = gray[y0:y1, x0:x1]
    if crop.size == 0 or int(crop.max()) - int(crop.min()) < INK_CONTRAST:
        return None
    dark = crop < (int(crop.max()) + int(crop.min())) / 2
    ink = dark if dark.mean() <= 0.5 else ~dark
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return None
    return ink.any(axis=0).tolist(), float(rows[-1] - rows[0] + 1)


def rebuild_line(
    gray, line_box: tuple[float, float, float, float], chars: Sequence[str], boxes: Sequence[Span]
) -> list[tuple[str, Span]]:
    """`spaced_words` of one horizontal OCR line, its gaps read from `gray` inside `line_box`."""
    found = line_profile(gray, line_box) if gray is not None else None
    if not found:
        return spaced_words(chars, boxes, [])
    least = max(SPACE_GAP * found[1], PITCH_GAP * pitch(chars, boxes), 1.0)
    gaps = ink_gaps(found[0], least, max(0, int(line_box[0])))
    return spaced_words(chars, boxes, gaps)
