"""Incremental detokenisation: token ids in, text chunks out that never split a character, each token
decoded a bounded number of times. A token's text can depend on its neighbours (a character's UTF-8
bytes split across tokens, SentencePiece's leading "▁" dropped at the start of a text), so each push
decodes a short window that starts at an earlier safe point and keeps what it adds to the window's text
before the push (text-generation-inference's prefix/read offsets). `TextStreams` keeps one stream per
token list a constraint is shown, for the constraints that read the answer's text at every step."""

from __future__ import annotations

import re

MOVE_AFTER = 16  # window length (tokens) past which it moves up: a decode costs its call, hardly its length
LONGEST_WINDOW = 64  # tokens a window may hold inside a run of byte tokens before it moves anyway
REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not (yet) a whole character
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a byte-fallback token (SentencePiece/Llama: <0xE4>)


class TextStream:
    """Incremental detokenisation: `push` yields only text that later tokens cannot change, and the
    chunks join to `text()`, the decode of every id (`skip_special_tokens`: as the answer is decoded)."""

    def __init__(self, tokenizer, *, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.start = 0  # the window: ids[start:] are decoded at a push, the ids before it never again
        self.read = 0  # ids[:read] are emitted
        self.read_text = ""  # decode(ids[start:read])
        self.pending = ""  # the text of ids[read:], held back while it ends in an incomplete character
        self.chunks: list[str] = []  # what was emitted, in order
        self.sent = 0  # characters emitted
        self._said: str | None = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self._decode(self.ids[self.start :])
        if text.endswith(REPLACEMENT):  # a multi-byte character is still incomplete
            self.pending = text[len(self.read_text) :]
            return ""
        return self._emit(text, move=True)

    def flush(self) -> str:
        """What is left at the end of the stream, an incomplete character included."""
        return self._emit(self._decode(self.ids[self.start :]), move=False)

    def _emit(self, text: str, move: bool) -> str:
        chunk, last = text[len(self.read_text) :], self.read
        self.read, self.read_text, self.pending = len(self.ids), text, ""
        if chunk:
            self.chunks.append(chunk)
            self.sent += len(chunk)
            self._said = None
        if move and len(self.ids) - self.start > MOVE_AFTER and last > self.start and self._splits_at(last):
            # the window starts at the last read point from now on, when the text from there on says something
            # (a decoder that drops the leading space of a text drops the same one in every later window)
            if moved := self._decode(self.ids[last : self.read]):
                self.start, self.read_text = last, moved
        return chunk

    def _splits_at(self, i: int) -> bool:
        """Whether ids[:i] and ids[i:] decode apart as they do together: not right after a byte token, whose
        run a byte-fallback decoder reads as one (all of it becomes U+FFFD once any of it is invalid)."""
        if len(self.ids) - self.start > LONGEST_WINDOW:
            return True  # only an invalid byte sequence after a long run of bytes reads differently
        return not _BYTE_PIECE.fullmatch(self.tokenizer.convert_ids_to_tokens(self.ids[i - 1]) or "")

    def said(self) -> str:
        """Everything emitted so far (the decode of ids[:read])."""
        if self._said is None:
            self._said = "".join(self.chunks)
            self.chunks = [self._said] if self._said else []
        return self._said

    def tail(self, n: int) -> str:
        """The last `n` characters emitted."""
        parts, size = [], 0
        for chunk in reversed(self.chunks):
            if size >= n:
                break
            parts.append(chunk)
            size += len(chunk)
        return "".join(reversed(parts))[-n:] if n > 0 else ""

    def peek(self, token: int) -> str:
        """The text `token` would add after what was emitted (the pending text included), without taking it."""
        return self._decode([*self.ids[self.start :], token])[len(self.read_text) :]

    def text(self) -> str:
        """The decode of every id, as one call (once, at the end of an answer)."""
        return self._decode(self.ids)


class TextStreams:
    """One TextStream per token list a constraint is shown (the rows of a batch may share a constraint,
    each answer's list growing by a token a step): `of(tokens)` pushes the tokens added since the last
    call and returns the stream and what they emitted. An empty list (a new answer) starts over."""

    def __init__(self, tokenizer, *, skip_special_tokens: bool):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self._streams: dict[int, TextStream] = {}

    def of(self, tokens: list[int]) -> tuple[TextStream, str]:
        stream = self._streams.get(id(tokens))
        known = len(stream.ids) if stream is not None else -1
        if stream is None or not tokens or known > len(tokens) or (known and tokens[known - 1] != stream.ids[-1]):
            stream = self._streams[id(tokens)] = TextStream(self.tokenizer, skip_special_tokens=self.skip)
            known = 0
        return stream, "".join(stream.push(token) for token in tokens[known:])

    def drop(self, tokens: list[int]) -> None:
        """Forget the stream of an answer that ended."""
        self._streams.pop(id(tokens), None)


def tokens_holding(tokenizer, ids: list[int], text: str) -> int:
    """How many of `ids` it takes for their decoded text (special tokens written out) to hold `text`; all of
    them when it never does. One decode of them all, then each token's window once (each prefix decoded
    whole only when `text` holds U+FFFD: invalid bytes, whose run a later byte can still change)."""
    at = tokenizer.decode(ids).find(text)
    if at < 0:
        return len(ids)
    if REPLACEMENT in text:  # invalid bytes: a run's earlier text can still change, so read it whole each time
        return next((n for n in range(1, len(ids) + 1) if text in tokenizer.decode(ids[:n])), len(ids))
    end, stream = at + len(text), TextStream(tokenizer, skip_special_tokens=False)
    for count, token in enumerate(ids, 1):
        stream.push(token)
        if end <= stream.sent + len(stream.pending):  # the text so far reaches the end of its first `text`
            reached = stream.tail(max(stream.sent - at, 0)) + stream.pending
            if reached[max(at - stream.sent, 0) :].startswith(text):
                return count
    return len(ids)
