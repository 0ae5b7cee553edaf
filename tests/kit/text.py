"""Hand-made page text for matcher tests: words laid out on a grid, no PDF needed."""

from __future__ import annotations

from docread.text.pagetext import PageText, Word


def page_of(*lines: str) -> PageText:
    """Words laid out 10 points a character, 20 points a line."""
    words = []
    for n, line in enumerate(lines):
        x = 0
        for w in line.split():
            words.append(Word(w, (x, 20 * n, x + 10 * len(w), 20 * n + 12), n))
            x += 10 * (len(w) + 1)
    return PageText(1, "layer", 600, 400, 2.0, words)
