"""Incremental detokenisation: token ids in, text chunks out that never split a character."""

from __future__ import annotations


class TextStream:
    """Incremental detokenisation: yields only text that later tokens cannot change."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character is still incomplete
            return ""
        chunk, self.emitted = text[self.emitted :], len(text)
        return chunk

    def flush(self) -> str:
        """What is left at the end of the stream, an incomplete character included."""
        text = self.text()
        chunk, self.emitted = text[self.emitted :], len(text)
        return chunk

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)
