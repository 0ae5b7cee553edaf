"""`docread mcp` through the `mcp` SDK's own client: in-process (schemas, path rules), over stdio (a spawned
`python -m docread mcp` with the tiny model: every tool) and over streamable HTTP (the API key, progress; the
HTTP app on a loopback thread in this process)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import anyio
import pymupdf
import pytest
from kit.forked import GROUP, relayed
from PIL import Image

from docread.intake import Limits
from docread.settings import ONLY_OCR, Settings, field_type, setting_fields

# the MCP SDK (and docread.mcp, built on it) is imported when a test runs, not at collection: conftest's `needs`
pytestmark = pytest.mark.needs("mcp.server.mcpserver")

TOOLS = {"ask_document", "ocr", "extract", "locate", "inspect"}


def make_files(root: Path) -> None:
    doc = pymupdf.open()
    for text in ("Invoice total 1234.56", "Due 2026-03-14"):
        page = doc.new_page(width=300, height=200)
        page.insert_text((20, 50), text, fontsize=14)
    doc.save(root / "invoice.pdf")
    Image.new("RGB", (120, 80), "white").save(root / "blank.png")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mcp-root")
    make_files(folder)
    outside = folder.parent / "outside.png"
    Image.new("RGB", (20, 20), "white").save(outside)
    (folder / "link.png").symlink_to(outside)  # a symlink out of the root: refused
    return folder


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def local_server(root: Path | None, load):
    """An in-process server reading under `root`, loading its model with `load()`."""
    from docread.mcp.inputs import Documents
    from docread.mcp.server import build_server
    from docread.mcp.tools import Work

    return build_server(Work(Documents(root, Limits().max_bytes), Limits(), load))


def in_process(root: Path | None, calls):
    """`calls(client)` against an in-process server without a model (locate and inspect need none)."""
    from mcp import Client

    def no_model():
        raise AssertionError("this test loads no model")

    server = local_server(root, no_model)

    async def main():
        async with Client(server) as client:
            return await calls(client)

    return anyio.run(main)


# -- in process: schemas and the document rules ------------------------------------------------------------
def test_tools_schemas_are_derived_from_settings(root):
    async def calls(client):
        return {t.name: t for t in (await client.list_tools()).tools}

    tools = in_process(root, calls)
    assert set(tools) == TOOLS
    for f in setting_fields():  # every Settings field, with its help, bounds and choices (ocr's own on ocr)
        tool = tools["ocr" if f.name in ONLY_OCR else "ask_document"]
        props, defs = tool.input_schema["properties"], tool.input_schema.get("$defs", {})
        assert f.name in props, f.name
        schema = props[f.name]
        assert schema["description"] == f.metadata["help"]
        text = str(schema)
        if f.metadata["max"] is not None:
            assert f"'maximum': {f.metadata['max']}" in text
        kind = field_type(f)
        if hasattr(kind, "__members__"):
            assert defs[kind.__name__]["enum"] == [m.value for m in kind]
    props = tools["ask_document"].input_schema["properties"]
    assert props["max_new_tokens"]["default"] == Settings().max_new_tokens
    assert not set(ONLY_OCR) & set(props) and props["extractive"]["default"] is False
    assert tools["extract"].input_schema["properties"]["extractive"]["default"] is True  # extract's default
    assert tools["ocr"].input_schema["properties"]["max_new_tokens"]["default"] > Settings().max_new_tokens
    assert "task" not in tools["ocr"].input_schema["properties"]  # fixed: ocr transcribes
    assert set(tools["locate"].input_schema["properties"]) >= {"texts", "pages", "text", "dpi"}
    for tool in tools.values():
        assert tool.output_schema and tool.output_schema["type"] == "object"
    assert "answers" in tools["ask_document"].output_schema["properties"]


def test_paths_stay_under_root_and_content_is_read(root):
    async def calls(client):
        results = {}
        results["ok"] = await client.call_tool("inspect", {"path": "invoice.pdf"})
        results["absolute"] = await client.call_tool("inspect", {"path": str(root / "blank.png")})
        results["up"] = await client.call_tool("inspect", {"path": "../outside.png"})
        results["link"] = await client.call_tool("inspect", {"path": "link.png"})
        results["missing"] = await client.call_tool("inspect", {"path": "nope.pdf"})
        results["both"] = await client.call_tool("inspect", {"path": "blank.png", "content": b64(root / "blank.png")})
        results["neither"] = await client.call_tool("inspect", {})
        results["bad64"] = await client.call_tool("inspect", {"content": "not base64!"})
        results["content"] = await client.call_tool(
            "locate", {"content": b64(root / "invoice.pdf"), "filename": "sent.pdf", "texts": ["1234.56"]}
        )
        results["bad_value"] = await client.call_tool("inspect", {"path": "invoice.pdf", "dpi": 5})
        results["bad_pages"] = await client.call_tool("inspect", {"path": "invoice.pdf", "pages": "x-y"})
        results["bad_choice"] = await client.call_tool("inspect", {"path": "invoice.pdf", "view": "sideways"})
        return results

    r = in_process(root, calls)
    assert not r["ok"].is_error and [p["page"] for p in r["ok"].structured_content["pages"]] == [1, 2]
    assert not r["absolute"].is_error
    for name in ("up", "link"):
        assert r[name].is_error and "outside --root" in r[name].content[0].text, name
    assert r["missing"].is_error and "no such file" in r["missing"].content[0].text
    for name in ("both", "neither"):
        assert r[name].is_error and "one of the two" in r[name].content[0].text
    assert r["bad64"].is_error and "base64" in r["bad64"].content[0].text
    found = r["content"].structured_content["occurrences"]
    assert [(o["file"], o["page"], o["match"]) for o in found] == [("sent.pdf", 1, "exact")]
    assert r["bad_value"].is_error and "dpi" in r["bad_value"].content[0].text
    assert r["bad_pages"].is_error and "x-y" in r["bad_pages"].content[0].text
    assert r["bad_choice"].is_error and "view" in r["bad_choice"].content[0].text


def test_without_root_paths_are_refused_and_content_is_read(root):
    async def calls(client):
        refused = await client.call_tool("inspect", {"path": str(root / "blank.png")})
        sent = await client.call_tool("inspect", {"content": b64(root / "blank.png"), "filename": "b.png"})
        return refused, sent

    refused, sent = in_process(None, calls)
    assert refused.is_error and "--root" in refused.content[0].text
    assert not sent.is_error and sent.structured_content["pages"][0]["file"] == "b.png"


def test_ocr_and_locate_records_are_the_commands_own():
    """One home for each record's shape: the tools write what `ocr --json` and `locate --json` write."""
    from docread import records
    from docread.cli import locate
    from docread.document import PageAnswer
    from docread.errors import DocreadError
    from docread.mcp import tools
    from docread.mcp.tools import ocr_record
    from docread.results import Answer

    assert tools.ocr_record is records.ocr_record and tools.locate_record is records.locate_record
    assert locate.locate_record is records.locate_record
    answer = Answer("f.pdf", 2, "q", "text", -0.5, "tiny", 1, 2, 2, 10, 12, 40, 3, 16, None, "eos", {"decode": 1.0})
    ok, bad = (PageAnswer("q", 2, answer), PageAnswer("q", 3, None, DocreadError("bad_page", "page 3: broken")))
    assert ocr_record("f.pdf", ok)["text"] == "text" and ocr_record("f.pdf", bad)["error"]["code"] == "bad_page"
    assert set(ocr_record("f.pdf", ok)) == set(ocr_record("f.pdf", bad))


# -- a server over stdio, the HTTP app on a thread -----------------------------------------------------------
@pytest.mark.system
@pytest.mark.xdist_group(GROUP)  # on the worker of kit.forked's server
def test_stdio_every_tool(root, tiny_llava):
    """The SDK's own stdio client starts its server (a relay to `docread mcp`, forked from kit.forked's server:
    the stdio transport and the tools are the point, not the interpreter's start) and calls every tool."""
    from mcp import Client, StdioServerParameters

    args = ["mcp", "--root", root, "--model", tiny_llava, "--device", "cpu"]
    server, command = relayed(args, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    params = StdioServerParameters(command=command[0], args=command[1:])
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async def main():
        async with Client(params, read_timeout_seconds=300) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            pdf = {"path": "invoice.pdf", "max_new_tokens": 4, "max_slices": 0}  # the global view: cheap
            ask = await client.call_tool(
                "ask_document", {**pdf, "questions": ["What is the total?", "When?"]}, progress_callback=on_progress
            )
            ocr = await client.call_tool("ocr", {**pdf, "pages": "2"})
            fields = await client.call_tool("extract", {**pdf, "fields": ["total:number", "due_date:date"]})
            schema = {"type": "object", "properties": {"total": {"type": "number", "description": "The total?"}}}
            by_schema = await client.call_tool(
                "extract", {"content": b64(root / "blank.png"), "schema": schema, "max_new_tokens": 4, "max_slices": 0}
            )
            bad_field = await client.call_tool("extract", {**pdf, "fields": ["total:money"]})
            located = await client.call_tool("locate", {"path": "invoice.pdf", "texts": ["1234.56", "absent"]})
            inspected = await client.call_tool("inspect", {"path": "invoice.pdf", "pages": "1"})
            outside = await client.call_tool("ask_document", {"path": "../outside.png", "questions": ["q"]})
            no_questions = await client.call_tool("ask_document", {"path": "invoice.pdf", "questions": []})
            after = await client.call_tool("locate", {"path": "invoice.pdf", "texts": ["Due"]})  # still serving
            return names, ask, ocr, fields, by_schema, bad_field, located, inspected, outside, no_questions, after

    try:
        names, ask, ocr, fields, by_schema, bad_field, located, inspected, outside, no_questions, after = anyio.run(
            main
        )
        assert server.wait(60) == 0, server.stderr  # the client closed its stdin: the server left, exit 0
    finally:
        server.kill()
    assert names == TOOLS
    answers = ask.structured_content["answers"]
    assert [a["question"] for a in answers] == ["What is the total?", "When?"]
    assert all(a["status"] == "ok" and a["page"] in (1, 2) and a["pages_read"] == [1, 2] for a in answers)
    assert {"answer", "score", "evidence", "grounded", "model", "visual_tokens"} <= set(answers[0])
    assert [(v, t) for v, t, _ in progress] == [(0, 2), (1, 2)]  # a notification per page
    pages = ocr.structured_content["pages"]
    assert [(p["page"], p["status"]) for p in pages] == [(2, "ok")] and isinstance(pages[0]["text"], str)
    assert set(fields.structured_content["fields"]) == {"total", "due_date"}
    assert set(fields.structured_content["fields"]["total"]) >= {"value", "raw", "page", "score", "error"}
    assert by_schema.structured_content["file"] == "document"
    assert bad_field.is_error and "money" in bad_field.content[0].text
    found = located.structured_content
    assert [(o["query"], o["page"]) for o in found["occurrences"]] == [("1234.56", 1)]
    assert found["not_found"] == ["absent"]
    assert [p["page"] for p in inspected.structured_content["pages"]] == [1]
    assert outside.is_error and "outside --root" in outside.content[0].text
    assert no_questions.is_error and "questions" in no_questions.content[0].text
    assert not after.is_error


@pytest.fixture(scope="module")
def http_server(root, tiny_reader):
    """`docread mcp --http --api-key sesame`'s app (the streamable HTTP transport behind the key) on a loopback
    uvicorn thread, reading with the session's tiny model: the transport and the key are the point, not the
    process (`test_stdio_every_tool` spawns the real server)."""
    from kit.serving import running

    from docread.mcp.server import PATH, http_app
    from docread.reading import LocalReader

    server = local_server(root, lambda: LocalReader(tiny_reader))  # what `docread mcp`'s open_reader gives
    with running(http_app(server, "127.0.0.1", "sesame")) as url:
        yield url + PATH


def http_client(url: str, key: str | None):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=300)))


def test_http_needs_the_api_key(http_server):
    from kit.serving import http

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = http().post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_http_tools_with_the_key(http_server, root):
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total))

    async def main():
        async with http_client(http_server, "sesame") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            ask = await client.call_tool(
                "ask_document",
                {"content": b64(root / "invoice.pdf"), "questions": ["Total?"], "max_new_tokens": 3},
                progress_callback=on_progress,
            )
            bad = await client.call_tool("ask_document", {"path": "invoice.pdf", "questions": ["q"], "seed": -1})
            return names, ask, bad

    names, ask, bad = anyio.run(main)
    assert names == TOOLS
    assert ask.structured_content["answers"][0]["status"] == "ok"
    assert progress == [(0, 2), (1, 2)]
    assert bad.is_error and "seed" in bad.content[0].text


def test_cli_http_says_where_it_listens_and_wants_the_key(root, monkeypatch):
    """`docread mcp --http --port 0 --api-key K` itself, in-process: it names the address it bound, and that
    address refuses a request without the key and serves one with it (uvicorn's serve-until-a-signal loop
    replaced by these two requests; the transport's tools are tested above)."""
    import httpx
    import uvicorn
    from kit.cli import docread

    seen = {}
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }

    async def main_loop(self):
        seen["url"] = f"http://127.0.0.1:{self.servers[0].sockets[0].getsockname()[1]}/mcp"
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient(timeout=300) as client:
            for key in (None, "sesame"):
                headers = {**accept, **({"Authorization": f"Bearer {key}"} if key else {})}
                seen[key] = (await client.post(seen["url"], json=hello, headers=headers)).status_code

    monkeypatch.setattr(uvicorn.Server, "main_loop", main_loop)
    run = docread("mcp", "--http", "--port", "0", "--api-key", "sesame", "--root", root)
    assert run.returncode == 0, run.stderr
    assert f"serving MCP on {seen['url']}" in run.stderr
    assert (seen[None], seen["sesame"]) == (401, 200)


def test_cli_refuses_a_non_loopback_host(tmp_path):
    from kit.cli import docread

    run = docread("mcp", "--http", "--host", "0.0.0.0")
    assert run.returncode == 2 and "loopback only" in run.stderr


def test_a_model_that_cannot_load_is_a_tool_error_and_the_server_goes_on(root):
    from mcp import Client

    from docread.errors import DocreadError

    loads = []

    def broken():
        loads.append(1)
        raise DocreadError("no_weights", "no weights for 'nope' in the cache; run without --offline")

    server = local_server(root, broken)

    async def main():
        async with Client(server) as client:
            first = await client.call_tool("ask_document", {"path": "blank.png", "questions": ["q"]})
            located = await client.call_tool("locate", {"path": "invoice.pdf", "texts": ["Due"]})
            again = await client.call_tool("ocr", {"path": "blank.png"})
            text = await client.call_tool("ocr", {"path": "invoice.pdf", "source": "text"})  # needs no model
            return first, located, again, text

    first, located, again, text = anyio.run(main)
    assert not text.is_error and {p["source"] for p in text.structured_content["pages"]} == {"layer"}
    assert first.is_error and "could not be loaded: no weights" in first.content[0].text
    assert not located.is_error and located.structured_content["occurrences"][0]["page"] == 2
    assert again.is_error and len(loads) == 2  # tried again on the next call, not left broken


def test_cli_refuses_a_root_that_is_not_a_folder(tmp_path):
    from kit.cli import docread

    run = docread("mcp", "--root", tmp_path / "missing")
    assert run.returncode == 2 and "not a folder" in run.stderr
