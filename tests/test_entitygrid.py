"""EntityGrid-QA: deterministic generation, answers that follow the cell geometry, entities that the
tile borders really cut, balance, and scores equal to a hand computation of docs/method.md#entitygrid's definition."""

import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from docread.bench.draw import ENTITIES
from docread.bench.entitygrid import (
    BORDER_RGB,
    CENTER_CELLS,
    EDGE_CELLS,
    HEAT_CELL,
    HEAT_MARGIN,
    HEAT_TOP,
    LETTERS,
    TASKS,
    VIRIDIS,
    Question,
    generate,
    parse_letter,
    prompt,
    read_questions,
    relation,
    render_heatmap,
    score,
)
from docread.views.slicing import plan_slices


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def bench56(tmp_path_factory) -> tuple[Path, list[Question]]:
    folder = tmp_path_factory.mktemp("eg56")
    return folder, list(generate(folder, n=216, seed=5, size=56))


@pytest.fixture(scope="module")
def bench336(tmp_path_factory) -> tuple[Path, list[Question]]:
    folder = tmp_path_factory.mktemp("eg336")
    return folder, list(generate(folder, n=18, seed=1))


def test_same_seed_gives_byte_identical_output_and_another_seed_does_not(tmp_path, bench336):
    folder, _ = bench336
    again = tmp_path / "again"
    list(generate(again, n=18, seed=1))
    assert _digest(again) == _digest(folder)
    other = tmp_path / "other"
    list(generate(other, n=18, seed=2))
    assert (other / "questions.jsonl").read_bytes() != (folder / "questions.jsonl").read_bytes()


def test_records_round_trip_and_images_are_2s_squares_cut_into_2x2_tiles(bench336, bench56):
    for (folder, questions), size in ((bench336, 336), (bench56, 56)):
        assert read_questions(folder) == questions
        for q in questions[:6]:
            with Image.open(folder / q.image) as image:
                assert image.size == (2 * size, 2 * size) and image.mode == "RGB"
    plan = plan_slices(672, 672)  # the default 16-tile budget cuts the canvas into exactly 2 x 2 tiles
    assert (plan.rows, plan.cols, plan.width) == (2, 2, 672)


def _row_col(cell: int) -> tuple[int, int]:
    return (cell - 1) // 3, (cell - 1) % 3


def test_answers_follow_the_cell_geometry(bench56):
    folder, questions = bench56
    cell_side = 112 / 3
    for q in questions:
        assert len(q.options) == 4 and len(set(q.options)) == 4 and q.answer in LETTERS
        right = q.options[LETTERS.index(q.answer)]
        drawn = [e["cell"] for e in q.entities]
        for e in q.entities:  # each entity's ink is centred in its own cell
            x0, y0, x1, y1 = e["box"]
            row, col = _row_col(e["cell"])
            assert col * cell_side <= (x0 + x1) / 2 <= (col + 1) * cell_side
            assert row * cell_side <= (y0 + y1) / 2 <= (row + 1) * cell_side
        if q.task == "recognition":
            assert drawn == list(q.cells) and right == q.entities[0]["name"]
        elif q.task == "position":
            (ra, ca), (rb, cb) = _row_col(q.cells[0]), _row_col(q.cells[1])
            vertical = {-1: "upper", 1: "lower"}.get((ra > rb) - (ra < rb), "")
            horizontal = {-1: "left", 1: "right"}.get((ca > cb) - (ca < cb), "")
            expected = (
                f"{vertical} {horizontal}".strip()
                if vertical and horizontal
                else {"upper": "above", "lower": "below"}.get(vertical, horizontal)
            )
            assert right == expected == relation(*q.cells)
            a, b = q.entities
            assert a["name"] != b["name"] and a["name"] in q.question.split(" relative")[0]
        else:
            assert right == str(len(q.cells)) == str(len(q.entities))
            assert len({e["name"] for e in q.entities}) == 1 and sorted(drawn) == list(q.cells)


def test_relation_golden_table():
    assert [relation(1, 9), relation(9, 1), relation(5, 2), relation(2, 5), relation(4, 6), relation(3, 7)] == [
        "upper left",
        "lower right",
        "below",
        "above",
        "left",
        "upper right",
    ]
    with pytest.raises(ValueError):
        relation(4, 4)


def test_edge_entities_are_cut_by_a_tile_border_and_center_ones_are_not(bench336, bench56):
    for (_, questions), size in ((bench336, 336), (bench56, 56)):
        for q in questions:
            for e in q.entities:
                x0, y0, x1, y1 = e["box"]
                row, col = _row_col(e["cell"])
                crosses_x = x0 + 0.2 * (x1 - x0) < size < x1 - 0.2 * (x1 - x0)  # >= 20% of it on each side
                crosses_y = y0 + 0.2 * (y1 - y0) < size < y1 - 0.2 * (y1 - y0)
                assert crosses_x == (col == 1) and crosses_y == (row == 1), (q.id, e)
                if e["cell"] in CENTER_CELLS:
                    assert not (x0 < size < x1 or y0 < size < y1)


def test_ink_of_an_edge_entity_lies_on_both_sides_of_the_border(bench336):
    folder, questions = bench336
    checked = 0
    for q in questions:
        if q.task == "recognition" and q.cells[0] in (2, 4):
            ink = Image.open(folder / q.image).convert("L").point(lambda v: 255 if v < 200 else 0)
            halves = (
                ((0, 0, 336, 672), (336, 0, 672, 672)) if q.cells[0] == 2 else ((0, 0, 672, 336), (0, 336, 672, 672))
            )
            assert all(ink.crop(box).getbbox() is not None for box in halves), q.id
            checked += 1
    assert checked


def test_tasks_cells_letters_and_entities_are_balanced(bench56):
    _, questions = bench56
    assert Counter(q.task for q in questions) == {t: 72 for t in TASKS}
    for task in TASKS:
        mine = [q for q in questions if q.task == task]
        cells = Counter(c for q in mine for c in q.cells)
        assert max(cells.values()) - min(cells.values()) <= 1 and set(cells) == set(range(1, 10))
        assert Counter(q.answer for q in mine) == {letter: 18 for letter in LETTERS}
    recognised = Counter(q.entities[0]["name"] for q in questions if q.task == "recognition")
    assert len(recognised) >= 24 and max(recognised.values()) - min(recognised.values()) <= 1
    counts = Counter(len(q.cells) for q in questions if q.task == "counting")
    assert counts == {1: 18, 2: 18, 3: 18, 4: 18}
    assert len(ENTITIES) >= 24 and {e.kind for e in ENTITIES} == {"word", "number", "shape", "object"}


def test_distractors_are_plausible_and_option_sets_never_give_the_answer_away(bench56):
    _, questions = bench56
    kind = {e.name: e.kind for e in ENTITIES}
    opposite = {"above": "below", "left": "right", "upper left": "lower right", "upper right": "lower left"}
    opposite |= {v: k for k, v in opposite.items()}
    answers_by_set = {}
    for q in questions:
        right = q.options[LETTERS.index(q.answer)]
        answers_by_set.setdefault((q.task, frozenset(q.options)), set()).add(right)
        if q.task == "recognition":
            assert {kind[o] for o in q.options} == {kind[right]}  # a word's options are words, ...
        elif q.task == "position":  # two opposite pairs: the swapped-entities answer is always offered
            assert {opposite[o] for o in q.options} == set(q.options)
        else:
            assert q.options == ("1", "2", "3", "4")
    # the same option set comes with different right answers: the set alone says nothing
    repeated = [answers for (task, _), answers in answers_by_set.items() if task != "position"]
    assert all(len(answers) > 1 for answers in repeated if answers)
    assert sum(len(a) > 1 for (task, _), a in answers_by_set.items() if task == "position") >= 5


def test_prompt_is_llava_multiple_choice():
    q = Question("x", "images/x.png", "counting", "How many stars are in the image?", ("1", "2", "3", "4"), "B", (5,))
    assert prompt(q) == (
        "How many stars are in the image?\nA. 1\nB. 2\nC. 3\nD. 4\n"
        "Answer with the option's letter from the given choices directly."
    )


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        (" c\n", "C"),
        ("D.", "D"),
        ("(A)", "A"),
        ("B. circle", "B"),
        ("E", None),
        ("Bee", None),
        ("", None),
        (None, None),
        (3, None),
    ],
)
def test_parse_letter(text, letter):
    assert parse_letter(text) == letter


def _q(qid: str, task: str, cells: tuple[int, ...], answer: str) -> Question:
    return Question(qid, f"images/{qid}.png", task, "?", ("w", "x", "y", "z"), answer, cells)


def test_score_equals_a_hand_computation():
    questions = [
        _q("r1", "recognition", (1,), "A"),
        _q("r2", "recognition", (2,), "B"),
        _q("r3", "recognition", (2,), "C"),
        _q("p1", "position", (1, 5), "D"),
        _q("p2", "position", (5, 9), "A"),
        _q("c1", "counting", (2, 5, 8), "B"),
        _q("c2", "counting", (3,), "A"),
        _q("c3", "counting", (4,), "A"),
    ]
    predictions = {"r1": "A", "r2": "C", "r3": "C", "p1": "D", "p2": "B", "c2": "a", "c3": "E", "zzz": "A"}
    result = score(questions, predictions, unreadable=2)
    # a_1 = mean(rec 1/1, pos 1/1); a_2 = mean(rec 1/2, cnt 0/1); a_3 = cnt 1/1; a_4 = cnt 0/1;
    # a_5 = mean(pos 1/2, cnt 0/1); a_8 = cnt 0/1; a_9 = pos 0/1; cells 6 and 7 have no questions.
    expected = {"1": 1.0, "2": 0.25, "3": 1.0, "4": 0.0, "5": 0.25, "6": None, "7": None, "8": 0.0, "9": 0.0}
    assert result.per_cell == pytest.approx(expected)
    assert result.accuracy_center == pytest.approx((1 + 1 + 0) / 3)
    assert result.accuracy_edge == pytest.approx((0.25 + 0 + 0.25 + 0) / 4)
    assert result.discrepancy == pytest.approx(2 / 3 - 1 / 8)
    assert result.accuracy == pytest.approx(4 / 8) and result.correct == 4
    assert result.per_task == pytest.approx({"recognition": 2 / 3, "position": 1 / 2, "counting": 1 / 3})
    assert (result.n, result.missing, result.malformed, result.extra) == (8, 1, 3, 1)
    assert set(result.to_json()) >= {
        "accuracy",
        "accuracy_center",
        "accuracy_edge",
        "discrepancy",
        "per_cell",
        "per_task",
        "n",
    }


def _reference_cell_accuracy(questions, right) -> dict[str, float]:
    """docs/method.md#entitygrid's a_i, written out the long way."""
    out = {}
    for cell in range(1, 10):
        task_means = []
        for task in TASKS:
            marks = [right[q.id] for q in questions if q.task == task and cell in q.cells]
            if marks:
                task_means.append(sum(marks) / len(marks))
        out[str(cell)] = sum(task_means) / len(task_means)
    return out


def test_predictions_right_on_center_cells_only_give_zero_edge_accuracy(bench56):
    _, questions = bench56
    right = {q.id: set(q.cells) <= set(CENTER_CELLS) for q in questions}
    wrong_letter = {q.id: LETTERS[(LETTERS.index(q.answer) + 1) % 4] for q in questions}
    predictions = {q.id: q.answer if right[q.id] else wrong_letter[q.id] for q in questions}
    result = score(questions, predictions)
    assert all(result.per_cell[str(c)] == 0.0 for c in EDGE_CELLS) and result.accuracy_edge == 0.0
    assert result.per_cell == pytest.approx(_reference_cell_accuracy(questions, right))
    assert result.discrepancy == pytest.approx(result.accuracy_center) and result.discrepancy > 0.3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=216, max_size=216))
def test_score_matches_the_definition_on_any_right_wrong_pattern(bench56, pattern):
    _, questions = bench56
    right = {q.id: ok for q, ok in zip(questions, pattern)}
    predictions = {q.id: q.answer if right[q.id] else "Z" for q in questions}
    result = score(questions, predictions)
    reference = _reference_cell_accuracy(questions, right)
    assert result.per_cell == pytest.approx(reference)
    center = sum(reference[str(c)] for c in CENTER_CELLS) / 4
    edge = sum(reference[str(c)] for c in EDGE_CELLS) / 5
    assert (result.accuracy_center, result.accuracy_edge) == pytest.approx((center, edge))
    assert result.malformed == 216 - sum(pattern)


def test_heatmap_colours_cells_by_accuracy_and_draws_tile_borders(tmp_path):
    questions = [_q("a", "recognition", (1,), "A"), _q("b", "recognition", (9,), "A")]
    result = score(questions, {"a": "A", "b": "B"})  # cell 1 right, cell 9 wrong, others empty
    path = tmp_path / "heat" / "map.png"
    render_heatmap(result, path)
    image = Image.open(path).convert("RGB")

    def corner(cell):
        return HEAT_MARGIN + ((cell - 1) % 3) * HEAT_CELL + 12, HEAT_TOP + (
            (cell - 1) // 3
        ) * HEAT_CELL + HEAT_CELL - 12

    assert image.getpixel(corner(1)) == VIRIDIS[-1]  # 100%
    assert image.getpixel(corner(9)) == VIRIDIS[0]  # 0%
    assert image.getpixel(corner(5)) == (210, 210, 210)  # no questions
    middle_x = HEAT_MARGIN + 3 * HEAT_CELL // 2
    column = [image.getpixel((middle_x, HEAT_TOP + y)) for y in range(3 * HEAT_CELL)]
    assert column.count(BORDER_RGB) > HEAT_CELL  # the vertical tile border, dashed


def test_questions_file_errors_name_the_fix(tmp_path):
    from docread.errors import DocreadError

    with pytest.raises(DocreadError, match="entitygrid generate"):
        read_questions(tmp_path)
    (tmp_path / "questions.jsonl").write_text('{"id": "x", "task": "juggling"}\n')
    with pytest.raises(DocreadError, match="line 1"):
        read_questions(tmp_path)


def test_shuffled_generation_rng_is_independent_of_global_random(tmp_path):
    random.seed(123)
    a = [q.to_json() for q in generate(tmp_path / "a", n=6, seed=9, size=56)]
    random.seed(456)
    b = [q.to_json() for q in generate(tmp_path / "b", n=6, seed=9, size=56)]
    assert a == b
