"""docread: ask questions of PDFs and images with HiRes-LLaVA.

    import docread
    reader = docread.load()                      # the default preset, 4-bit on CUDA
    print(reader.ask("invoice.pdf", "What is the total?").answer)            # one page
    for result in docread.ask_document(reader, "report.pdf", ["Total?"]):    # the document, as `docread ask`
        print(result.best.answer)

Importing docread is instant: torch and transformers load with the first model.
"""

__version__ = "0.1.0"

__all__ = ["load", "ask_document", "ocr_document", "DocReader", "Answer", "DocreadError", "__version__"]


def __getattr__(name):  # lazy: `import docread` must not import torch
    if name == "load":
        from docread.loading import load

        return load
    if name == "DocReader":
        from docread.reader import DocReader

        return DocReader
    if name in ("Answer", "AnswerStream"):
        from docread import results

        return getattr(results, name)
    if name in ("ask_document", "ocr_document", "Settings", "Events"):
        from docread import document

        return getattr(document, name)
    if name == "DocreadError":
        from docread.errors import DocreadError

        return DocreadError
    raise AttributeError(f"module 'docread' has no attribute {name!r}")
