"""Prompt presets for `--task`: what docread asks the model besides the user's question.

The chat format itself (`USER: <image>\\n... ASSISTANT:`) belongs to the model preset; a task
only shapes the question that goes into it.
"""

from __future__ import annotations

from collections.abc import Sequence

from docread.errors import UsageError
from docread.settings import Task

TASKS = {
    # document QA: the question as the user wrote it
    "qa": "{question}",
    # chart reading: LLaVA's own short-answer instruction, used for ChartQA-style questions
    "chart": "{question}\nRead the chart carefully and answer using a single word or number.",
    # transcription: the question, if any, narrows what to transcribe
    "ocr": "Transcribe all the text on this page, line by line, exactly as written.{question}",
}
assert set(TASKS) == set(Task), "each Task has its prompt"
OCR_QUESTION = ""  # `docread ocr` asks the ocr task with no extra words
SHORT_ANSWER = "Answer the question using a single word or phrase."  # LLaVA-1.5's short-answer instruction
MULTIPLE_CHOICE = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."


def task_question(task: str, question: str) -> str:
    """The text that goes into the chat format for `question` under `task`."""
    if task not in TASKS:
        raise UsageError(f"--task {task!r}: choose {', '.join(TASKS)}")
    if task == "ocr":
        return TASKS["ocr"].format(question=f" {question.strip()}" if question.strip() else "")
    return TASKS[task].format(question=question.strip())


def multiple_choice(question: str, options: list[str], letters: str = "ABCD") -> str:
    """LLaVA's multiple-choice prompt: the question, lettered options, then the instruction."""
    lines = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options))
    return MULTIPLE_CHOICE.format(question=question.strip(), options=lines)


def with_turns(template: str, turns: Sequence[tuple[str, str]], prompt: str, end_of_turn: str) -> str:
    """The text for the chat format's `{question}` slot that holds a conversation's earlier `turns`
    (question slot text, answer), oldest first, then `prompt`: LLaVA's own multi-turn form, e.g.
    `USER: <image>\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:` (`end_of_turn`: the tokenizer's EOS). A later
    turn opens as the template's last line before the image does (`USER: `)."""
    before, after = template.split("<image>", 1)
    closing = after.split("{question}", 1)[1]  # " ASSISTANT:"
    opener = before.rsplit("\n", 1)[-1]  # "USER: "
    return "".join(f"{q}{closing} {a}{end_of_turn}{opener}" for q, a in turns) + prompt
