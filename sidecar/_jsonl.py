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


def read_results_dir(directory: Path) -> dict[str, dict[str, float]]:
    """Training LLMs' results for `fit --train-results`: {file stem: {id: score}}.

    Every ``*.jsonl`` in the folder is one LLM, in the `register --results`
    format; ids must be unique within a file.
    """
    if not directory.is_dir():
        raise InvalidArgument(f"--train-results {directory} is not a directory")
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise InvalidArgument(f"{directory}: no *.jsonl results files (one per training LLM)")
    out: dict[str, dict[str, float]] = {}
    for path in files:
        scores: dict[str, float] = {}
        for item_id, score in read_results(path):
            if item_id in scores:
                raise InvalidArgument(f"{path}: id {item_id!r} appears twice")
            scores[item_id] = score
        out[path.stem] = scores
    return out


def read_costs(path: Path) -> dict[str, float]:
    """`name<TAB>cost[<TAB>anything]` per line (bench.routerbench's costs.tsv) -> {name: cost}.

    A name with '/' is also found under its results-file stem ('/' written as '__').
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read costs file {path}: {exc}") from exc
    costs: dict[str, float] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            cost = float(fields[1])
        except (IndexError, ValueError):
            raise InvalidArgument(f"{path}:{lineno}: expected `name<TAB>cost`") from None
        if not (cost >= 0.0 and cost < float("inf")):
            raise InvalidArgument(f"{path}:{lineno}: cost must be finite and >= 0")
        costs[fields[0]] = cost
        costs.setdefault(fields[0].replace("/", "__"), cost)
    return costs
