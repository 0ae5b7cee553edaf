"""Training data for `docread train`: conversations in, padded model-ready batches out.

Reads LLaVA conversations (JSON or JSON Lines, `<image>` marker) and EntityGrid `questions.jsonl`. Prompts are
tokenised exactly as inference tokenises them, answers as their continuation, so the model trains on the tokens
it will be asked with; labels are -100 everywhere but on the answers and their end-of-turn token.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from docread.errors import DocreadError, UsageError
from docread.formats.entitygrid import LETTERS, Question, prompt
from docread.records import read_json_or_lines
from docread.views.processor import Budget, PromptTemplate, expand_image_token, page_pixels, plan_page, prompt_ids
from docread.views.prompt import SHORT_ANSWER

if TYPE_CHECKING:
    import torch

IGNORE = -100  # label of tokens the loss skips (torch's cross-entropy default)
ROLES = ("human", "gpt")  # LLaVA turn order: a question, then its answer
IMAGE_MARKER = "<image>"
ENTITYGRID_KEYS = {"task", "question", "options", "answer", "cells"}  # a questions.jsonl record


@dataclass(frozen=True)
class Example:
    """One training conversation about (at most) one image."""

    id: str
    image: Path | None  # absolute path; None for a text-only conversation
    turns: tuple[tuple[str, str], ...]  # (question, answer) pairs, in order
    choices: tuple[str, ...] = ()  # multiple choice: the option letters (first turn's answer is one)


@dataclass(frozen=True)
class Encoded:
    """Token ids of one conversation with a single image placeholder, and its labels."""

    ids: list[int]
    labels: list[int]  # IGNORE except the answers' tokens (and each answer's EOS)
    answer_start: int  # index in ids of the first answer token of the first turn


@dataclass
class Batch:
    """A padded batch; views of all its images stacked, image after image."""

    ids: list[str]  # example ids, in batch order
    pixels: torch.Tensor  # (V, 3, S, S) float32: per image its global view, then its tiles
    grids: list[tuple[int, int]]  # (rows, cols) per image with pixels, in order
    input_ids: torch.Tensor  # (B, T) long, right-padded, image placeholders expanded
    attention_mask: torch.Tensor  # (B, T) long, 0 on padding
    labels: torch.Tensor  # (B, T) long, IGNORE where no loss is taken
    answer_starts: list[int]  # per example, position of its first answer token in input_ids

    @property
    def targets(self) -> int:
        """Tokens the loss is taken on (each predicted from the position before it)."""
        return int((self.labels[:, 1:] != IGNORE).sum())

    def to(self, device) -> Batch:
        return Batch(
            self.ids,
            self.pixels.to(device),
            self.grids,
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.answer_starts,
        )


# -- reading ---------------------------------------------------------------------------------
def _load_records(path: Path) -> list[dict]:
    """A JSON list (or {"data": [...]}) or JSON Lines of objects."""
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file")
    data = read_json_or_lines(path)
    records = data["data"] if isinstance(data, dict) and "data" in data else data
    records = records if isinstance(records, list) else [records]
    if not records or not all(isinstance(r, dict) for r in records):
        raise DocreadError(
            "bad_data",
            f"{path}: expected conversation objects (LLaVA JSON / JSON Lines) or EntityGrid questions.jsonl lines",
        )
    return records


def _llava_example(record: dict, index: int, images: Path, path: Path) -> Example:
    where = f"{path} record {index + 1}"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or len(turns) % 2:
        raise DocreadError("bad_data", f"{where}: `conversations` must hold human/gpt turn pairs")
    roles = [t.get("from") if isinstance(t, dict) else None for t in turns]
    if roles != [ROLES[i % 2] for i in range(len(turns))]:
        raise DocreadError("bad_data", f"{where}: turns must alternate from: human, gpt (got {roles[:4]})")
    values = [str(t.get("value", "")) for t in turns]
    image = record.get("image")
    if isinstance(image, list):
        if len(image) != 1:
            raise DocreadError("bad_data", f"{where}: docread trains on one image per conversation, got {len(image)}")
        image = image[0]
    if image is None and any(IMAGE_MARKER in v for v in values):
        raise DocreadError("bad_data", f"{where}: an {IMAGE_MARKER} marker but no `image`")
    questions = [
        v.replace(f"{IMAGE_MARKER}\n", "").replace(f"\n{IMAGE_MARKER}", "").replace(IMAGE_MARKER, "").strip()
        for v in values[0::2]
    ]  # docread places the image itself, as the prompt template says
    pairs = tuple(zip(questions, (v.strip() for v in values[1::2])))
    return Example(str(record.get("id", index)), images / image if image is not None else None, pairs)


def _entitygrid_example(record: dict, images: Path, open_ended: float, seed: int) -> Example:
    question = Question.from_json(record)
    if question.task == "recognition" and random.Random(f"{seed}:{question.id}").random() < open_ended:
        name = question.options[LETTERS.index(question.answer)]  # open-ended: the entity's own name
        return Example(question.id, images / question.image, ((f"{question.question}\n{SHORT_ANSWER}", name),))
    letters = LETTERS[: len(question.options)]
    return Example(question.id, images / question.image, ((prompt(question), question.answer),), choices=letters)


def read_examples(
    path: Path,
    images: Path | None = None,
    *,
    open_ended: float = 0.0,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Example]:
    """Examples of a LLaVA conversation file or an EntityGrid questions.jsonl.

    Images are found under `images` (default: the data file's folder). EntityGrid only:
    `tasks` keeps those tasks; `open_ended` is the share of recognition items asked for the
    entity's name instead of a letter (picked per id, so the same for every run and seed)."""
    path = Path(path)
    images = Path(images) if images is not None else path.parent
    records = _load_records(path)
    if ENTITYGRID_KEYS <= records[0].keys():
        try:
            examples = [
                _entitygrid_example(r, images, open_ended, seed)
                for r in records
                if tasks is None or r.get("task") in tasks
            ]
        except (KeyError, ValueError, TypeError) as e:
            raise DocreadError("bad_data", f"{path}: not a valid EntityGrid questions file ({e})") from None
    else:
        examples = [_llava_example(r, i, images, path) for i, r in enumerate(records)]
    if not examples:
        raise DocreadError("bad_data", f"{path}: no examples" + (f" of tasks {', '.join(tasks)}" if tasks else ""))
    missing = [e.image for e in examples if e.image is not None and not e.image.is_file()]
    if missing:
        raise DocreadError(
            "not_found",
            f"{len(missing)} image(s) of {path} not found, e.g. {missing[0]}: "
            "point --images at the folder they are relative to",
        )
    return examples


# -- tokenising ------------------------------------------------------------------------------
def follow_up(template: PromptTemplate) -> str:
    """The chat format of a turn without the image: the template with its `<image>` line removed
    ("USER: {question} ASSISTANT:"); used for later turns and text-only conversations."""
    return template.template.replace(f"{IMAGE_MARKER}\n", "").replace(IMAGE_MARKER, "")


def continuation(tokenizer, text: str, prompt: list[int], answer: str, *, special: bool) -> list[int]:
    """Token ids of `answer` after a prompt whose text is `text` and ids `prompt`: tokenised with it,
    as the model would meet them, or on its own when tokenising together changes the prompt."""
    joint = tokenizer(f"{text} {answer}", add_special_tokens=special).input_ids
    if joint[: len(prompt)] == prompt and len(joint) > len(prompt):
        return joint[len(prompt) :]
    return tokenizer(answer, add_special_tokens=False).input_ids


def _first_turn(
    tokenizer, template: PromptTemplate, question: str, image_token_id: int | None
) -> tuple[str, list[int]]:
    if image_token_id is None:
        text = follow_up(template).replace("{question}", question)
        return text, tokenizer(text).input_ids
    marker = tokenizer.convert_ids_to_tokens(image_token_id)
    before, after = template.split(question.replace(marker, marker.strip("<>")))
    return before + marker + after, prompt_ids(tokenizer, template, question, image_token_id)


def encode(tokenizer, template: PromptTemplate, example: Example, image_token_id: int, eos_id: int) -> Encoded:
    """The conversation's ids (one image placeholder when it has an image) and labels."""
    ids: list[int] = []
    labels: list[int] = []
    answer_start = 0
    for turn, (question, answer) in enumerate(example.turns):
        if turn == 0:
            text, prompt = _first_turn(tokenizer, template, question, image_token_id if example.image else None)
        else:
            text = follow_up(template).replace("{question}", question)
            prompt = tokenizer(text, add_special_tokens=False).input_ids
        reply = continuation(tokenizer, text, prompt, answer, special=turn == 0) + [eos_id]
        if turn == 0:
            answer_start = len(prompt)
        ids += prompt + reply
        labels += [IGNORE] * len(prompt) + reply
    return Encoded(ids, labels, answer_start)


def choice_tokens(tokenizer, template: PromptTemplate, example: Example, image_token_id: int) -> tuple[int, list[int]]:
    """Multiple choice scored in one pass: the tokens all choices' continuations share (their count)
    and the one token after it that tells each choice apart."""
    question = example.turns[0][0]
    text, prompt = _first_turn(tokenizer, template, question, image_token_id)
    options = [continuation(tokenizer, text, prompt, choice, special=True) for choice in example.choices]
    shared = 0
    while all(len(o) > shared + 1 for o in options) and len({o[shared] for o in options}) == 1:
        shared += 1
    distinct = [o[shared] for o in options]
    if len(set(distinct)) != len(distinct) or any(len(o) != shared + 1 for o in options):
        raise ValueError(f"choices {example.choices} are not told apart by one token after a shared prefix")
    return shared, distinct


# -- batching --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Collator:
    """Renders, slices and tokenises examples into a Batch, exactly as inference prepares a page."""

    tokenizer: object
    template: PromptTemplate
    image_token_id: int
    eos_id: int
    pad_id: int
    size: int  # S
    patch: int
    k: int
    max_slices: int
    context: int  # the LLM's positions; tiles are reduced to fit, as in `ask`
    mean: tuple[float, ...]
    std: tuple[float, ...]
    global_view: bool = True

    def _pixels(self, example: Example, text_tokens: int):
        from docread.intake import open_document

        with open_document(str(example.image), pages="1") as document:
            page = document.pages[0]
            budget = Budget(context=self.context, prompt_tokens=text_tokens, max_new_tokens=0)
            try:
                plan = plan_page(
                    page.width,
                    page.height,
                    size=self.size,
                    patch=self.patch,
                    k=self.k,
                    max_slices=self.max_slices,
                    budget=budget,
                    global_view=self.global_view,
                )
            except DocreadError as e:
                raise DocreadError(e.code, f"example {example.id}: {e.message}") from None
            image = document.render(page, plan.plan.width, plan.plan.height)
        return page_pixels(image, plan, self.mean, self.std), plan  # (1 + tiles, 3, S, S)

    def __call__(self, examples: Sequence[Example]) -> Batch:
        import torch

        views, grids, rows, starts = [], [], [], []
        for example in examples:
            encoded = encode(self.tokenizer, self.template, example, self.image_token_id, self.eos_id)
            ids, labels, start = encoded.ids, encoded.labels, encoded.answer_start
            if example.image is not None:
                pixels, plan = self._pixels(example, len(ids) - 1)
                views.append(pixels)
                grids.append((plan.plan.rows, plan.plan.cols))
                extra = plan.tokens.image_tokens - 1
                at = ids.index(self.image_token_id)
                ids = expand_image_token(ids, self.image_token_id, extra + 1)
                labels = labels[:at] + [IGNORE] * extra + labels[at:]
                start += extra
            elif len(ids) > self.context:
                raise DocreadError(
                    "context_overflow", f"example {example.id}: {len(ids)} tokens, more than the model's {self.context}"
                )
            rows.append((ids, labels))
            starts.append(start)
        length = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, (ids, lab) in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            labels[b, : len(lab)] = torch.tensor(lab)
            mask[b, : len(ids)] = 1
        pixels = torch.cat(views) if views else torch.zeros(0, 3, self.size, self.size)  # (V, 3, S, S)
        return Batch([e.id for e in examples], pixels, grids, input_ids, mask, labels, starts)
