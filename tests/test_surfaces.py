"""One reading, every surface: each `Settings` field gives the same ask record through `ask --json`,
`ask --server --json`, the HTTP API and the Python readers (timing aside), or its documented refusal; what
`--server` cannot honour is refused in one line; bad values exit 2 naming the flag, or 400 naming the field."""

from __future__ import annotations

import json
from dataclasses import fields

import pymupdf
import pytest
from kit.cli import docread
from kit.serving import http, serving

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from docread.settings import ONLY_OCR, Settings  # noqa: E402

pytestmark = pytest.mark.usefixtures("reuse_loaded_models")

QUESTION = "What is the total?"
TOKENS = 4
VOLATILE = {"timing_ms"}
# a value other than the default for every Settings field; a field missing here fails the walk
OTHER = {
    "pages": "2",
    "top_pages": 1,
    "task": "chart",
    "max_slices": 1,
    "view": "native",
    "dpi": 100.0,
    "password": "unused",
    "text": "off",
    "text_prompt": "off",
    "text_tokens": 8,
    "extractive": True,
    "max_new_tokens": 3,
    "temperature": 0.7,
    "seed": 5,
    "fast": True,
    "source": "text",
}
WITH = {"temperature": {"seed": 1}}  # sampling is compared with a fixed seed
# what every read of the walk sets besides its field: a few tokens, the global view alone (the walk is about
# the surfaces agreeing, and each tile is a CLIP pass on every surface)
BASE = {"max_new_tokens": TOKENS, "max_slices": 0}


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("surfaces") / "two.pdf"
    doc = pymupdf.open()
    for text in ("Total: 12.50 EUR", "Signed by Ada"):
        doc.new_page(width=300, height=300).insert_text((30, 60), text, fontsize=18)
    doc.save(path)
    return path


@pytest.fixture(scope="module")
def reader(tiny_llava):
    from docread.loading import load

    return load(str(tiny_llava), device="cpu")


@pytest.fixture(scope="module")
def url(reader):
    with serving(reader) as base:
        yield base


class Near(float):
    """A score equal to another within float rounding: pairs decoded in a batch (locally several pages at
    once; on a server beside other requests) sum in another order than alone; their tokens are the same."""

    def __eq__(self, other):
        return isinstance(other, float) and abs(self - other) <= 1e-5 * max(1.0, abs(other))

    __hash__ = float.__hash__


def near(record: dict) -> dict:
    """The record with its scores (its own and its pages') compared within float rounding."""
    record = dict(record)
    if isinstance(record.get("score"), float):
        record["score"] = Near(record["score"])
    if isinstance(record.get("pages"), list):
        record["pages"] = [near(p) if isinstance(p, dict) else p for p in record["pages"]]
    return record


def stable(record: dict) -> dict:
    return near({k: v for k, v in record.items() if k not in VOLATILE})


def cli_args(values: dict) -> list[str]:
    """Settings values as ask's flags, named as the options are derived (flags from settings.py)."""
    from docread.cli.options import setting_flags

    args = []
    for f in fields(Settings):
        if f.name in values:
            flag = setting_flags(f)[0]
            args += [flag] if values[f.name] is True else [flag, str(values[f.name])]
    return args


def ask_cli(tiny_llava, pdf, values: dict, *where: str) -> list[dict]:
    where = where or ("--model", str(tiny_llava), "--device", "cpu")
    run = docread("ask", pdf, QUESTION, "--json", *cli_args(values), *where)
    assert run.returncode == 0, run.stderr
    return [stable(json.loads(line)) for line in run.stdout.splitlines()]


def ask_http(url: str, pdf, values: dict) -> list[dict]:
    form = {"question": [QUESTION], **{k: str(v).lower() if v is True else str(v) for k, v in values.items()}}
    response = http().post(
        url + "/v1/documents/ask", data=form, files={"file": (str(pdf), pdf.read_bytes())}, timeout=120
    )
    assert response.status_code == 200, response.text
    return [stable(json.loads(line)) for line in response.text.splitlines()]


@pytest.mark.parametrize("name", [f.name for f in fields(Settings) if f.name not in ONLY_OCR])
def test_every_settings_field_reads_the_same_on_every_surface(name, tiny_llava, pdf, reader, url):
    from docread.reading import LocalReader, RemoteReader

    assert set(OTHER) == {f.name for f in fields(Settings)}, "give every Settings field a value here"
    values = {**BASE, name: OTHER[name], **WITH.get(name, {})}
    settings = Settings.from_mapping(values)
    assert getattr(settings, name) != getattr(Settings.from_mapping(BASE), name)
    local = ask_cli(tiny_llava, pdf, values)
    assert local and local[0]["status"] == "ok"
    assert ask_cli(tiny_llava, pdf, values, "--server", url) == local
    assert ask_http(url, pdf, values) == local
    python = [stable(r.to_json()) for r in LocalReader(reader).ask(str(pdf), [QUESTION], settings=settings)]
    assert python == local
    remote = [stable(r.to_json()) for r in RemoteReader(url).ask(str(pdf), [QUESTION], settings=settings)]
    assert remote == local


@pytest.mark.parametrize("name", ONLY_OCR)
def test_every_ocr_field_reads_the_same_on_every_surface(name, pdf, url):
    from docread.document import ocr_document
    from docread.reading import RemoteReader
    from docread.records import ocr_record

    values = {name: OTHER[name]}
    settings = Settings.from_mapping({**values, "task": "ocr"})
    assert getattr(settings, name) != getattr(Settings(), name)
    here = docread("ocr", pdf, "--json", *cli_args(values), "--model", "/nonexistent-model")  # text: no model
    assert here.returncode == 0, here.stderr
    local = [stable(json.loads(line)) for line in here.stdout.splitlines()]
    there = docread("ocr", pdf, "--json", *cli_args(values), "--server", url)
    assert [stable(json.loads(line)) for line in there.stdout.splitlines()] == local
    assert [stable(ocr_record(str(pdf), r)) for r in ocr_document(None, str(pdf), settings=settings)] == local
    assert [stable(ocr_record(str(pdf), r)) for r in RemoteReader(url).ocr(str(pdf), settings=settings)] == local


def test_text_prompt_off_through_the_server(tiny_llava, pdf, url):
    on = ask_cli(tiny_llava, pdf, {"max_new_tokens": TOKENS, "pages": "1"}, "--server", url)
    off = ask_cli(tiny_llava, pdf, {"max_new_tokens": TOKENS, "pages": "1", "text_prompt": "off"}, "--server", url)
    assert on[0]["text_prompt"] is not None  # the PDF's text layer goes in by default
    assert off[0]["text_prompt"] is None and off[0]["prompt_tokens"] < on[0]["prompt_tokens"]


def test_pages_auto_through_the_server(tiny_llava, pdf, url):
    values = {"max_new_tokens": TOKENS, "pages": "auto", "top_pages": 1}
    local = ask_cli(tiny_llava, pdf, values)
    assert ask_cli(tiny_llava, pdf, values, "--server", url) == local
    assert local[0]["pages_read"] == [1]  # "Total" is on page 1


def test_highlight_through_the_server(tiny_llava, pdf, url, tmp_path):
    common = ["ask", pdf, QUESTION, "--max-new-tokens", TOKENS, "--pages", "1"]
    here = docread(*common, "--model", tiny_llava, "--device", "cpu", "--highlight", tmp_path / "local.png")
    there = docread(*common, "--server", url, "--highlight", tmp_path / "remote.png")
    assert (here.returncode, there.returncode) == (0, 0), there.stderr
    assert (tmp_path / "remote.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    assert "highlight: page 1" in there.stderr


@pytest.mark.parametrize(
    "args, says",
    [
        (["--model", "llava-1.5-7b"], "the server answers with {model}"),
        (["--adapter", "/nonexistent"], "--adapter applies to a local model"),
    ],
)
def test_what_the_server_cannot_honour_is_refused(args, says, tiny_llava, pdf, url):
    run = docread("ask", pdf, QUESTION, "--server", url, *args)
    assert run.returncode == 2 and not run.stdout
    assert says.format(model=tiny_llava) in run.stderr
    same = docread("ask", pdf, QUESTION, "--server", url, "--model", tiny_llava, "--max-new-tokens", TOKENS)
    assert same.returncode == 0, same.stderr


def test_server_url_spellings(pdf, url):
    port = url.rsplit(":", 1)[1]
    spellings = [url, url + "/v1", url + "/v1/", f"127.0.0.1:{port}", f"localhost:{port}"]
    outputs = set()
    for spelling in spellings:
        run = docread("ask", pdf, QUESTION, "--server", spelling, "--max-new-tokens", TOKENS, "--pages", "1")
        assert run.returncode == 0, (spelling, run.stderr)
        outputs.add(run.stdout)
    assert len(outputs) == 1


@pytest.mark.parametrize("name", [f.name for f in fields(Settings) if f.metadata["max"] is not None])
def test_a_bad_settings_value_exits_2_naming_the_flag(name, pdf):
    from docread.cli.options import setting_flags

    f = next(f for f in fields(Settings) if f.name == name)
    flag = setting_flags(f)[0]
    for command in (["ask", pdf, QUESTION], ["extract", pdf, "--field", "total"]):
        run = docread(*command, flag, str(f.metadata["max"] + 1), "--model", "/nonexistent-model")
        if run.returncode == 2 and "No such option" in run.stderr:
            continue  # a field this command does not offer
        assert run.returncode == 2 and flag in run.stderr, run.stderr
        assert "nonexistent-model" not in run.stderr  # refused before any model is looked for


def test_ocr_takes_no_ask_only_options(pdf):
    for flag in ("--task", "--temperature", "--seed", "--text-prompt", "--top-pages"):
        run = docread("ocr", pdf, flag, "1")
        assert run.returncode == 2 and "No such option" in run.stderr, flag
    run = docread("ocr", pdf, "--pages", "auto")
    assert run.returncode == 2 and "--pages" in run.stderr


@pytest.mark.parametrize(
    "form, param",
    [
        ({"dpi": "5"}, "dpi"),
        ({"pages": "abc"}, "pages"),
        ({"text_prompt": "maybe"}, "text_prompt"),
        ({"fast": "sometimes"}, "fast"),
        ({"nope": "1"}, "nope"),
    ],
)
def test_a_bad_request_field_is_400_naming_it(form, param, pdf, url):
    for endpoint, extra in (("ask", {"question": QUESTION}), ("ocr", {})):
        response = http().post(
            f"{url}/v1/documents/{endpoint}",
            data={**extra, **form},
            files={"file": ("two.pdf", pdf.read_bytes())},
            timeout=60,
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"


def test_a_bad_chat_docread_field_is_400_naming_it(url):
    body = {"messages": [{"role": "user", "content": "hi"}], "docread": {"pages": "x-y"}}
    response = http().post(url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "docread.pages"


def test_an_ocr_only_field_is_refused_by_ask_and_chat_not_ignored(pdf, url):
    """`source` is ocr's alone (ONLY_OCR): ask and chat answer 400 naming it, as `ask --source` exits 2."""
    form = {"question": [QUESTION], "source": "text"}
    asked = http().post(url + "/v1/documents/ask", data=form, files={"file": ("a.pdf", pdf.read_bytes())}, timeout=60)
    assert asked.status_code == 400 and asked.json()["error"]["param"] == "source"
    body = {"messages": [{"role": "user", "content": "hi"}], "docread": {"source": "text"}}
    chatted = http().post(url + "/v1/chat/completions", json=body, timeout=60)
    assert chatted.status_code == 400 and chatted.json()["error"]["param"] == "docread.source"


def test_ocr_options_through_the_server(tiny_llava, pdf, url):
    args = ["ocr", pdf, "--json", "--pages", "2", "--max-slices", "1", "--max-new-tokens", TOKENS, "--fast"]
    here = docread(*args, "--model", tiny_llava, "--device", "cpu")
    there = docread(*args, "--server", url + "/v1")
    assert (here.returncode, there.returncode) == (0, 0), there.stderr
    local = [stable(json.loads(line)) for line in here.stdout.splitlines()]
    assert [stable(json.loads(line)) for line in there.stdout.splitlines()] == local
    assert [r["page"] for r in local] == [2]


def test_extract_through_the_server(tiny_llava, pdf, url):
    args = ["extract", pdf, "--field", "total:number", "--max-new-tokens", TOKENS, "--text-prompt", "off"]
    here = docread(*args, "--model", tiny_llava, "--device", "cpu")
    there = docread(*args, "--server", url)
    local, remote = json.loads(here.stdout), json.loads(there.stdout)
    assert here.returncode == 0 and local["fields"]["total"]["error"] is None  # decoded under the number grammar
    assert set(remote["fields"]["total"]) == set(local["fields"]["total"]) and remote["file"] == local["file"]
    assert "a server takes no grammar" in there.stderr  # the surfaces differ here, and say why
    free = docread(*args, "--field", "name", "--server", url)  # a string field: the same answer either way
    same = docread(*args, "--field", "name", "--model", tiny_llava, "--device", "cpu")
    assert near(json.loads(free.stdout)["fields"]["name"]) == near(json.loads(same.stdout)["fields"]["name"])


def test_highlight_of_stdin_through_the_server_is_refused(pdf, url, tmp_path):
    run = docread("ask", "-", QUESTION, "--server", url, "--highlight", tmp_path / "h.png", input=pdf.read_bytes())
    assert run.returncode == 2 and "give a path" in run.stderr and not (tmp_path / "h.png").exists()
