"""The CLI's JSONL readers: happy paths and errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar._errors import InvalidArgument
from sidecar._jsonl import read_items, read_jsonl, read_prompts, read_results


def write(tmp_path: Path, *lines: object, name: str = "f.jsonl") -> Path:
    """Objects are JSON-encoded; strings are written verbatim."""
    path = tmp_path / name
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
        encoding="utf-8",
    )
    return path


# ---------------------------------------------------------------------------- read_jsonl


def test_read_jsonl_yields_line_numbers_and_skips_blanks(tmp_path: Path) -> None:
    path = write(tmp_path, {"a": 1}, "", "   ", {"b": 2}, "\t")
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"b": 2})]


def test_read_jsonl_without_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}', encoding="utf-8")
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (2, {"b": 2})]


def test_read_jsonl_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, {"prompt": "ok"}, "", '{"prompt": "broken"')
    with pytest.raises(InvalidArgument) as info:
        list(read_jsonl(path))
    assert f"{path}:3:" in str(info.value)
    assert "not valid JSON" in str(info.value)


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "42", "null"])
def test_read_jsonl_non_object(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, {"prompt": "ok"}, line)
    with pytest.raises(InvalidArgument, match=r":2: expected a JSON object"):
        list(read_jsonl(path))


def test_read_jsonl_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    with pytest.raises(InvalidArgument, match="cannot read") as info:
        list(read_jsonl(path))
    assert str(path) in str(info.value)


def test_read_jsonl_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read"):
        list(read_jsonl(tmp_path))


def test_read_jsonl_unicode(tmp_path: Path) -> None:
    path = write(tmp_path, {"prompt": "Ψ ≈ λ · cost — 日本語"})
    assert list(read_jsonl(path)) == [(1, {"prompt": "Ψ ≈ λ · cost — 日本語"})]


# --------------------------------------------------------------------------- read_prompts


def test_read_prompts(tmp_path: Path) -> None:
    path = write(tmp_path, {"prompt": "one", "extra": 1}, "", {"prompt": "two", "id": "x"})
    assert read_prompts(path) == ["one", "two"]


@pytest.mark.parametrize(
    "bad",
    [{}, {"prompt": ""}, {"prompt": "   "}, {"prompt": 3}, {"prompt": None}, {"text": "x"}],
)
def test_read_prompts_bad_prompt(tmp_path: Path, bad: dict[str, object]) -> None:
    path = write(tmp_path, {"prompt": "fine"}, bad)
    with pytest.raises(InvalidArgument) as info:
        read_prompts(path)
    assert f"{path}:2:" in str(info.value)
    assert "`prompt`" in str(info.value)


@pytest.mark.parametrize("lines", [(), ("", "  ")])
def test_read_prompts_empty_file(tmp_path: Path, lines: tuple[str, ...]) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(InvalidArgument, match="no prompts"):
        read_prompts(path)


def test_read_prompts_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path, {"prompt": "a"}, {"prompt": "b"}, "{oops}")
    with pytest.raises(InvalidArgument, match=r":3: not valid JSON"):
        read_prompts(path)


def test_read_prompts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read"):
        read_prompts(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- read_items


def test_read_items(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"id": "a", "prompt": "first", "topic": "x"},
        "",
        {"id": 7, "prompt": "second"},
        {"id": "0", "prompt": "third"},
    )
    ids, prompts = read_items(path)
    assert ids == ["a", "7", "0"]
    assert prompts == ["first", "second", "third"]


@pytest.mark.parametrize(
    "bad_id",
    [None, "", 1.5, True, False, ["a"], {"a": 1}],
    ids=["missing", "empty", "float", "true", "false", "list", "dict"],
)
def test_read_items_bad_id(tmp_path: Path, bad_id: object) -> None:
    obj: dict[str, object] = {"prompt": "p"}
    if bad_id is not None:
        obj["id"] = bad_id
    path = write(tmp_path, {"id": "ok", "prompt": "p"}, obj)
    with pytest.raises(InvalidArgument, match=r":2: every line needs a non-empty string `id`"):
        read_items(path)


def test_read_items_duplicate_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"id": "a", "prompt": "p"},
        {"id": "b", "prompt": "p"},
        "",
        {"id": "a", "prompt": "q"},
    )
    with pytest.raises(InvalidArgument) as info:
        read_items(path)
    msg = str(info.value)
    assert f"{path}:4:" in msg
    assert "'a'" in msg and "line 1" in msg


def test_read_items_numeric_and_string_ids_collide(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": "3", "prompt": "p"}, {"id": 3, "prompt": "q"})
    with pytest.raises(InvalidArgument, match="already used on line 1"):
        read_items(path)


def test_read_items_missing_prompt(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": "a", "prompt": "p"}, {"id": "b"})
    with pytest.raises(InvalidArgument, match=r":2: `prompt` must be a non-empty string"):
        read_items(path)


def test_read_items_empty(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no validation items"):
        read_items(write(tmp_path, ""))


def test_read_items_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": "a", "prompt": "p"}, "not json")
    with pytest.raises(InvalidArgument, match=r":2: not valid JSON"):
        read_items(path)


def test_read_items_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read"):
        read_items(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------- read_results


def test_read_results_correct_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"id": "a", "correct": True},
        {"id": "b", "correct": False},
        "",
        {"id": "c", "correct": 1},
        {"id": "d", "correct": 0},
        {"id": 5, "correct": 1, "extra": "ignored"},
    )
    out = read_results(path)
    assert out == [("a", 1.0), ("b", 0.0), ("c", 1.0), ("d", 0.0), ("5", 1.0)]
    assert all(type(s) is float for _, s in out)


def test_read_results_scores(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"id": "a", "score": 0},
        {"id": "b", "score": 1},
        {"id": "c", "score": 0.25},
        {"id": "d", "score": 1.0},
    )
    out = read_results(path)
    assert out == [("a", 0.0), ("b", 1.0), ("c", 0.25), ("d", 1.0)]
    assert all(type(s) is float for _, s in out)


@pytest.mark.parametrize("correct", [2, -1, 0.5, 1.0, 0.0, "1", "true", None, [1]], ids=repr)
def test_read_results_bad_correct(tmp_path: Path, correct: object) -> None:
    path = write(tmp_path, {"id": "a", "correct": 1}, {"id": "b", "correct": correct})
    with pytest.raises(InvalidArgument, match=r":2: `correct` must be 0, 1, true or false"):
        read_results(path)


@pytest.mark.parametrize("score", [1.5, -0.1, 2, -1])
def test_read_results_score_out_of_range(tmp_path: Path, score: float) -> None:
    path = write(tmp_path, {"id": "a", "score": 0.5}, {"id": "b", "score": score})
    with pytest.raises(InvalidArgument, match=r":2: `score` .* is outside \[0, 1\]"):
        read_results(path)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_read_results_non_finite_score(tmp_path: Path, raw: str) -> None:
    path = write(tmp_path, '{"id": "a", "score": ' + raw + "}")
    with pytest.raises(InvalidArgument, match=r":1: `score`"):
        read_results(path)


@pytest.mark.parametrize("score", [True, False, "0.5", None, [0.5]], ids=repr)
def test_read_results_score_not_a_number(tmp_path: Path, score: object) -> None:
    path = write(tmp_path, {"id": "a", "score": score})
    with pytest.raises(InvalidArgument, match=r":1: `score` must be a number in \[0, 1\]"):
        read_results(path)


def test_read_results_both_correct_and_score(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": "a", "correct": 1}, {"id": "b", "correct": 1, "score": 1.0})
    with pytest.raises(InvalidArgument, match=r":2: give exactly one of `correct` or `score`"):
        read_results(path)


def test_read_results_neither_correct_nor_score(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": "a"})
    with pytest.raises(InvalidArgument, match=r":1: give exactly one of `correct` or `score`"):
        read_results(path)


@pytest.mark.parametrize("obj", [{"correct": 1}, {"id": "", "correct": 1}, {"id": 1.0, "score": 1}])
def test_read_results_bad_id(tmp_path: Path, obj: dict[str, object]) -> None:
    path = write(tmp_path, obj)
    with pytest.raises(InvalidArgument, match=r":1: every line needs a non-empty string `id`"):
        read_results(path)


def test_read_results_bad_json_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, {"id": "a", "correct": 1}, "", "", "{'id': 'b'}")
    with pytest.raises(InvalidArgument) as info:
        read_results(path)
    assert f"{path}:4: not valid JSON" in str(info.value)


def test_read_results_empty(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no results"):
        read_results(write(tmp_path, "", ""))


def test_read_results_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read"):
        read_results(tmp_path / "nope.jsonl")
