"""Graders: each turns a model's free-text answer and its item into a score in [0, 1].

They are pure functions of (answer, item), so `--regrade` can redo them from
the cache. A score of None means "unknown" (for example an unparseable judge
verdict): the item is then left out of the results, never counted as right.
The `code` grader runs in a sandbox (`_code_grader`) and the `judge` grader
calls an LLM (`_evaluation`); this module holds the rubric and the verdict
parser they use.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._valset import Item

GRADERS = ("exact", "choice", "number", "regex", "contains", "code", "judge")


@dataclass(frozen=True)
class Grade:
    """A score in [0, 1], or None for unknown, and what the grader saw (for the report)."""

    score: float | None
    detail: str


# ------------------------------------------------------------------- normalising text

_MARKUP = re.compile(r"[*`]+|\\text\{([^{}]*)\}")
_FINAL_MARKER = re.compile(
    r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(?P<rest>[^\n]+)", re.IGNORECASE
)


def normalise(text: str) -> str:
    """Case, width, whitespace, markdown emphasis and surrounding punctuation do not count."""
    text = unicodedata.normalize("NFKC", text)
    text = _MARKUP.sub(lambda m: m.group(1) or "", text).casefold()
    text = " ".join(text.split())
    return text.strip(" \t.,;:!?\"'()[]{}")


def final_answer(text: str) -> str:
    """The part of an answer that states the result: `\\boxed{..}`, `Answer: ..`, or all of it."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    markers = list(_FINAL_MARKER.finditer(text))
    return markers[-1].group("rest") if markers else text


def grade_exact(answer: str, item: Item) -> Grade:
    got = normalise(final_answer(answer))
    if any(got == normalise(ref) for ref in item.answer):
        return Grade(1.0, f"matched {got!r}")
    return Grade(0.0, f"got {got[:80]!r}")


def grade_contains(answer: str, item: Item) -> Grade:
    """A reference (any of a list) appears in the answer as whole words, ignoring case."""
    text = normalise(answer)
    for ref in item.answer:
        needle = normalise(ref)
        pattern = (r"(?<!\w)" if needle[:1].isalnum() else "") + re.escape(needle)
        pattern += r"(?!\w)" if needle[-1:].isalnum() else ""
        if needle and re.search(pattern, text):
            return Grade(1.0, f"contains {ref!r}")
    return Grade(0.0, "no reference found")


def grade_regex(answer: str, item: Item) -> Grade:
    match = item.options["pattern"].search(answer)
    return Grade(1.0, f"matched {match.group(0)[:80]!r}") if match else Grade(0.0, "no match")


# ---------------------------------------------------------------------------- choice

_LETTER = r"[\(\[]?([A-Z])[\)\]]?(?![\w'’])"
_CHOICE_MARKER = re.compile(
    r"(?:answer|option|choice)\s*(?:is|would be|should be|:|=|-)?\s*:?\s*(?:option\s*)?" + _LETTER,
    re.IGNORECASE,
)
_ONLY_LETTER = re.compile(r"^\W*([A-Za-z])\W*$")
_LEADING_LETTER = re.compile(r"^\W*([A-Z])[\)\].:]\s")
_STANDALONE = re.compile(r"(?<![\w'’])" + _LETTER)
_NEXT_WORD = re.compile(r" ([a-z]+)")
_AFTER_AN_OPTION = frozenset({"and", "or", "nor", "vs", "versus", "is", "was", "seems", "looks"})
_NEGATED = re.compile(r"(?:\bnot|n't|\bno)\s*(?:option\s*)?[\(\[]?$", re.IGNORECASE)


def grade_choice(answer: str, item: Item) -> Grade:
    """The chosen option letter (or option text) against the reference letter."""
    letters = _valid_letters(item)
    chosen, how = extract_choice(answer, letters, item.options.get("choices", ()))
    if chosen is None:
        return Grade(0.0, how)
    return Grade(float(chosen == item.answer), f"chose {chosen} ({how})")


def extract_choice(
    answer: str, letters: str, choices: Sequence[str] = ()
) -> tuple[str | None, str]:
    """(letter, how it was found), or (None, why not). Explicit statements beat stray letters."""
    text = _MARKUP.sub(lambda m: m.group(1) or "", unicodedata.normalize("NFKC", answer))
    boxed = _last_boxed(text)
    if boxed is not None and (m := _ONLY_LETTER.match(boxed)) and m.group(1).upper() in letters:
        return m.group(1).upper(), "boxed"
    marked = [
        m.group(1).upper()
        for m in _CHOICE_MARKER.finditer(text)
        if m.group(1) in letters  # the letter itself must be a capital: "answer is a bit ..."
    ]
    if marked:
        return marked[-1], "stated"
    if (m := _ONLY_LETTER.match(text)) and m.group(1).upper() in letters:
        return m.group(1).upper(), "bare letter"
    if (m := _LEADING_LETTER.match(text)) and m.group(1) in letters:
        return m.group(1), "leading letter"
    candidates = []
    for m in _STANDALONE.finditer(text):
        letter = m.group(1)
        if letter not in letters or _NEGATED.search(text[max(0, m.start() - 12) : m.start()]):
            continue
        if (
            letter in "AI"
            and (word := _NEXT_WORD.match(text, m.end()))
            and (word.group(1) not in _AFTER_AN_OPTION)
        ):
            continue  # "A good choice ...", "I think ...": a word, not an option
        candidates.append(letter)
    distinct = list(dict.fromkeys(candidates))
    if len(distinct) == 1:
        return distinct[0], "only letter named"
    if len(distinct) > 1:
        return None, f"ambiguous: {', '.join(distinct)}"
    if choices:
        text_norm = normalise(text)
        found = [
            letters[i]
            for i, option in enumerate(choices)
            if re.search(r"(?<!\w)" + re.escape(normalise(option)) + r"(?!\w)", text_norm)
        ]
        if len(found) == 1:
            return found[0], "option text"
    return None, "no choice found"


def _valid_letters(item: Item) -> str:
    choices = item.options.get("choices", ())
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)] if choices else "ABCDEFGHIJ"


# ---------------------------------------------------------------------------- number

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+"
_SIGNED = rf"(?:(?<![\w.])[-+])?(?:{_NUM})"
_FRACTION = re.compile(rf"(?P<num>{_SIGNED})\s*/\s*(?P<den>{_NUM})(?![\d/])")
_LATEX_FRAC = re.compile(r"(?P<sign>-)?\s*\\[dt]?frac\s*\{(?P<num>[^{}]+)\}\s*\{(?P<den>[^{}]+)\}")
_NUMBER = re.compile(_SIGNED)
_GSM8K_MARKER = re.compile(r"####\s*(?P<rest>[^\n]+)")
_DASHES = str.maketrans({"\u2212": "-", "\u2013": "-"})  # minus sign, en dash


def grade_number(answer: str, item: Item) -> Grade:
    """The answer's final number within `tolerance` (absolute; default 1e-6 relative)."""
    value = extract_number(answer)
    if value is None:
        return Grade(0.0, "no number found")
    reference = float(item.answer)
    tolerance = item.options.get("tolerance")
    if tolerance is None:
        tolerance = 1e-6 * max(1.0, abs(reference))
    return Grade(float(abs(value - reference) <= tolerance), f"got {value:g}")


def extract_number(answer: str) -> float | None:
    """`\\boxed{}` first, then `#### x` or `answer: x`, then the last number in the text."""
    text = answer.translate(_DASHES)
    boxed = _last_boxed(text)
    if boxed is not None and (value := _numbers(boxed, first=True)) is not None:
        return value
    for marker in (_GSM8K_MARKER, _FINAL_MARKER):
        found = list(marker.finditer(text))
        if found and (value := _numbers(found[-1].group("rest"), first=True)) is not None:
            return value
    return _numbers(text, first=False)


def parse_reference_number(value: Any) -> float | None:
    """A reference given as a JSON number or as text ("3/4", "1,234.5", "\\frac{1}{2}")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        return _numbers(value.translate(_DASHES), first=True)
    return None


def _numbers(text: str, *, first: bool) -> float | None:
    """The first or last number in text; fractions (a/b, \\frac{a}{b}) count as one number."""
    found: list[tuple[int, float]] = []
    taken: list[tuple[int, int]] = []
    for m in _LATEX_FRAC.finditer(text):
        num, den = _numbers(m.group("num"), first=True), _numbers(m.group("den"), first=True)
        if num is not None and den:
            found.append((m.start(), (-1 if m.group("sign") else 1) * num / den))
            taken.append(m.span())
    for m in _FRACTION.finditer(text):
        if not _overlaps(m.span(), taken) and float(_plain(m.group("den"))) != 0:
            found.append((m.start(), float(_plain(m.group("num"))) / float(_plain(m.group("den")))))
            taken.append(m.span())
    for m in _NUMBER.finditer(text):
        if not _overlaps(m.span(), taken):
            found.append((m.start(), float(_plain(m.group(0)))))
    if not found:
        return None
    found.sort()
    return found[0][1] if first else found[-1][1]


def _plain(number: str) -> str:
    return number.replace(",", "")


def _overlaps(span: tuple[int, int], taken: Sequence[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in taken)


def _last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces included."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin : i - 1] if depth == 0 else None


# ----------------------------------------------------------------------------- judge

JUDGE_SYSTEM = (
    "You are a strict, impartial grader. You compare a candidate answer with a reference "
    "answer and decide whether the candidate is correct. You never solve the task yourself."
)

JUDGE_RUBRIC = """Grade the candidate answer to the question below against the reference answer.

[Question]
{question}

[Reference answer]
{reference}
{criteria}
[Candidate answer]
{answer}

The candidate is CORRECT if its final answer agrees with the reference answer in meaning: \
wording, formatting, units written out and extra explanation do not matter. It is INCORRECT \
if it disagrees, hedges between several answers, is incomplete, or refuses.
Reply with at most one sentence of reasoning, then a last line that is exactly \
"VERDICT: CORRECT" or "VERDICT: INCORRECT"."""

_VERDICT = re.compile(r"verdict\s*[:=\-]?\s*[*_`\"']*\s*(correct|incorrect)\b", re.IGNORECASE)


def judge_messages(answer: str, item: Item) -> list[dict[str, str]]:
    """The rubric filled in for one answer; the judge's reply goes to `parse_verdict`."""
    criteria = item.options.get("criteria", "")
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": JUDGE_RUBRIC.format(
                question=item.question,
                reference=item.answer,
                criteria=f"\n[Additional criteria]\n{criteria}\n" if criteria else "",
                answer=answer,
            ),
        },
    ]


def parse_verdict(reply: str) -> Grade:
    """1 for CORRECT, 0 for INCORRECT; no verdict, or conflicting ones, is unknown (None)."""
    verdicts = {m.group(1).lower() for m in _VERDICT.finditer(reply)}
    if verdicts == {"correct"}:
        return Grade(1.0, "judge: correct")
    if verdicts == {"incorrect"}:
        return Grade(0.0, "judge: incorrect")
    why = "conflicting verdicts" if verdicts else "no verdict"
    return Grade(None, f"judge: {why} in {reply[:80]!r}")


#: The graders that need nothing but the answer and the item.
LOCAL_GRADERS: Mapping[str, Callable[[str, Item], Grade]] = {
    "exact": grade_exact,
    "choice": grade_choice,
    "number": grade_number,
    "regex": grade_regex,
    "contains": grade_contains,
}
