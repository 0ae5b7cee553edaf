"""The server's memo of decoded data: URLs (`docread.serve.dataurls.DataUrls`): a URL sent again gives the
same bytes without decoding again; an invalid one is refused every time, as `decode_data_url` refuses it;
it keeps at most `capacity` URLs and `kept_bytes` of their text, least recently used out first."""

from __future__ import annotations

import base64
import hashlib

import pytest

pytest.importorskip("fastapi")

from docread.serve.dataurls import DataUrls, decode_data_url  # noqa: E402
from docread.serve.protocol import ApiError  # noqa: E402


def url(payload: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(payload).decode()


def test_a_url_sent_again_is_not_decoded_again(monkeypatch):
    urls = DataUrls(2)
    first = urls.decode(url(b"page one"))
    assert first[:2] == decode_data_url(url(b"page one")) == (b"page one", "image/png") and urls.hits == 0
    assert first[2] == hashlib.sha256(b"page one").hexdigest()  # what the page cache keys the upload by
    import docread.serve.dataurls as module

    monkeypatch.setattr(module, "decode_data_url", lambda text: pytest.fail("decoded again"))
    monkeypatch.setattr(module.hashlib, "sha256", lambda data: pytest.fail("hashed again"))
    assert urls.decode(url(b"page one")) == first and urls.hits == 1  # an equal text, another str object


def test_an_invalid_url_is_refused_every_time_and_never_kept():
    urls = DataUrls(4)
    for _ in range(2):
        with pytest.raises(ApiError) as refused:
            urls.decode("data:image/png;base64,not base64!")
        assert refused.value.status == 400 and "not valid base64" in str(refused.value)
    assert urls.hits == 0 and not urls._kept


def test_it_keeps_the_last_capacity_urls_within_kept_bytes():
    urls = DataUrls(2)
    a, b, c = url(b"a"), url(b"b"), url(b"c")
    urls.decode(a), urls.decode(b), urls.decode(a), urls.decode(c)  # a used last: b goes
    assert list(urls._kept) == [a, c]
    small = DataUrls(8, kept_bytes=len(a) + len(b))
    small.decode(a), small.decode(b), small.decode(c)
    assert list(small._kept) == [b, c]  # the bytes bound, not the count, evicted a
    zero = DataUrls(0)
    a_sha = hashlib.sha256(b"a").hexdigest()
    assert zero.decode(a) == zero.decode(a) == (b"a", "image/png", a_sha) and zero.hits == 0 and not zero._kept
    big = DataUrls(8, kept_bytes=len(a) - 1)
    assert big.decode(a) == (b"a", "image/png", a_sha) and not big._kept  # larger than the bound: decoded, not kept


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "docread", "temperature": 0.5, "messages": [{"role": "user", "content": "h\\u00e9"}]}',
        b'{"seed": NaN}',  # orjson refuses these three; Python's json reads them: the same value as before
        b'{"seed": 18446744073709551616}',
        b'{"text": "\\ud800"}',
        "\ufeff{}".encode(),  # a UTF-8 byte-order mark
        '{"text": "utf-16"}'.encode("utf-16"),
    ],
)
@pytest.mark.parametrize("with_orjson", [True, False])
def test_a_chat_body_parses_as_pythons_json_reads_it(raw, with_orjson, monkeypatch):
    import json
    import math

    from docread.serve import protocol
    from docread.serve.protocol import json_body

    if not with_orjson:  # the serve extra not installed: json reads every body
        monkeypatch.setattr(protocol, "orjson", None)

    parsed, expected = json_body(raw), json.loads(raw)
    if isinstance(expected.get("seed"), float):  # NaN is not equal to itself
        assert math.isnan(parsed["seed"])
    else:
        assert parsed == expected


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"a": 1,}', b"\xff\xfe\xfa", b"[" * 200_000 + b"]" * 200_000])
def test_a_body_neither_parser_reads_is_a_400_invalid_json(raw):
    from docread.serve.protocol import json_body

    with pytest.raises(ApiError) as refused:
        json_body(raw)
    assert refused.value.status == 400 and refused.value.code == "invalid_json"


def test_while_serving_what_was_loaded_is_left_out_of_the_collectors_passes(tiny_reader):
    import gc

    from kit.serving import http, serving

    before = gc.get_threshold()
    with serving(tiny_reader) as url:
        assert http().get(url + "/health", timeout=30).status_code == 200
        assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] >= 50_000
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before  # as it was once the server stopped
