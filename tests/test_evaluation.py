"""An evaluation run in-process: resume from the cache, regrade without calls, the summary."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from sidecar._endpoint import Endpoint, EndpointConfig
from sidecar._evaluation import (
    GRADED,
    JUDGE,
    RESPONSES,
    RESULTS,
    SUMMARY,
    Run,
    answer_missing,
    grade_all,
    summarise,
    write_outputs,
)
from sidecar._jsonl import read_results
from sidecar._valset import Item, read_valset
from tools.standin_llm import Script, StandinLLM, last_user_text

QUESTIONS = {f"q{i}": (f"What is {i} + {i}?", 2 * i) for i in range(6)}


@pytest.fixture
def items(tmp_path: Path) -> list[Item]:
    path = tmp_path / "sval.jsonl"
    lines: list[dict[str, Any]] = [{"defaults": {"grader": "number"}}]
    lines += [{"id": i, "prompt": q, "answer": a} for i, (q, a) in QUESTIONS.items()]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return read_valset(path)


@pytest.fixture
def standin() -> Iterator[StandinLLM]:
    # q0..q3 right, q4 wrong, q5 right but awkward.
    table = {("*", q): Script(f"The answer is {a}.") for q, a in QUESTIONS.values()}
    table[("*", QUESTIONS["q4"][0])] = Script("I believe it is 7.")
    table[("*", QUESTIONS["q5"][0])] = Script("\\boxed{10}")
    llm = StandinLLM(table).start()
    yield llm
    llm.stop()


def caller(llm: StandinLLM, **overrides: Any) -> Endpoint:
    options: dict[str, Any] = {"max_attempts": 2, "backoff_s": 0.01, "timeout_s": 2.0}
    options.update(overrides)
    return Endpoint(EndpointConfig(llm.base_url, "m", "k", **options), seed=0)


def run_in(out: Path, **overrides: Any) -> Run:
    options: dict[str, Any] = {"concurrency": 3, "settings": {"temperature": 0.0}}
    options.update(overrides)
    return Run(out=out, model="m", **options)


def calls(llm: StandinLLM) -> dict[str, int]:
    by_prompt = dict(llm.calls)
    return {i: by_prompt.get(q, 0) for i, (q, _) in QUESTIONS.items()}


def test_a_rerun_calls_only_what_is_missing(
    items: list[Item], standin: StandinLLM, tmp_path: Path
) -> None:
    standin.table[("*", QUESTIONS["q2"][0])].faults = ["500"] * 2  # fails both attempts, once
    run = run_in(tmp_path / "out")
    made, cached = answer_missing(items, caller(standin), run)
    assert (made, cached) == (6, 0)
    results = {r.id: r for r in grade_all(items, run)}
    assert results["q2"].status == "failed" and "HTTP 500" in results["q2"].detail
    assert [results[i].score for i in ("q0", "q1", "q3", "q4", "q5")] == [1, 1, 1, 0, 1]

    made, cached = answer_missing(items, caller(standin), run)  # only the failure again
    assert (made, cached) == (1, 5)
    assert calls(standin) == {"q0": 1, "q1": 1, "q2": 3, "q3": 1, "q4": 1, "q5": 1}
    assert answer_missing(items, caller(standin), run) == (0, 6)
    assert all(r.status == "graded" for r in grade_all(items, run))


def test_a_line_cut_by_a_crash_is_skipped_and_not_glued_to(
    items: list[Item], standin: StandinLLM, tmp_path: Path
) -> None:
    run = run_in(tmp_path / "out")
    answer_missing(items[:3], caller(standin), run)
    cache = run.out / RESPONSES
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # SIGKILL here
    assert answer_missing(items, caller(standin), run) == (4, 2)
    after = cache.read_text().splitlines()
    assert after[2] == lines[2][: len(lines[2]) // 2]  # the torn line stays, alone on its line
    for line in after[3:]:
        json.loads(line)  # every line after it is whole
    assert len(grade_all(items, run)) == 6


def test_changed_request_settings_are_called_again(
    items: list[Item], standin: StandinLLM, tmp_path: Path
) -> None:
    answer_missing(items, caller(standin), run_in(tmp_path / "out"))
    hotter = run_in(tmp_path / "out", settings={"temperature": 0.7})
    assert answer_missing(items, caller(standin), hotter) == (6, 0)


def test_concurrency_is_bounded(items: list[Item], tmp_path: Path) -> None:
    llm = StandinLLM(delay_seconds=0.2).start()
    try:
        answer_missing(items, caller(llm), run_in(tmp_path / "out", concurrency=2))
        assert llm.max_in_flight == 2
    finally:
        llm.stop()


def test_summary_and_outputs(items: list[Item], standin: StandinLLM, tmp_path: Path) -> None:
    run = run_in(tmp_path / "out")
    answer_missing(items, caller(standin), run)
    results = grade_all(items, run)
    summary = summarise(
        results,
        model="m",
        price_in=1.0,
        price_out=3.0,
        cost_override=None,
        calls_made=6,
        cached=0,
        sandbox=None,
    )
    # Stand-in usage: one token per word of prompt and answer.
    prompt_tokens = [len(q.split()) for q, _ in QUESTIONS.values()]
    answers = [f"The answer is {2 * i}." for i in range(4)] + ["I believe it is 7.", "\\boxed{10}"]
    completion_tokens = [len(a.split()) for a in answers]
    expected = sum(p * 1.0 + c * 3.0 for p, c in zip(prompt_tokens, completion_tokens, strict=True))
    assert summary["cost"]["measured_per_request"] == pytest.approx(expected / 6 / 1e6)
    assert summary["cost"]["per_request"] == summary["cost"]["measured_per_request"]
    assert summary["tokens"]["prompt"] == sum(prompt_tokens)
    assert summary["accuracy"] == pytest.approx(5 / 6)
    assert summary["per_grader"] == {"number": {"items": 6, "graded": 6, "accuracy": 5 / 6}}
    assert summary["latency_s"]["p50"] <= summary["latency_s"]["p99"] <= summary["latency_s"]["max"]
    write_outputs(run.out, results, summary)
    assert sorted(read_results(run.out / RESULTS)) == [
        ("q0", 1.0),
        ("q1", 1.0),
        ("q2", 1.0),
        ("q3", 1.0),
        ("q4", 0.0),
        ("q5", 1.0),
    ]
    assert json.loads((run.out / SUMMARY).read_text())["graded"] == 6
    assert len((run.out / GRADED).read_text().splitlines()) == 6
    overridden = summarise(
        results,
        model="m",
        price_in=None,
        price_out=None,
        cost_override=0.02,
        calls_made=0,
        cached=6,
        sandbox=None,
    )
    assert overridden["cost"]["per_request"] == 0.02


def judge_items(tmp_path: Path) -> list[Item]:
    path = tmp_path / "judged.jsonl"
    lines = [
        {"id": "j1", "prompt": "Capital of France?", "grader": "judge", "answer": "Paris"},
        {"id": "j2", "prompt": "Capital of Italy?", "grader": "judge", "answer": "Rome"},
        {"id": "j3", "prompt": "Capital of Spain?", "grader": "judge", "answer": "Madrid"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return read_valset(path)


def judge_reply(model: str, messages: Sequence[Mapping[str, Any]]) -> Script:
    """A stand-in judge: reads the rubric it was sent and rules on reference vs candidate."""
    text = last_user_text(messages)
    reference = text.split("[Reference answer]\n")[1].split("\n")[0]
    candidate = text.split("[Candidate answer]\n")[1].split("\n\nThe candidate is")[0]
    if "Madrid" in reference:
        return Script("Hmm, hard to say.")  # no verdict: must count as unknown
    verdict = "CORRECT" if reference in candidate else "INCORRECT"
    return Script(f"Compared.\nVERDICT: {verdict}")


def test_judge_grades_and_its_verdicts_are_cached(tmp_path: Path) -> None:
    items = judge_items(tmp_path)
    model = StandinLLM(
        {
            ("*", "Capital of France?"): Script("It is Paris."),
            ("*", "Capital of Italy?"): Script("Milan."),
            ("*", "Capital of Spain?"): Script("Madrid."),
        }
    ).start()
    judge = StandinLLM(responder=judge_reply).start()
    try:
        run = run_in(tmp_path / "out")
        answer_missing(items, caller(model), run)
        judge_caller = Endpoint(EndpointConfig(judge.base_url, "judge-1", "k", backoff_s=0.01))
        results = {r.id: r for r in grade_all(items, run, judge_caller)}
        assert (results["j1"].status, results["j1"].score) == ("graded", 1.0)
        assert (results["j2"].status, results["j2"].score) == ("graded", 0.0)
        assert (results["j3"].status, results["j3"].score) == ("unknown", None)
        judge_calls = sum(judge.calls.values())
        assert judge_calls == 3
        assert len((run.out / JUDGE).read_text().splitlines()) == 3
        again = {r.id: r.score for r in grade_all(items, run, judge_caller)}  # a regrade
        assert again == {"j1": 1.0, "j2": 0.0, "j3": None}
        assert sum(judge.calls.values()) == judge_calls  # every verdict came from the cache
        no_judge = {r.id: r.status for r in grade_all(items, run, None)}
        assert no_judge == {"j1": "graded", "j2": "graded", "j3": "unknown"}
    finally:
        model.stop()
        judge.stop()
