"""`docread chat`: `ChatSession` in-process (the page encoded once; a conversation; the same answers here and
through a server), the command in-process (`--json`, /quit, end of input, a bad file), and driven through a
pseudo-terminal (one session: prompts, commands, Ctrl-C once and twice), where every wait follows an event (one
safety timeout only catches a hung program)."""

from __future__ import annotations

import io
import json
import os
import select
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from kit.forked import GROUP
from PIL import Image

from docread.chat import ChatSession, open_chat_document
from docread.errors import DocreadError, UsageError
from docread.events import Events
from docread.reading import RemoteReader
from docread.settings import Settings
from docread.views.prompt import with_turns

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What is written here?"
OTHER = "What is printed here?"  # the page's plan (and cache entry) is the same as for QUESTION


@pytest.fixture(scope="module")
def page_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chat") / "page.png"
    pixels = np.random.default_rng(7).integers(0, 256, (336, 336, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


def settings() -> Settings:
    return Settings(max_new_tokens=3, max_slices=0)


def ask(session: ChatSession, question: str) -> tuple[str, dict]:
    text = "".join(session.ask(question))
    return text, session.last


# -- ChatSession ------------------------------------------------------------------------------------------
def test_session_encodes_the_page_once(tiny_reader, page_png):
    from docread.document import ask_document

    document, _ = open_chat_document(str(page_png), settings=settings())
    with document:
        session = ChatSession(document, reader=tiny_reader, settings=settings())
        first_text, first = ask(session, QUESTION)
        second_text, second = ask(session, OTHER)
        third_text, third = ask(session, QUESTION)
        assert first["status"] == second["status"] == "ok"
        assert first_text.strip() == first["answer"] and second_text.strip() == second["answer"]
        assert first["timing_ms"]["render"] > 0 and first["timing_ms"]["encode"] > 0
        for later in (second, third):  # the page kept: only the question's decode is paid
            assert later["timing_ms"]["render"] == 0 and later["timing_ms"]["encode"] == 0
        assert (session.cache.misses, session.cache.hits) == (1, 2)
        assert third["prompt_tokens"] > first["prompt_tokens"]  # the conversation so far is in the prompt
        assert session.reset() == 3 and session.turns == []
        _, fourth = ask(session, QUESTION)  # forgotten: the first question's prompt and answer again
        assert fourth["answer"] == first["answer"] and fourth["prompt_tokens"] == first["prompt_tokens"]
        # the same answer `ask` gives
        (expected,) = ask_document(tiny_reader, str(page_png), [QUESTION], settings=settings())
        assert first["answer"] == expected.best.answer and first["score"] == pytest.approx(expected.best.score)


class Warnings(Events):
    def __init__(self):
        self.seen: list[str] = []

    def warning(self, message: str) -> None:
        self.seen.append(message)


@pytest.fixture
def prompts(monkeypatch):
    """The token ids of every prompt text after the image the reader is asked to answer."""
    from docread.reader import DocReader

    seen: list[list[int]] = []
    real = DocReader._suffix

    def spy(self, encoded, question, max_new_tokens=0):
        seen.append(self._ids(question))
        return real(self, encoded, question, max_new_tokens)

    monkeypatch.setattr(DocReader, "_suffix", spy)
    return seen


def test_with_turns_is_llavas_multi_turn_form():
    template = "USER: <image>\n{question} ASSISTANT:"
    text = with_turns(template, [("Q1", "A1"), ("Q2", "A2")], "Q3", "</s>")
    assert template.replace("<image>", "").format(question=text) == (
        "USER: \nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>USER: Q3 ASSISTANT:"
    )
    assert with_turns("SYS\nUSER: <image>{question}\nASSISTANT:", [("Q1", "A1")], "Q2", "<e>") == (
        "Q1\nASSISTANT: A1<e>USER: Q2"
    )


def test_a_follow_up_prompt_holds_the_earlier_turns(tiny_reader, page_png, prompts):
    document, _ = open_chat_document(str(page_png), settings=settings())
    with document:
        session = ChatSession(document, reader=tiny_reader, settings=settings())
        _, first = ask(session, QUESTION)
        _, second = ask(session, OTHER)
    tokenizer = tiny_reader.base.tokenizer
    said = tokenizer.decode(prompts[1])
    turn = f"{QUESTION} ASSISTANT: {first['answer']}{tokenizer.eos_token}USER: {OTHER} ASSISTANT:"
    assert turn in said, said
    assert tokenizer.decode(prompts[0]).count("ASSISTANT:") == 1  # the first question alone
    assert second["question"] == OTHER and second["prompt_tokens"] == first["prompt_tokens"] + len(prompts[1]) - len(
        prompts[0]
    )
    assert session.turns == [(QUESTION, first["answer"]), (OTHER, second["answer"])]


def test_old_turns_are_dropped_with_a_warning_when_the_context_is_full(tiny_reader, page_png, prompts, monkeypatch):
    document, _ = open_chat_document(str(page_png), settings=settings())
    events = Warnings()
    with document:
        session = ChatSession(document, reader=tiny_reader, settings=settings(), events=events)
        _, first = ask(session, OTHER)  # the longer question, in tokens
        ask(session, QUESTION)
        assert not events.seen and len(session.turns) == 2
        # room for the page, one question and its answer, not for any earlier turn
        small = first["prompt_tokens"] + settings().max_new_tokens + 1
        monkeypatch.setattr(tiny_reader, "context", small)
        _, third = ask(session, OTHER)
    assert third["status"] == "ok", third
    assert events.seen == [f"chat: 2 earlier turns dropped to fit the {small}-token context"]
    assert third["status"] == "ok" and third["prompt_tokens"] == first["prompt_tokens"]
    assert "ASSISTANT:" not in tiny_reader.base.tokenizer.decode(prompts[-1]).replace(" ASSISTANT:", "", 1)
    assert session.turns == [(OTHER, third["answer"])]  # the dropped turns are gone for good


def test_session_pages_and_bad_page(tiny_reader, page_png):
    document, _ = open_chat_document(str(page_png), settings=settings())
    with document:
        session = ChatSession(document, reader=tiny_reader, settings=settings())
        assert [(p.number, p.width, p.height) for p in session.pages()] == [(1, 336, 336)]
        assert session.set_page(1).number == 1
        with pytest.raises(UsageError, match="page 2"):
            session.set_page(2)
        with pytest.raises(UsageError):
            list(session.ask("   "))


def test_bad_file_fails_before_any_model(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DocreadError, match="not a PDF or an image"):
        open_chat_document(str(bad))
    with pytest.raises(UsageError):
        open_chat_document("-")


@pytest.mark.system
def test_session_through_a_server_answers_as_here(tiny_reader, page_png):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from kit.serving import http, serving, stable

    document, data = open_chat_document(str(page_png), settings=settings())
    with document, serving(tiny_reader) as url:
        here = ChatSession(document, reader=tiny_reader, settings=settings())
        events = Warnings()
        there = ChatSession(document, reader=RemoteReader(url), data=data, settings=settings(), events=events)
        _, expected = ask(here, QUESTION)
        text, got = ask(there, QUESTION)
        assert stable(got) == stable(expected) and text.strip() == got["answer"] and not events.seen
        _, again = ask(there, OTHER)
        assert again["timing_ms"]["encode"] == 0  # the server's page cache kept the page
        ask(there, OTHER)  # the server answers each question alone: said once, on the first follow-up
        assert events.seen == ["--server: the server answers each question alone; earlier turns are not sent"]
        assert http().get(url + "/health").json()["cache"]["hits"] >= 1


# -- the command, in-process ---------------------------------------------------------------------------
def chat_cli(tiny_llava, page_png, lines: list[str], *options: str):
    """`docread chat` with `lines` on a piped stdin (the model loaded once a session)."""
    from kit.cli import docread

    argv = ["chat", page_png, "--model", tiny_llava, "--device", "cpu", "--max-slices", "0", *options]
    return docread(*argv, input="".join(line + "\n" for line in lines))


def test_chat_json_writes_json_lines_only(tiny_llava, page_png, reuse_loaded_models):
    lines = [QUESTION, "/help", "/pages", "/json", "/page 9", "/nope", OTHER, "/reset", "/quit", QUESTION]
    result = chat_cli(tiny_llava, page_png, lines, "--max-new-tokens", "3", "--json")
    assert result.returncode == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]  # every stdout line is JSON
    assert [r["question"] for r in records] == [QUESTION, OTHER]  # nothing after /quit is read
    assert all(r["status"] == "ok" for r in records)
    assert "/page N" in result.stderr and "page 9" in result.stderr  # the rest went to stderr
    assert "2 earlier turns forgotten" in result.stderr  # /reset
    plain = chat_cli(tiny_llava, page_png, [QUESTION], "--max-new-tokens", "3")  # then end of input: it leaves
    assert plain.returncode == 0 and plain.stdout.strip() == records[0]["answer"]  # without --json: the text


# -- the command, through a pseudo-terminal ------------------------------------------------------------
SAFETY_S = 120.0  # only a hung program meets this: every wait below follows an event, never a step deadline
SELECT_CALLS = {"x86_64": {"7", "23", "270", "271"}, "aarch64": {"72", "73"}}  # poll, select, pselect6, ppoll


class Terminal:
    """A child process on a pty (its controlling terminal: Ctrl-C is a real SIGINT). Each wait follows an event:
    text on the terminal, the program asleep at its prompt, its exit. One overall safety timeout only stops
    a hung program from hanging the suite."""

    def __init__(self, args: list[str], safety_s: float = SAFETY_S):
        from kit.forked import Forked

        env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", TERM="dumb")
        self.deadline = time.monotonic() + safety_s
        self.fd, self._slave = os.openpty()  # this end kept open: the terminal outlives the program
        self.process = Forked(args, env=env, terminal=os.ttyname(self._slave))
        self.pid = self.process.pid
        self.seen = ""
        self.status: int | None = None

    def _check(self, waiting_for: str) -> None:
        if time.monotonic() >= self.deadline:
            shows = self.seen[-2000:]
            raise AssertionError(f"no {waiting_for} in {SAFETY_S:.0f} s; the terminal shows:\n{shows}\n{self._state()}")

    def _state(self) -> str:
        """The child's signal masks and each thread's system call, from /proc (for a hung program's report)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
            tasks = sorted(Path(f"/proc/{self.pid}/task").iterdir())
            calls = [f"{t.name}: {(t / 'syscall').read_text().split()[:1]} {(t / 'wchan').read_text()}" for t in tasks]
        except OSError:
            return "(no /proc)"
        return "\n".join([*(line for line in status if line.startswith(("Sig", "Shd"))), *calls])

    def _read(self, timeout: float) -> bool:
        """What the program wrote within `timeout` s, added to `seen`; False once it closed the terminal."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # the child closed the terminal
            return False
        self.seen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        return bool(chunk)

    def expect(self, text: str) -> str:
        """Read until `text` appears (what came before it is returned and consumed)."""
        while text not in self.seen:
            self._check(repr(text))
            ended = self.process.poll() is not None  # read once more after it ended: what it wrote last
            assert self._read(0.5) and not ended, f"the program ended before {text!r}:\n{self.seen[-2000:]}"
        before, _, self.seen = self.seen.partition(text)
        return before

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def _asleep_in_select(self) -> bool | None:
        """Whether the program's main thread sleeps in select/poll (readline waiting for a key), read from
        /proc; None where /proc cannot tell."""
        try:
            syscall = Path(f"/proc/{self.pid}/syscall").read_text().split()[0]
            wchan = Path(f"/proc/{self.pid}/wchan").read_text()
        except (OSError, IndexError):
            return None
        return syscall in SELECT_CALLS.get(os.uname().machine, ()) or "select" in wchan or "poll" in wchan

    def waiting_for_a_key(self) -> None:
        """Return once readline (its prompt already shown) sleeps in its select(), waiting for a key."""
        while not (asleep := self._asleep_in_select()):
            if asleep is None:  # no /proc: a settle instead of the probe
                time.sleep(1.0)
                return
            self._check("wait for a key at the prompt")
            self._read(0.02)

    def interrupt(self) -> None:
        """Ctrl-C at the prompt, sent once readline waits for a key: a SIGINT that lands before readline's
        select() is only acted on at the next signal (readline's race; under load, a real one)."""
        self.waiting_for_a_key()
        self.send("\x03")

    def wait(self) -> int:
        """The program's exit code, once it exits (its output drained, so it never blocks writing)."""
        while self.status is None:
            self._check("exit")
            self._read(0.2)
            self.status = self.process.poll()
        return self.status

    def kill(self) -> None:
        if self.status is None:
            self.process.kill()
            self.process.wait(SAFETY_S)
        for fd in (self.fd, self._slave):
            if fd is not None:
                os.close(fd)
        self.fd = self._slave = None


@pytest.mark.system
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
@pytest.mark.xdist_group(GROUP)  # on the worker of kit.forked's server
def test_chat_on_a_terminal(tiny_llava, page_png):
    args = ["chat", str(page_png), "--model", str(tiny_llava), "--device", "cpu"]
    term = Terminal([*args, "--max-new-tokens", "3", "--max-slices", "0"])
    try:
        term.expect("p1> ")
        term.send(QUESTION + "\n")
        answered = term.expect("p1> ")
        assert "score" in answered  # the answer, then its summary line, then the prompt again
        term.send("/page 1\n")
        assert "page 1 (336x336 px)" in term.expect("p1> ")
        term.send("/pages\n")
        assert "* page 1: 336x336 px" in term.expect("p1> ")
        term.send("/page 9\n")
        assert "error: page 9" in term.expect("p1> ")
        term.send("/json\n")
        assert "JSON records on" in term.expect("p1> ")
        term.send(OTHER + "\n")
        shown = term.expect("p1> ")
        assert '"question": "What is printed here?"' in shown and '"encode": 0.0' in shown
        term.interrupt()  # Ctrl-C at the prompt: a fresh line, not an exit
        assert "Ctrl-C again" in term.expect("p1> ")
        term.send("/reset\n")  # a line in between: the next Ctrl-C is a first one again
        assert "2 earlier turns forgotten" in term.expect("p1> ")
        term.interrupt()
        assert "Ctrl-C again" in term.expect("p1> ")
        term.interrupt()  # twice at the prompt: it leaves (/quit and end of input: in-process above)
        assert term.wait() == 0
    finally:
        term.kill()


def test_chat_bad_file_is_one_error_line(tmp_path):
    from kit.cli import docread

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    run = docread("chat", bad, "--model", "no/such-model")
    assert run.returncode == 1 and run.stderr.startswith("error:") and len(run.stderr.splitlines()) == 1
    assert "not a PDF or an image" in run.stderr


def test_session_answer_stopped_early_leaves_the_page_usable(tiny_reader, page_png):
    document, _ = open_chat_document(str(page_png), settings=settings())
    with document:
        session = ChatSession(document, reader=tiny_reader, settings=Settings(max_new_tokens=40, max_slices=0))
        pieces = session.ask(QUESTION)
        next(pieces)
        pieces.close()  # what Ctrl-C during an answer does: the decode stops, the kept page stays
        text, record = ask(session, QUESTION)
        assert record["status"] == "ok" and text.strip() == record["answer"]
        assert record["timing_ms"]["encode"] == 0 and session.cache.hits == 1


def test_the_library_chat_imports_nothing_from_serve():
    import ast

    import docread.chat
    import docread.serve.app
    from docread.pagecache import PageCache

    tree = ast.parse(Path(docread.chat.__file__).read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("docread.serve")], imported
    assert docread.serve.app.PageCache is PageCache  # the server keeps pages in the same cache
