"""`ocr --json`'s record for one page: `docread.records.ocr_record` (its home), re-exported for the server."""

from docread.records import ocr_record  # noqa: F401
