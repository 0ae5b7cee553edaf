"""The test kit: builders and helpers every test module may import (tests import the kit, never each other).

`kit.cli` drives `docread ...` in-process, `kit.serving` runs the app on a loopback thread, `kit.native`
builds transformers' own model and processor beside docread's reader, `kit.fuzz` mutates seed files,
`kit.forked` runs `docread ...` in a process of its own forked from a server that has imported torch once.
Fixtures live in tests/conftest.py; the kit holds plain functions and classes.
"""


def per_page(fake):
    """A stand-in for `docread.pagework.answer_pages` (what `ask_document` calls) from a per-page fake
    `fake(reader, document, page, questions, settings)` yielding each page's PageAnswers."""

    def answer_pages(reader, works, settings, **_):
        for work in works:
            for result in fake(reader, work.document, work.page, work.questions, settings):
                yield work, result

    return answer_pages
