"""One evaluation run: answer what the cache lacks, grade everything, summarise.

Every response is appended to `responses.jsonl` in the output directory as it
arrives, keyed by model, item id and a hash of the request (the messages and
the sampling settings), so a run killed at any point resumes where it
stopped: a rerun calls only the items without a cached answer, and
`--regrade` calls the model not at all. Judge verdicts are cached the same
way in `judge.jsonl`. Each run rewrites `graded.jsonl` (one line per item),
`results.jsonl` (what `sidecar register --results` takes) and `summary.json`.

Cost is measured, not guessed: prices are per million tokens (input and
output, in the operator's currency), and the cost of a request is
(prompt_tokens × price_in + completion_tokens × price_out) / 1e6, averaged
over the answered items.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._code_grader import CodeLimits, Sandbox, grade_code
from ._endpoint import CallFailed, Completion, Endpoint, Stopped
from ._graders import LOCAL_GRADERS, Grade, judge_messages, parse_verdict
from ._valset import Item

RESPONSES = "responses.jsonl"
JUDGE = "judge.jsonl"
GRADED = "graded.jsonl"
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per million tokens

Progress = Callable[[int, int], None]


def request_hash(messages: Sequence[Mapping[str, str]], settings: Mapping[str, Any]) -> str:
    """What makes a cached answer reusable: the same messages and sampling settings."""
    canonical = json.dumps({"messages": list(messages), "settings": dict(settings)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


class JsonlCache:
    """An append-only JSONL file of records with a key; the last good record for a key wins.

    A line cut short by a crash is skipped on load, and the next append starts
    on a fresh line, so a killed run never poisons the cache.
    """

    def __init__(self, path: Path, key_fields: Sequence[str]) -> None:
        self.path = path
        self.key_fields = tuple(key_fields)
        self.records: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.skipped_lines = 0
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        self._at_line_start = text == "" or text.endswith("\n")
        if text:
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    key = tuple(record[f] for f in self.key_fields)
                except (ValueError, KeyError, TypeError):
                    self.skipped_lines += bool(line.strip())
                    continue
                if record.get("ok", True) or key not in self.records:
                    self.records[key] = record

    def get(self, *key: Any) -> dict[str, Any] | None:
        return self.records.get(tuple(key))

    def append(self, record: dict[str, Any]) -> None:
        """Written and flushed before returning: what is in the file survives a SIGKILL."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(("" if self._at_line_start else "\n") + json.dumps(record) + "\n")
            handle.flush()
        self._at_line_start = True
        key = tuple(record[f] for f in self.key_fields)
        if record.get("ok", True) or key not in self.records:
            self.records[key] = record


@dataclass
class ItemResult:
    """One item's outcome: graded (score), failed (no answer) or unknown (grader could not say)."""

    id: str
    grader: str
    status: str  # "graded" | "failed" | "unknown"
    score: float | None
    detail: str
    answer: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Run:
    """Everything a run needs besides the items."""

    out: Path
    model: str
    settings: Mapping[str, Any]  # temperature, max_tokens: part of each request's hash
    concurrency: int = 8
    code_limits: CodeLimits = field(default_factory=CodeLimits)


def missing(items: Sequence[Item], run: Run, cache: JsonlCache | None = None) -> list[Item]:
    """The items without a cached answer (a cached failure counts as missing)."""
    cache = cache or JsonlCache(run.out / RESPONSES, ("model", "id", "request_hash"))
    todo = []
    for item in items:
        record = cache.get(run.model, item.id, request_hash(item.messages, run.settings))
        if record is None or not record.get("ok"):
            todo.append(item)
    return todo


def answer_missing(
    items: Sequence[Item], endpoint: Endpoint, run: Run, progress: Progress | None = None
) -> tuple[int, int]:
    """Calls the model for every item without a cached answer; (calls made, items cached)."""
    cache = JsonlCache(run.out / RESPONSES, ("model", "id", "request_hash"))
    todo = missing(items, run, cache)
    cached = len(items) - len(todo)
    if progress:
        progress(0, len(todo))
    done = 0
    pool = ThreadPoolExecutor(max_workers=max(1, run.concurrency), thread_name_prefix="evaluate")
    futures: dict[Future[Completion], Item] = {
        pool.submit(endpoint.complete, item.messages): item for item in todo
    }
    try:
        for future in as_completed(futures):
            item = futures[future]
            record: dict[str, Any] = {
                "model": run.model,
                "id": item.id,
                "request_hash": request_hash(item.messages, run.settings),
            }
            try:
                completion = future.result()
                record.update(ok=True, **asdict(completion))
            except CallFailed as exc:
                record.update(ok=False, error=str(exc), attempts=exc.attempts)
            except Stopped:
                continue
            cache.append(record)
            done += 1
            if progress:
                progress(done, len(todo))
    except BaseException:
        endpoint.stop.set()  # wake retry sleeps; in-flight calls end within their timeout
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return done, cached


def grade_all(
    items: Sequence[Item],
    run: Run,
    judge: Endpoint | None = None,
    progress: Progress | None = None,
) -> list[ItemResult]:
    """Grades every item from the cache alone (plus judge calls for uncached verdicts)."""
    responses = JsonlCache(run.out / RESPONSES, ("model", "id", "request_hash"))
    verdicts = JsonlCache(run.out / JUDGE, ("judge_model", "id", "request_hash"))
    lock = threading.Lock()

    def grade_one(item: Item) -> ItemResult:
        record = responses.get(run.model, item.id, request_hash(item.messages, run.settings))
        if record is None or not record.get("ok"):
            error = record.get("error", "no answer") if record else "not answered yet"
            return ItemResult(item.id, item.grader, "failed", None, error)
        answer = str(record["text"])
        grade = _grade(item, answer, run, judge, verdicts, lock)
        return ItemResult(
            item.id,
            item.grader,
            "unknown" if grade.score is None else "graded",
            grade.score,
            grade.detail,
            answer,
            record.get("prompt_tokens"),
            record.get("completion_tokens"),
            record.get("latency_s"),
            int(record.get("attempts", 1)),
        )

    results: dict[str, ItemResult] = {}
    slow = [i for i in items if i.grader in ("code", "judge")]
    for item in items:
        if item.grader not in ("code", "judge"):
            results[item.id] = grade_one(item)
    if progress:
        progress(len(results), len(items))
    workers = max(1, min(run.concurrency, os.cpu_count() or 1)) if slow else 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grade") as pool:
        for result in pool.map(grade_one, slow):
            results[result.id] = result
            if progress:
                progress(len(results), len(items))
    return [results[item.id] for item in items]


def _grade(
    item: Item,
    answer: str,
    run: Run,
    judge: Endpoint | None,
    verdicts: JsonlCache,
    lock: threading.Lock,
) -> Grade:
    if item.grader == "code":
        return grade_code(answer, item, run.code_limits)
    if item.grader != "judge":
        return LOCAL_GRADERS[item.grader](answer, item)
    messages = judge_messages(answer, item)
    rubric_hash = request_hash(messages, {"temperature": 0.0})
    if judge is None:  # a regrade without a judge: any judge's cached verdict will do
        with lock:
            found = [r for k, r in verdicts.records.items() if k[1:] == (item.id, rubric_hash)]
        if not found:
            return Grade(None, "judge: no judge endpoint (give --judge-base-url and --judge-model)")
        return parse_verdict(str(found[-1]["reply"]))
    key = (judge.config.model, item.id, rubric_hash)
    with lock:
        cached = verdicts.get(*key)
    if cached is None:
        try:
            reply = judge.complete(messages).text
        except CallFailed as exc:
            return Grade(None, f"judge call failed: {exc}")
        except Stopped:
            return Grade(None, "judge: stopped")
        cached = dict(zip(("judge_model", "id", "request_hash"), key, strict=True), reply=reply)
        with lock:
            verdicts.append(cached)
    return parse_verdict(str(cached["reply"]))


def summarise(
    results: Sequence[ItemResult],
    *,
    model: str,
    price_in: float | None,
    price_out: float | None,
    cost_override: float | None,
    calls_made: int,
    cached: int,
    sandbox: Sandbox | None,
) -> dict[str, Any]:
    """Accuracy overall and per grader, failures, tokens, latency and cost, as plain JSON."""
    graded = [r for r in results if r.status == "graded"]
    per_grader: dict[str, dict[str, Any]] = {}
    for grader in dict.fromkeys(r.grader for r in results):
        mine = [r for r in results if r.grader == grader]
        scored = [r.score for r in mine if r.status == "graded" and r.score is not None]
        per_grader[grader] = {
            "items": len(mine),
            "graded": len(scored),
            "accuracy": _mean(scored),
        }
    answered = [r for r in results if r.status != "failed"]
    with_usage = [
        r for r in answered if r.prompt_tokens is not None and r.completion_tokens is not None
    ]
    latencies = sorted(r.latency_s for r in answered if r.latency_s is not None)
    mean_cost = None
    if price_in is not None and price_out is not None and with_usage:
        mean_cost = _mean(
            [
                ((r.prompt_tokens or 0) * price_in + (r.completion_tokens or 0) * price_out)
                / TOKENS_PER_PRICE_UNIT
                for r in with_usage
            ]
        )
    failures = [r for r in results if r.status in ("failed", "unknown")]
    return {
        "model": model,
        "items": len(results),
        "graded": len(graded),
        "failed": sum(r.status == "failed" for r in results),
        "unknown": sum(r.status == "unknown" for r in results),
        "accuracy": _mean([r.score for r in graded if r.score is not None]),
        "per_grader": per_grader,
        "calls": {"made": calls_made, "cached": cached},
        "tokens": {
            "prompt": sum(r.prompt_tokens or 0 for r in with_usage),
            "completion": sum(r.completion_tokens or 0 for r in with_usage),
            "responses_without_usage": len(answered) - len(with_usage),
        },
        "latency_s": {
            "p50": _percentile(latencies, 50),
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "max": latencies[-1] if latencies else None,
        },
        "cost": {
            "price_in_per_million_tokens": price_in,
            "price_out_per_million_tokens": price_out,
            "measured_per_request": mean_cost,
            "override": cost_override,
            "per_request": cost_override if cost_override is not None else mean_cost,
        },
        "failures": [{"id": r.id, "status": r.status, "detail": r.detail} for r in failures],
        "code_sandbox": sandbox.describe() if sandbox is not None else None,
    }


def results_lines(results: Iterable[ItemResult]) -> list[dict[str, Any]]:
    """The graded items in `register --results` form: `correct` for 0/1, else `score`."""
    lines: list[dict[str, Any]] = []
    for r in results:
        if r.status == "graded" and r.score is not None:
            if r.score in (0.0, 1.0):
                lines.append({"id": r.id, "correct": int(r.score)})
            else:
                lines.append({"id": r.id, "score": r.score})
    return lines


def write_outputs(out: Path, results: Sequence[ItemResult], summary: Mapping[str, Any]) -> None:
    """graded.jsonl, results.jsonl and summary.json, each replaced atomically."""
    _write_atomic(out / GRADED, "".join(json.dumps(asdict(r)) + "\n" for r in results))
    _write_atomic(
        out / RESULTS, "".join(json.dumps(line) + "\n" for line in results_lines(results))
    )
    _write_atomic(out / SUMMARY, json.dumps(summary, indent=1) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]
