"""The validation set S_val as `sidecar evaluate` reads it: what to ask and how to grade it.

One JSON object per line (see the README, "The validation file"): an `id`, a
`prompt` or chat `messages`, a reference `answer` and a `grader`. A first
line `{"defaults": {...}}` gives fields every item inherits, typically the
grader. Every problem is reported with its file and line, like the other
JSONL readers, before a single call is made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import InvalidArgument
from ._graders import GRADERS, parse_reference_number
from ._jsonl import is_defaults_line, item_id_of, item_text, read_jsonl

ROLES = ("system", "user", "assistant")
#: Option letters for the `choice` grader: A to Z.
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Item:
    """One validation item, checked: what to send, the reference, and how to grade."""

    id: str
    messages: tuple[Mapping[str, str], ...]
    question: str  # the text the router (and `sidecar fit`) sees: the prompt or last user turn
    grader: str
    answer: Any  # the reference, normalised per grader (see _check_reference)
    options: Mapping[str, Any] = field(default_factory=dict)  # choices, tolerance, tests, ...
    line: int = 0


def read_valset(path: Path) -> list[Item]:
    """Every item of a validation file; ids unique; a clear error names the line of each problem."""
    defaults: dict[str, Any] = {}
    items: list[Item] = []
    seen: dict[str, int] = {}
    for n, obj in read_jsonl(path):
        if is_defaults_line(obj):
            if items or defaults:
                raise InvalidArgument(f"{path}:{n}: a `defaults` line must be the first line")
            if not isinstance(obj["defaults"], dict):
                raise InvalidArgument(f"{path}:{n}: `defaults` must be a JSON object")
            defaults = dict(obj["defaults"])
            if "id" in defaults:
                raise InvalidArgument(f"{path}:{n}: `defaults` cannot give an `id`")
            continue
        item = _item(path, n, {**defaults, **obj})
        if item.id in seen:
            raise InvalidArgument(
                f"{path}:{n}: id {item.id!r} already used on line {seen[item.id]}"
            )
        seen[item.id] = n
        items.append(item)
    if not items:
        raise InvalidArgument(f"{path}: no validation items found")
    return items


def _item(path: Path, n: int, obj: dict[str, Any]) -> Item:
    where = f"{path}:{n}"
    item_id = item_id_of(path, n, obj)
    if ("prompt" in obj) == ("messages" in obj):
        raise InvalidArgument(f"{where}: give exactly one of `prompt` or `messages`")
    if "messages" in obj:  # the shape of every message first, then which text is the question
        messages = _messages(where, obj)
        question = item_text(path, n, obj)
    else:
        question = item_text(path, n, obj)
        messages = _messages(where, obj)
    grader = obj.get("grader")
    if grader is None:
        raise InvalidArgument(
            f"{where}: no `grader` (give one per item or in a first `defaults` line); "
            f"one of {', '.join(GRADERS)}"
        )
    if grader not in GRADERS:
        raise InvalidArgument(
            f"{where}: unknown grader {grader!r}; use one of {', '.join(GRADERS)}"
        )
    answer, options = _check_reference(where, grader, obj)
    return Item(item_id, messages, question, grader, answer, options, n)


def _messages(where: str, obj: dict[str, Any]) -> tuple[Mapping[str, str], ...]:
    system = obj.get("system")
    if system is not None and not (isinstance(system, str) and system.strip()):
        raise InvalidArgument(f"{where}: `system` must be a non-empty string")
    if "prompt" in obj:
        prompt_turn = ({"role": "user", "content": obj["prompt"]},)
        return (({"role": "system", "content": system},) if system else ()) + prompt_turn
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise InvalidArgument(f"{where}: `messages` must be a non-empty list")
    checked = []
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise InvalidArgument(
                f'{where}: messages[{i}] must be {{"role": one of {", ".join(ROLES)}, '
                '"content": "text"}'
            )
        checked.append({"role": message["role"], "content": message["content"]})
    if system:
        raise InvalidArgument(f"{where}: `system` goes with `prompt`; put it in `messages`")
    return tuple(checked)


def _check_reference(where: str, grader: str, obj: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The reference in the form its grader uses, and the grader's options; errors name the line."""
    answer = obj.get("answer")
    if grader in ("exact", "contains", "judge"):
        return _texts(where, answer, many=grader != "judge"), _criteria(where, obj)
    if grader == "choice":
        return _choice(where, answer, obj.get("choices"))
    if grader == "number":
        tolerance = obj.get("tolerance")
        if tolerance is not None and not (
            isinstance(tolerance, int | float)
            and not isinstance(tolerance, bool)
            and tolerance >= 0
        ):
            raise InvalidArgument(f"{where}: `tolerance` must be a number >= 0")
        value = parse_reference_number(answer)
        if value is None:
            raise InvalidArgument(
                f'{where}: the number grader needs a numeric `answer` (42, -0.5, "3/4", '
                f'"1,234"), got {answer!r}'
            )
        return value, {"tolerance": tolerance}
    if grader == "regex":
        pattern = obj.get("pattern", answer)
        if not isinstance(pattern, str) or not pattern:
            raise InvalidArgument(f"{where}: the regex grader needs a `pattern` string")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise InvalidArgument(f"{where}: `pattern` is not a valid regex ({exc})") from exc
        return pattern, {"pattern": compiled}
    assert grader == "code"
    tests, setup = obj.get("tests"), obj.get("setup", "")
    if not isinstance(tests, str) or not tests.strip():
        raise InvalidArgument(f"{where}: the code grader needs `tests`: Python code that asserts")
    if not isinstance(setup, str):
        raise InvalidArgument(f"{where}: `setup` must be Python code (a string)")
    return answer, {"tests": tests, "setup": setup}


def _texts(where: str, answer: Any, *, many: bool) -> Any:
    """A string reference (numbers accepted as their text); for exact/contains also a list."""
    values = answer if many and isinstance(answer, list) else [answer]
    texts = []
    for value in values:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            shape = "a non-empty string or a list of them" if many else "a non-empty string"
            raise InvalidArgument(f"{where}: `answer` must be {shape}")
        texts.append(value)
    if not texts:
        raise InvalidArgument(f"{where}: `answer` must not be an empty list")
    return tuple(texts) if many else texts[0]


def _criteria(where: str, obj: dict[str, Any]) -> dict[str, Any]:
    criteria = obj.get("criteria", "")
    if not isinstance(criteria, str):
        raise InvalidArgument(f"{where}: `criteria` must be a string")
    return {"criteria": criteria} if criteria else {}


def _choice(where: str, answer: Any, choices: Any) -> tuple[str, dict[str, Any]]:
    """The reference letter; `choices` (option texts, A first) are optional."""
    if choices is not None and (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= len(LETTERS)
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise InvalidArgument(
            f"{where}: `choices` must be a list of 2 to {len(LETTERS)} non-empty strings"
        )
    letters = LETTERS[: len(choices)] if choices else LETTERS
    if isinstance(answer, str) and answer.strip().upper() in letters and len(answer.strip()) == 1:
        letter = answer.strip().upper()
    elif choices and answer in choices:
        letter = LETTERS[choices.index(answer)]
    else:
        raise InvalidArgument(
            f"{where}: the choice grader needs `answer` to be an option letter "
            f"({letters[0]}-{letters[-1]}) or one of `choices`, got {answer!r}"
        )
    return letter, {"choices": tuple(choices or ())}
