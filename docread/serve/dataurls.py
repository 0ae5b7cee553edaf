"""A chat request's image: the one `data:` URL of its conversation, decoded (a remote URL is never fetched,
a path never opened); and the data: URLs a server decoded lately, by their text: a page sent again (every
chat turn re-sends its image; clients ask many questions of one page) is not base64-decoded again. CPython
decodes base64 at about 150 MB/s, a few milliseconds for a letter page's PNG on every request; looking the
text up costs its hash."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict

from docread.serve.protocol import ApiError, ChatRequest, conversation

DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.ASCII)
MEDIA_TYPES = {
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/webp",
    "image/tiff",
    "application/pdf",
    "application/octet-stream",
}
MiB = 1 << 20
KEPT_BYTES = 64 * MiB  # the URLs' text kept, at most (with about 3/4 of it again as decoded bytes)


class DataUrls:
    """`decode(url)`: `decode_data_url`'s bytes and media type, and the bytes' sha256 (what the page cache keys
    them by); the last `capacity` URLs' kept (0: none), so a page sent again is neither decoded nor hashed
    again. An invalid URL raises every time (only results are kept). Used on the event loop's thread only."""

    def __init__(self, capacity: int, kept_bytes: int = KEPT_BYTES):
        self.capacity, self.kept_bytes = capacity, kept_bytes
        self._kept: OrderedDict[str, tuple[bytes, str, str]] = OrderedDict()
        self._size = 0
        self.hits = 0

    def decode(self, url: str) -> tuple[bytes, str, str]:
        kept = self._kept.get(url)  # the text's hash, then one comparison: a fraction of decoding it
        if kept is not None:
            self.hits += 1
            self._kept.move_to_end(url)
            return kept
        data, media = decode_data_url(url)
        decoded = data, media, hashlib.sha256(data).hexdigest()
        if self.capacity > 0 and len(url) <= self.kept_bytes:
            self._kept[url] = decoded
            self._size += len(url)
            while len(self._kept) > self.capacity or self._size > self.kept_bytes:
                self._size -= len(self._kept.popitem(last=False)[0])
        return decoded


def question_and_image(request: ChatRequest, decode=None) -> tuple:
    """The last user message's text (the question), then what `decode` (`decode_data_url` as default: the bytes
    and media type) makes of the one image or PDF of the conversation. Only `data:` URLs: a remote URL is
    never fetched, a path never opened."""
    images = [
        part.image_url.url
        for m in request.messages
        if isinstance(m.content, list)
        for part in m.content
        if part.type == "image_url" and part.image_url is not None
    ]
    if len(images) != 1:
        raise ApiError(
            400, f"send exactly one image_url part (a data: URL), got {len(images)}", "image_count", param="messages"
        )
    _, _, question = conversation(request)
    return (question, *(decode or decode_data_url)(images[0]))


def decode_data_url(url: str) -> tuple[bytes, str]:
    scheme = url.split(":", 1)[0].lower() if ":" in url[:12] else ""
    if scheme in ("http", "https"):
        raise ApiError(
            400,
            "remote image URLs are not fetched: send the image inline as a data: URL (data:image/png;base64,...)",
            "remote_url_refused",
            param="image_url.url",
        )
    match = DATA_URL.match(url)
    if scheme != "data" or match is None:
        raise ApiError(
            400,
            "image_url.url must be a data: URL (data:image/png;base64,...); files on the server are never read",
            "not_a_data_url",
            param="image_url.url",
        )
    media = (match["type"] or "application/octet-stream").lower()
    if media not in MEDIA_TYPES:
        raise ApiError(
            400,
            f"data: URL of type {media}: send PNG, JPEG, WebP, TIFF or PDF",
            "unsupported_media_type",
            param="image_url.url",
        )
    if not match["b64"]:
        raise ApiError(400, "the data: URL must be base64-encoded (;base64,)", "not_base64", param="image_url.url")
    try:
        return base64.b64decode(url[match.end() :], validate=True), media
    except (binascii.Error, ValueError):
        raise ApiError(
            400, "the data: URL's payload is not valid base64", "not_base64", param="image_url.url"
        ) from None
