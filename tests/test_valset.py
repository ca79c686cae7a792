"""The validation file: every item checked before any call, errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar._errors import InvalidArgument
from sidecar._jsonl import read_items, read_prompts
from sidecar._valset import read_valset

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "sval.jsonl"
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def test_prompt_items_and_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"defaults": {"grader": "number", "system": "Be brief."}},
        {"id": "a", "prompt": "2+2?", "answer": 4},
        {"id": 7, "prompt": "Capital of France?", "grader": "exact", "answer": "Paris"},
    )
    a, b = read_valset(path)
    assert (a.id, a.grader, a.answer, a.line) == ("a", "number", 4.0, 2)
    assert a.messages == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
    )
    assert (b.id, b.grader, b.answer) == ("7", "exact", ("Paris",))


def test_messages_items(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 6*7?"},
    ]
    path = write(tmp_path, {"id": "m", "messages": messages, "grader": "number", "answer": 42})
    (item,) = read_valset(path)
    assert list(item.messages) == messages
    assert item.question == "What is 6*7?"
    # `sidecar fit` reads the same file: the defaults line is skipped and the last user turn
    # is the text it embeds, the one the router sees.
    assert read_items(path) == (["m"], ["What is 6*7?"])
    assert read_prompts(path) == ["What is 6*7?"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"prompt": "q", "grader": "exact", "answer": "a"}, "non-empty string `id`"),
        ({"id": "x", "grader": "exact", "answer": "a"}, "exactly one of `prompt` or `messages`"),
        (
            {"id": "x", "prompt": "q", "messages": [], "grader": "exact", "answer": "a"},
            "exactly one of `prompt` or `messages`",
        ),
        ({"id": "x", "prompt": "q", "answer": "a"}, "no `grader`"),
        ({"id": "x", "prompt": "q", "grader": "fuzzy", "answer": "a"}, "unknown grader 'fuzzy'"),
        ({"id": "x", "prompt": "q", "grader": "exact"}, "`answer` must be"),
        ({"id": "x", "prompt": "q", "grader": "number", "answer": "lots"}, "numeric `answer`"),
        (
            {"id": "x", "prompt": "q", "grader": "number", "answer": 1, "tolerance": -1},
            "`tolerance`",
        ),
        (
            {"id": "x", "prompt": "q", "grader": "choice", "answer": "Z", "choices": ["a", "b"]},
            "A-B",
        ),
        (
            {"id": "x", "prompt": "q", "grader": "choice", "answer": "A", "choices": ["a"]},
            "2 to 26",
        ),
        (
            {"id": "x", "prompt": "q", "grader": "regex", "pattern": "(unclosed"},
            "not a valid regex",
        ),
        ({"id": "x", "prompt": "q", "grader": "code"}, "needs `tests`"),
        ({"id": "x", "prompt": "q", "grader": "judge", "answer": ["a", "b"]}, "non-empty string"),
        (
            {"id": "x", "messages": [{"role": "robot", "content": "hi"}], "grader": "judge"},
            "messages[0]",
        ),
        (
            {"id": "x", "messages": [{"role": "assistant", "content": "hi"}], "grader": "judge"},
            "user message",
        ),
        ({"id": "x", "prompt": "   ", "grader": "exact", "answer": "a"}, "`prompt` must be"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, line: dict[str, object], message: str) -> None:
    good = {"id": "ok", "prompt": "q", "grader": "exact", "answer": "a"}
    path = write(tmp_path, good, "", line)
    with pytest.raises(InvalidArgument) as info:
        read_valset(path)
    assert f"{path}:3:" in str(info.value)
    assert message in str(info.value)


def test_duplicate_ids(tmp_path: Path) -> None:
    item = {"id": "a", "prompt": "q", "grader": "exact", "answer": "x"}
    with pytest.raises(InvalidArgument, match=r":2: id 'a' already used on line 1"):
        read_valset(write(tmp_path, item, item))


def test_defaults_only_first(tmp_path: Path) -> None:
    item = {"id": "a", "prompt": "q", "grader": "exact", "answer": "x"}
    with pytest.raises(InvalidArgument, match=r":2: a `defaults` line must be the first"):
        read_valset(write(tmp_path, item, {"defaults": {"grader": "exact"}}))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no validation items"):
        read_valset(write(tmp_path, {"defaults": {"grader": "exact"}}))


def test_shipped_example_reads_and_covers_several_graders() -> None:
    items = read_valset(ROOT / "examples" / "sval" / "sval.jsonl")
    assert len(items) >= 30
    assert {i.grader for i in items} >= {"code", "number", "choice", "exact", "contains", "regex"}
