"""Incremental detokenisation (generate/text.py) and the constraints that read the answer's text each step:
the same text, chunks and stop steps as decoding the whole answer at every token (the old way, kept here
as the reference), for a byte-level BPE and SentencePiece/Llama-shaped tokenizers (byte fallback, "▁"),
with multi-byte characters split across tokens and special tokens; and each token decoded a bounded
number of times."""

from __future__ import annotations

import json
import random

import pytest
import torch

from docread.generate.constraints import StopAt
from docread.generate.extractive import Extractive, normalized
from docread.generate.text import LONGEST_WINDOW, MOVE_AFTER, TextStream, TextStreams, tokens_holding

TEXTS = [
    "The total amount due is $1,234.56 (net 30).",
    "你好世界, 日本語のテキスト and 한국어 mixed in.",
    "Emoji: 😀👍🏽🇫🇷 and naïve café, Ünïcödé — “quotes”.",
    "Line one\nline two\n\n  indented\ttab",
]
BYTES = [f"<0x{b:02X}>" for b in range(256)]


def _llama(decoder: str):
    """A SentencePiece/Llama-shaped BPE: words start with "▁", characters it lacks fall back to <0xNN> bytes;
    `decoder` "legacy" (Llama 2's tokenizer.json: Replace, ByteFallback, Fuse, Strip) or "metaspace"."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    words = ["Hello world, the total amount due is on the page", "invoice number date 你好 é"] + TEXTS[:1]
    trained.train_from_iterator(words, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    model = json.loads(trained.to_str())["model"]
    vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", *BYTES])}
    for token in model["vocab"]:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if decoder == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        steps = [decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)]
    tok.decoder = decoders.Sequence(steps)
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<image>"])
    tok.add_tokens(["<extra>"])  # an added token that is not special: written out even when specials are skipped
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<image>"],
    )


@pytest.fixture(scope="module", params=["byte-level", "llama", "metaspace"])
def tokenizer(request):
    if request.param == "byte-level":
        from docread.testing import build_tokenizer

        return build_tokenizer()
    return _llama("legacy" if request.param == "llama" else request.param)


def _specials(tokenizer) -> list[int]:
    return sorted({*tokenizer.all_special_ids, *tokenizer.added_tokens_decoder})


def _answers(tokenizer, seed: int, count: int = 8) -> list[list[int]]:
    """Token lists as a model writes them: sentences (multi-byte characters split across tokens) with
    special tokens between any two tokens, and fully random ids (invalid byte sequences included)."""
    rng, specials = random.Random(seed), _specials(tokenizer)
    found = []
    for _ in range(count):
        text = " ".join(rng.sample(TEXTS, rng.randint(1, len(TEXTS))))
        ids = tokenizer(text, add_special_tokens=False).input_ids
        for _ in range(rng.randint(0, 3)):
            ids.insert(rng.randint(0, len(ids)), rng.choice(specials))
        found.append(ids)
        found.append([rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, LONGEST_WINDOW - 4))])
    return found


def _old_chunks(tokenizer, ids: list[int], skip: bool = True) -> list[str]:
    """The old TextStream: the whole answer decoded at every token."""
    chunks, emitted = [], 0
    for n in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:n], skip_special_tokens=skip)
        if text.endswith("\ufffd"):
            chunks.append("")
            continue
        chunks.append(text[emitted:])
        emitted = len(text)
    text = tokenizer.decode(ids, skip_special_tokens=skip)
    return [*chunks, text[emitted:]]


def _stream(tokenizer, ids: list[int], skip: bool = True) -> tuple[list[str], TextStream]:
    stream = TextStream(tokenizer, skip_special_tokens=skip)
    return [*(stream.push(t) for t in ids), stream.flush()], stream


def test_chunks_are_the_old_ones_and_join_to_the_whole_decode(tokenizer):
    for skip in (True, False):
        for ids in _answers(tokenizer, seed=1):
            chunks, stream = _stream(tokenizer, ids, skip)
            assert chunks == _old_chunks(tokenizer, ids, skip), ids
            assert stream.text() == tokenizer.decode(ids, skip_special_tokens=skip)
            valid = "\ufffd" not in stream.text()
            if valid:  # whole characters only: joined they are the answer, and none ends mid-character
                assert "".join(chunks) == stream.text() == stream.said()
                assert not any(c.endswith("\ufffd") for c in chunks)


def test_a_character_split_over_byte_tokens_comes_out_whole():
    tokenizer = _llama("legacy")
    ids = tokenizer("a 😀 b", add_special_tokens=False).input_ids
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces.count("<0xF0>") == 1 and len([p for p in pieces if p.startswith("<0x")]) == 4  # the emoji's bytes
    chunks, _ = _stream(tokenizer, ids)
    assert "😀" in chunks and "".join(chunks) == "a 😀 b"
    assert chunks[pieces.index("<0xF0>") : pieces.index("<0xF0>") + 3] == ["", "", ""]  # held back, then whole


@pytest.mark.parametrize("decoder", ["legacy", "metaspace"])
def test_the_space_of_a_word_after_a_skipped_special_token_is_kept(decoder):
    """SentencePiece drops the leading space of a decoded text: a window starting at a special token (skipped)
    would drop the next word's."""
    tokenizer = _llama(decoder)
    words = tokenizer(" ".join(["the total amount"] * 12), add_special_tokens=False).input_ids
    image = tokenizer.convert_tokens_to_ids("<image>")
    for at in range(MOVE_AFTER, len(words)):  # wherever the window is when it comes
        for ids in ([*words[:at], image, *words[at:]], [*words[:at], image, image, *words[at:]]):
            chunks, stream = _stream(tokenizer, ids)
            assert "".join(chunks) == stream.text() == tokenizer.decode(ids, skip_special_tokens=True)
            assert chunks == _old_chunks(tokenizer, ids)


def _forced(out: torch.Tensor, eos: int) -> bool:
    return bool(out[0, eos] == 0) and bool(torch.isinf(out).sum() == out.numel() - 1)


def _stop_steps(stop: StopAt, ids: list[int], eos: int) -> list[int]:
    """The steps (tokens so far) at which `stop` forces the end, the answer growing in one list."""
    tokens, logits, steps = [], torch.zeros(1, 8), []
    stop(logits, tokens)
    for token in ids:
        tokens.append(token)
        if _forced(stop(logits, tokens), eos):
            steps.append(len(tokens))
    return steps


def _stops(tokenizer, ids: list[int], rng: random.Random) -> list[str]:
    """Stop strings an answer holds somewhere (special tokens written out, as StopAt reads it), and one it does not."""
    text = tokenizer.decode(ids).replace("\ufffd", "")
    found = ["never-in-any-answer"]
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(max(len(text), 1))
        found.append(text[at : at + rng.randint(1, 6)])
    return found


def test_stop_at_fires_at_the_same_step_as_decoding_the_whole_answer(tokenizer):
    rng, eos = random.Random(2), 7
    for ids in _answers(tokenizer, seed=2):
        stops = _stops(tokenizer, ids, rng)
        old = next((n for n in range(1, len(ids) + 1) if any(s in tokenizer.decode(ids[:n]) for s in stops if s)), None)
        steps = _stop_steps(StopAt(tokenizer, stops, [eos]), ids, eos)
        assert (steps[0] if steps else None) == old, (ids, stops)
        assert steps == (list(range(old, len(ids) + 1)) if old else [])  # and holds from then on, as before


def test_rows_sharing_a_stop_at_keep_their_own_text():
    """The rows of a batch call one constraint in turn, each with its own growing token list."""
    tokenizer, eos = _llama("legacy"), 2
    one = tokenizer("the total amount", add_special_tokens=False).input_ids
    two = tokenizer("amount due 你好", add_special_tokens=False).input_ids
    stop, rows = StopAt(tokenizer, ["due", "total"], [eos]), ([], [])
    logits, steps = torch.zeros(1, 8), ([], [])
    for tokens in rows:
        stop(logits, tokens)
    for step in range(max(len(one), len(two))):
        for row, ids, found in zip(rows, (one, two), steps):
            if step < len(ids):
                row.append(ids[step])
                if _forced(stop(logits, row), eos):
                    found.append(len(row))
    assert steps[0][0] == _stop_steps(StopAt(tokenizer, ["due", "total"], [eos]), one, eos)[0]
    assert steps[1][0] == _stop_steps(StopAt(tokenizer, ["due", "total"], [eos]), two, eos)[0]
    for row in rows:
        stop.finish(row)
    assert not stop.texts._streams and not stop.stopped


def _old_extractive(span: Extractive, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Extractive's step as it was: every candidate decodes the whole answer plus itself."""
    from docread.generate.extractive import NEG, TOP_K, WIDE_K

    def said(ids):
        return span.tokenizer.decode(ids, skip_special_tokens=True)

    def fits(ids):
        text = normalized(said(ids)).lstrip()
        return bool(text) and text in span.text

    def ends(ids):
        return fits(ids) and (span.accept is None or span.accept(said(ids).strip()))

    order, allowed = torch.argsort(logits[0], descending=True).tolist(), []
    for start, stop in ((0, TOP_K), (TOP_K, WIDE_K)):
        for token in order[start:stop]:
            if token in span.eos:
                if tokens and ends(tokens):
                    allowed.append(token)
            elif fits([*tokens, token]):
                allowed.append(token)
        if allowed:
            break
    if not allowed:
        allowed = span.eos if tokens else [span.first]
    keep = torch.full_like(logits, NEG)
    keep[..., allowed] = logits[..., allowed]
    return keep


def test_extractive_allows_the_same_tokens_as_decoding_the_whole_answer(tokenizer):
    rng, page = random.Random(3), "  ".join(TEXTS)
    eos = [tokenizer.eos_token_id]
    for accept in (None, lambda answer: answer.endswith(".")):
        span = Extractive(tokenizer, page, eos, accept=accept)
        at = rng.randrange(len(page) - 30)
        ids = tokenizer(page[at : at + 30], add_special_tokens=False).input_ids[:10]
        tokens = []
        for n in range(len(ids) + 1):
            logits = torch.randn(1, len(tokenizer), generator=torch.Generator().manual_seed(n))
            assert torch.equal(span(logits, tokens), _old_extractive(span, logits, tokens)), (ids, n)
            tokens.append(ids[n]) if n < len(ids) else span.finish(tokens)
        assert not span.texts._streams


def test_logprobs_cut_at_the_same_token_as_decoding_the_whole_answer(tokenizer):
    rng = random.Random(4)
    for ids in _answers(tokenizer, seed=4):
        text = tokenizer.decode(ids)
        for wanted in (text[: rng.randint(0, len(text))], text.strip(), "never-in-any-answer"):
            old = next((n for n in range(1, len(ids) + 1) if wanted in tokenizer.decode(ids[:n])), len(ids))
            assert tokens_holding(tokenizer, ids, wanted) == old, (ids, wanted)


class _Counting:
    """A tokenizer that counts the ids it is asked to decode, and the most at once."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded, self.most = tokenizer, 0, 0

    def decode(self, ids, **kwargs):
        self.decoded, self.most = self.decoded + len(ids), max(self.most, len(ids))
        return self.tokenizer.decode(ids, **kwargs)

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_each_token_is_decoded_a_bounded_number_of_times(tokenizer):
    """A 1,000-token answer: the stream and StopAt decode windows of a bounded size, O(n) ids in all (the old
    way: n * (n + 1) / 2 ≈ 500,000); tokens_holding decodes them all once, then windows."""
    ids = tokenizer(" ".join(TEXTS * 30), add_special_tokens=False).input_ids[:1000]
    counting, n = _Counting(tokenizer), len(ids)
    stream = TextStream(counting)
    chunks = [stream.push(token) for token in ids]
    chunks.append(stream.flush())
    assert counting.most <= LONGEST_WINDOW + 1 and counting.decoded <= 2 * MOVE_AFTER * n
    assert "".join(chunks) == tokenizer.decode(ids, skip_special_tokens=True)

    counting.decoded = counting.most = 0
    assert _stop_steps(StopAt(counting, ["never-in-any-answer"], [2]), ids, 2) == []
    assert counting.most <= LONGEST_WINDOW + 1 and counting.decoded <= 2 * MOVE_AFTER * n
    counting.decoded = 0
    assert tokens_holding(counting, ids, tokenizer.decode(ids)) == n
    assert counting.decoded <= (2 * MOVE_AFTER + 1) * n


def test_a_candidate_decodes_only_the_window_after_the_text_read():
    tokenizer = _llama("legacy")
    counting, page = _Counting(tokenizer), " ".join(TEXTS * 20)
    span = Extractive(counting, page, [tokenizer.eos_token_id])
    ids, tokens = tokenizer(page, add_special_tokens=False).input_ids[: LONGEST_WINDOW + 8], []
    logits = torch.zeros(1, len(tokenizer))
    for token in ids:
        logits[0, token] = 1.0  # the page's own next token first
        span(logits, tokens)
        logits[0, token] = 0.0
        tokens.append(token)
    assert counting.most <= LONGEST_WINDOW + 2  # the old way: the whole answer and the candidate


def test_streams_start_over_for_a_new_answer_and_for_a_list_they_do_not_know():
    tokenizer = _llama("legacy")
    streams, ids = TextStreams(tokenizer, skip_special_tokens=True), tokenizer("你好 world").input_ids
    tokens = list(ids)
    stream, new = streams.of(tokens)
    assert new == stream.said() == tokenizer.decode(ids, skip_special_tokens=True)
    tokens[-1] = ids[0]  # not the list it saw grow: decoded afresh
    assert streams.of(tokens)[0].said() == tokenizer.decode(tokens, skip_special_tokens=True)
    tokens.clear()
    assert streams.of(tokens)[1] == ""


def test_streamed_text_cut_at_a_stop_keeps_what_it_held_back():
    """serve's StopCut holds back a tail that may begin a stop; the text held is sent once it cannot, and a
    stop split across chunks is found (it was dropped, and the stop missed)."""
    from docread.serve.chat import Shape, StopCut

    for chunks, stops, sent in (
        (["abc E", "xyz", " more EN", "D tail"], ["END"], "abc Exyz more "),
        (["total: 1", "2", "3.4", "5\n\nQ", "uestion"], ["\n\nQuestion", "\n\nQ:"], "total: 123.45"),
        (["no stop ", "here at all"], ["END"], "no stop here at all"),
    ):
        cut = StopCut(Shape(stops=stops))
        out = [cut.push(chunk) for chunk in chunks]
        whole = "".join(chunks)
        assert "".join(out) == sent == Shape(stops=stops).cut(whole)[0] and cut.sent == len(sent)
        assert cut.stopped == any(s in whole for s in stops)
