"""Every local grader and the judge's verdict parser, on real-looking and awkward answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sidecar._graders import (
    JUDGE_RUBRIC,
    JUDGE_SYSTEM,
    extract_choice,
    extract_number,
    grade_choice,
    grade_contains,
    grade_exact,
    grade_number,
    grade_regex,
    judge_messages,
    parse_reference_number,
    parse_verdict,
)
from sidecar._valset import Item, read_valset


def item(tmp_path: Path, **fields: Any) -> Item:
    """An Item as the validation-file reader makes it, so references are checked the real way."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"id": "x", "prompt": "Q?", **fields}) + "\n")
    return read_valset(path)[0]


# ---------------------------------------------------------------------------- choice


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("The answer is (B).", "B"),
        ("**B**", "B"),
        ("I think it's B, not C", "B"),
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B) Mars", "B"),
        ("B. Mars, the red one", "B"),
        ("Answer: B", "B"),
        ("\\boxed{B}", "B"),
        ("\\boxed{\\text{B}}", "B"),
        ("The correct option is B.", "B"),
        ("A good choice here is B.", "B"),
        ("Let me think. A is wrong, C is wrong... The answer is B.", "B"),
        ("It is not A. It's B.", "B"),
        ("Final answer: **(B)**", "B"),
        ("Mars", "B"),  # the option text, with choices given
    ],
)
def test_choice_finds_the_chosen_letter(tmp_path: Path, answer: str, letter: str) -> None:
    it = item(
        tmp_path, grader="choice", choices=["Venus", "Mars", "Jupiter", "Mercury"], answer=letter
    )
    grade = grade_choice(answer, it)
    assert grade.score == 1.0, grade.detail


@pytest.mark.parametrize(
    "answer",
    [
        "Between A and B, hard to say.",  # ambiguous: no credit
        "I don't know.",
        "The answer is C.",
        "Jupiter",
        "",
        "It is definitely E.",  # not an option of four
    ],
)
def test_choice_wrong_or_ambiguous_scores_zero(tmp_path: Path, answer: str) -> None:
    it = item(
        tmp_path, grader="choice", choices=["Venus", "Mars", "Jupiter", "Mercury"], answer="B"
    )
    assert grade_choice(answer, it).score == 0.0


def test_choice_reference_may_be_the_option_text(tmp_path: Path) -> None:
    it = item(tmp_path, grader="choice", choices=["Venus", "Mars"], answer="Mars")
    assert it.answer == "B"
    assert grade_choice("(B)", it).score == 1.0


def test_extract_choice_explains_ambiguity() -> None:
    assert extract_choice("A or C", "ABCD") == (None, "ambiguous: A, C")


# ---------------------------------------------------------------------------- number


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("\\boxed{\\frac{3}{4}}", 0.75),
        ("1,234.5", 1234.5),
        ("-0.50", -0.5),
        ("answer: 42 apples", 42.0),
        ("The answer is −3.", -3.0),  # a Unicode minus sign
        ("So 45/60 = 3/4", 0.75),
        ("Step 1: 12 x 7 = 84. So she sells 84 muffins.", 84.0),
        ("#### 1,500", 1500.0),
        ("We get 2, then 3, and the answer is 7. Check: 7 - 2 = 5.", 7.0),
        ("$\\boxed{-\\dfrac{1}{2}}$", -0.5),
        ("It costs $25.", 25.0),
        ("about 1e3", 1000.0),
        ("between 10-20 items, so 20", 20.0),
        ("Final answer: 0.43 (rounded)", 0.43),
    ],
)
def test_extract_number(answer: str, value: float) -> None:
    assert extract_number(answer) == pytest.approx(value)


def test_number_grader_tolerance(tmp_path: Path) -> None:
    exact = item(tmp_path, grader="number", answer="3/4")
    assert grade_number("\\boxed{\\frac{3}{4}}", exact).score == 1.0
    assert grade_number("0.75", exact).score == 1.0
    assert grade_number("0.7501", exact).score == 0.0
    loose = item(tmp_path, grader="number", answer=0.43, tolerance=0.005)
    assert grade_number("about 0.428", loose).score == 1.0
    assert grade_number("about 0.5", loose).score == 0.0
    assert grade_number("no idea", loose).score == 0.0


@pytest.mark.parametrize(
    ("reference", "value"),
    [(42, 42.0), ("1,234", 1234.0), ("3/4", 0.75), ("-0.5", -0.5), ("\\frac{1}{8}", 0.125)],
)
def test_reference_numbers(reference: object, value: float) -> None:
    assert parse_reference_number(reference) == pytest.approx(value)


@pytest.mark.parametrize("reference", [True, None, "", "many", [1]])
def test_reference_numbers_refused(reference: object) -> None:
    assert parse_reference_number(reference) is None


# ----------------------------------------------------------------- exact, contains, regex


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("Canberra", 1.0),
        ("canberra.", 1.0),
        ("**Canberra**", 1.0),
        ("  CANBERRA  ", 1.0),
        ("The answer is Canberra.", 1.0),
        ("Final answer: Canberra", 1.0),
        ("Canberra, not Sydney", 0.0),
        ("Sydney", 0.0),
        ("It is Canberra, I think.", 0.0),  # exact means exact: only the stated answer counts
    ],
)
def test_exact(tmp_path: Path, answer: str, score: float) -> None:
    assert grade_exact(answer, item(tmp_path, grader="exact", answer="Canberra")).score == score


def test_exact_accepts_a_list_of_references(tmp_path: Path) -> None:
    it = item(tmp_path, grader="exact", answer=["USA", "United States"])
    assert grade_exact("united states", it).score == 1.0


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("It's called photosynthesis.", 1.0),
        ("PHOTOSYNTHESIS!", 1.0),
        ("**Photo­synthesis**", 0.0),  # a soft hyphen inside: not the word
        ("photosynthetic processes", 0.0),  # whole words only
        ("Respiration", 0.0),
    ],
)
def test_contains(tmp_path: Path, answer: str, score: float) -> None:
    it = item(tmp_path, grader="contains", answer="photosynthesis")
    assert grade_contains(answer, it).score == score


def test_regex(tmp_path: Path) -> None:
    it = item(tmp_path, grader="regex", pattern=r"\b2024-03-05\b")
    assert grade_regex("The date is 2024-03-05.", it).score == 1.0
    assert grade_regex("05/03/2024", it).score == 0.0
    case = item(tmp_path, grader="regex", pattern=r"(?i)\bh2o\b")
    assert grade_regex("Water is H2O.", case).score == 1.0


# ----------------------------------------------------------------------------- judge


def test_judge_messages_fill_the_rubric(tmp_path: Path) -> None:
    it = item(tmp_path, grader="judge", answer="Paris", criteria="Name the city only.")
    messages = judge_messages("It is Paris.", it)
    assert messages[0]["role"] == "system"
    text = messages[1]["content"]
    for part in ("Q?", "Paris", "It is Paris.", "Name the city only.", "VERDICT: CORRECT"):
        assert part in text
    assert JUDGE_RUBRIC.split("\n")[0] in text


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("The candidate names Paris.\nVERDICT: CORRECT", 1.0),
        ("verdict: correct", 1.0),
        ("**VERDICT: CORRECT**", 1.0),
        ("Verdict - Incorrect", 0.0),
        ("It says Lyon.\nVERDICT: INCORRECT", 0.0),
        ("The answer looks correct to me.", None),  # no verdict line: unknown, never correct
        ("VERDICT: CORRECT\nwait, no.\nVERDICT: INCORRECT", None),  # conflicting
        ("", None),
        ("VERDICT: MAYBE", None),
    ],
)
def test_parse_verdict(reply: str, score: float | None) -> None:
    assert parse_verdict(reply).score == score


def test_the_readme_quotes_the_rubric_as_sent() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert JUDGE_RUBRIC in readme
    assert JUDGE_SYSTEM in readme
