"""JSON answers that always parse: a JSON Schema (or regex) as an llguidance grammar, applied to each step's
logits through the decode loop's `constrain` hook — disallowed tokens masked, end of sequence forced
once the grammar is complete. Needs the `structured` extra (llguidance)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import torch

from docread.errors import DocreadError, UsageError

NEG = float("-inf")
_TOKENIZERS: dict[int, object] = {}  # id(hf tokenizer) -> llguidance's view of it (costly to build)
JSON_OPTIONS = {"whitespace_flexible": False}  # compact JSON: a model cannot spin on blanks
NUMBER_BOUND = 1e15  # |x| of a number the schema leaves unbounded: within float range (never Infinity) and exact
NUMBER_STEP = 1e-6  # a number's finest step when the schema gives none: 6 decimals, so a number always ends


def _llguidance():
    try:
        import llguidance
        import llguidance.hf
    except ImportError:
        raise UsageError(
            "structured output needs the structured extra: pip install 'docread[structured]' (llguidance)",
            code="missing_extra",
        ) from None
    return llguidance


def ll_tokenizer(tokenizer):
    """llguidance's tokenizer for a Hugging Face one, built once per tokenizer."""
    llguidance = _llguidance()
    key = id(tokenizer)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))
    return _TOKENIZERS[key][1]


class Grammar:
    """A `generate.loop.Constraint` for one grammar: reset by an empty answer, so one object serves each
    answer in turn (not two rows at once). After the answer, `completed` says whether the grammar was."""

    def __init__(self, tokenizer, grammar: str, eos_token_ids: Iterable[int]):
        self.llguidance = _llguidance()
        self.tokenizer, self.grammar = ll_tokenizer(tokenizer), grammar
        self.eos = sorted(set(eos_token_ids))
        self.matcher = None
        self.consumed = 0
        self.completed = False
        self._new()

    def _new(self) -> None:
        self.matcher = self.llguidance.LLMatcher(self.tokenizer, self.grammar, log_level=0)
        if self.matcher.is_error():
            raise UsageError(f"the schema cannot be turned into a grammar: {self.matcher.get_error()}")
        self.consumed, self.completed = 0, False

    def _consume(self, tokens: list[int]) -> None:
        for token in tokens[self.consumed :]:
            if not self.matcher.consume_token(token):
                raise DocreadError("grammar", f"token {token} broke the grammar: {self.matcher.get_error()}")
        self.consumed = len(tokens)

    def __call__(self, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
        if not tokens and self.consumed:
            self._new()
        self._consume(tokens)
        if self.matcher.is_stopped():
            return self._only(logits, self.eos)
        bias = bytearray(self.matcher.compute_logit_bias())  # one byte per token: 200 allowed, 0 not
        mask = torch.frombuffer(bias, dtype=torch.uint8).to(logits.device)
        allowed = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        n = min(mask.shape[0], allowed.shape[0])
        allowed[:n] = mask[:n] > 0
        llg_eos = self.tokenizer.eos_token
        if llg_eos < n and bool(allowed[llg_eos]) or self.matcher.is_accepting():
            allowed[self.eos] = True
        return logits.masked_fill(~allowed, NEG)

    def _only(self, logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
        forced = torch.full_like(logits, NEG)
        forced[..., ids] = 0.0
        return forced

    def finish(self, tokens: list[int]) -> None:
        self._consume(tokens)
        self.completed = self.matcher.is_accepting() or self.matcher.is_stopped()


def json_grammar(tokenizer, schema: dict, eos_token_ids: Iterable[int], *, param: str = "--json-schema") -> Grammar:
    """A Grammar for JSON valid under `schema` ({"type": "object"}: any object)."""
    llguidance = _llguidance()
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(bounded(schema), overrides=JSON_OPTIONS)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{param}: the schema cannot be used for constrained decoding ({e})") from None
    ok, error = _valid(llguidance, tokenizer, grammar)
    if not ok:
        raise UsageError(f"{param}: the schema cannot be used for constrained decoding ({error})")
    return Grammar(tokenizer, grammar, eos_token_ids)


def bounded(schema):
    """`schema` with every number or integer it leaves unbounded kept within ±NUMBER_BOUND, and every number
    to NUMBER_STEP: JSON's grammar alone allows `1E400` (Infinity, not JSON) and digits without end (a random
    model never closes the object). The output still validates under `schema`, which is not changed."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) for k, v in schema.items()}
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if any(k in ("number", "integer") for k in kinds):
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -NUMBER_BOUND
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = NUMBER_BOUND
    if "number" in kinds and "multipleOf" not in out:
        out["multipleOf"] = NUMBER_STEP
    return out


def regex_grammar(tokenizer, pattern: str, eos_token_ids: Iterable[int]) -> Grammar:
    """A Grammar for text matching the regular expression `pattern` (whole answer)."""
    llguidance = _llguidance()
    return Grammar(tokenizer, llguidance.LLMatcher.grammar_from_regex(pattern), eos_token_ids)


def _valid(llguidance, tokenizer, grammar: str) -> tuple[bool, str]:
    result = llguidance.LLMatcher.validate_grammar(grammar, ll_tokenizer(tokenizer))
    if isinstance(result, tuple):
        return result[0], str(result[1])
    return (not result, result) if isinstance(result, str) else (True, "")


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)
