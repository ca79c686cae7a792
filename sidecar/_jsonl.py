"""Reading the JSONL files people hand to the CLI, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import InvalidArgument


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, object) for each non-blank line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{path}: not valid UTF-8 ({exc.reason})") from exc
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise InvalidArgument(f"{path}:{lineno}: expected a JSON object")
            yield lineno, obj


def is_defaults_line(obj: dict[str, Any]) -> bool:
    """A validation file may start with `{"defaults": {...}}`: fields every item inherits."""
    return "defaults" in obj and "id" not in obj


def item_text(path: Path, lineno: int, obj: dict[str, Any]) -> str:
    """The text a line stands for: its `prompt`, or the last user turn of its `messages`.

    `sidecar fit` embeds this text and the router sees the same one, so an
    S_val item written as a chat still lands in the cluster its question belongs to.
    """
    if "prompt" in obj or "messages" not in obj:
        return _text(path, lineno, obj, "prompt")
    messages = obj["messages"]
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str) and content.strip():
                    return content
    raise InvalidArgument(
        f"{path}:{lineno}: `messages` must be a list with a user message of non-empty text"
    )


def read_prompts(path: Path) -> list[str]:
    """The text of every line (training prompts for `sidecar fit`); a defaults line is skipped."""
    prompts = [item_text(path, n, obj) for n, obj in read_jsonl(path) if not is_defaults_line(obj)]
    if not prompts:
        raise InvalidArgument(f"{path}: no prompts found")
    return prompts


def read_items(path: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a validation file; ids must be unique, a defaults line is skipped."""
    ids: list[str] = []
    prompts: list[str] = []
    seen: dict[str, int] = {}
    for n, obj in read_jsonl(path):
        if is_defaults_line(obj):
            continue
        item_id = item_id_of(path, n, obj)
        if item_id in seen:
            raise InvalidArgument(
                f"{path}:{n}: id {item_id!r} already used on line {seen[item_id]}"
            )
        seen[item_id] = n
        ids.append(item_id)
        prompts.append(item_text(path, n, obj))
    if not ids:
        raise InvalidArgument(f"{path}: no validation items found")
    return ids, prompts


def read_results(path: Path) -> list[tuple[str, float]]:
    """(item id, score) pairs from `{"id", "correct": 0|1|true|false}` or `{"id", "score"}`."""
    results = []
    for n, obj in read_jsonl(path):
        item_id = item_id_of(path, n, obj)
        has_correct, has_score = "correct" in obj, "score" in obj
        if has_correct == has_score:
            raise InvalidArgument(f"{path}:{n}: give exactly one of `correct` or `score`")
        if has_correct:
            correct = obj["correct"]
            if correct not in (0, 1) or isinstance(correct, float):
                raise InvalidArgument(f"{path}:{n}: `correct` must be 0, 1, true or false")
            score = 1.0 if correct else 0.0
        else:
            value = obj["score"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgument(f"{path}:{n}: `score` must be a number in [0, 1]")
            if not 0.0 <= float(value) <= 1.0:
                raise InvalidArgument(f"{path}:{n}: `score` {value} is outside [0, 1]")
            score = float(value)
        results.append((item_id, score))
    if not results:
        raise InvalidArgument(f"{path}: no results found")
    return results


def item_id_of(path: Path, lineno: int, obj: dict[str, Any]) -> str:
    """Ids are strings; integer ids are accepted and read as their decimal text."""
    item_id = obj.get("id")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id:
        raise InvalidArgument(f"{path}:{lineno}: every line needs a non-empty string `id`")
    return item_id


def _text(path: Path, lineno: int, obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{path}:{lineno}: `{key}` must be a non-empty string")
    return value
