"""A conversation as one question for the chat format: system instructions, the earlier turns (oldest
dropped first to fit a token budget), then the last user message. A lone question stays as it is."""

from __future__ import annotations

from collections.abc import Callable, Sequence

ROLE_NAMES = {"user": "User", "assistant": "Assistant"}


def conversation_prompt(
    system: Sequence[str],
    turns: Sequence[tuple[str, str]],
    question: str,
    *,
    count: Callable[[str], int],
    budget: int,
) -> tuple[str, int]:
    """(the prompt text, how many earlier turns were dropped). `count` gives a text's tokens; the system
    texts and the question are always kept, the earlier turns while the whole stays within `budget`."""
    kept = list(turns)
    while True:
        text = _join(system, kept, question)
        if not kept or count(text) <= budget:
            return text, len(turns) - len(kept)
        kept.pop(0)


def _join(system: Sequence[str], turns: Sequence[tuple[str, str]], question: str) -> str:
    if not system and not turns:
        return question
    lines = [*system, *(f"{ROLE_NAMES[role]}: {text}" for role, text in turns)]
    lines.append(f"User: {question}" if turns else question)
    return "\n".join(lines)
