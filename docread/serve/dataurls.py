"""The data: URLs a server decoded lately, by their text: a page sent again (every chat turn re-sends its
image; clients ask many questions of one page) is not base64-decoded again. CPython decodes base64 at about
150 MB/s, a few milliseconds for a letter page's PNG on every request; looking the text up costs its hash."""

from __future__ import annotations

from collections import OrderedDict

from docread.serve.protocol import decode_data_url

MiB = 1 << 20
KEPT_BYTES = 64 * MiB  # the URLs' text kept, at most (with about 3/4 of it again as decoded bytes)


class DataUrls:
    """`decode(url)` as `protocol.decode_data_url`, the last `capacity` URLs' results kept (0: none). An
    invalid URL raises every time (only results are kept). Used on the event loop's thread only."""

    def __init__(self, capacity: int, kept_bytes: int = KEPT_BYTES):
        self.capacity, self.kept_bytes = capacity, kept_bytes
        self._kept: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self.hits = 0

    def decode(self, url: str) -> tuple[bytes, str]:
        kept = self._kept.get(url)  # the text's hash, then one comparison: a fraction of decoding it
        if kept is not None:
            self.hits += 1
            self._kept.move_to_end(url)
            return kept
        decoded = decode_data_url(url)
        if self.capacity > 0 and len(url) <= self.kept_bytes:
            self._kept[url] = decoded
            self._size += len(url)
            while len(self._kept) > self.capacity or self._size > self.kept_bytes:
                self._size -= len(self._kept.popitem(last=False)[0])
        return decoded
