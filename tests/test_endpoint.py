"""Calling an OpenAI-compatible endpoint: every retry case against a stand-in on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from sidecar._endpoint import (
    CallFailed,
    Endpoint,
    EndpointConfig,
    EndpointRefused,
    Stopped,
    _retry_after,
)
from tools.standin_llm import Script, StandinLLM

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "Paris is the capital."


@pytest.fixture
def standin() -> Iterator[StandinLLM]:
    llm = StandinLLM(retry_after=0.3, slow_seconds=1.5).start()
    yield llm
    llm.stop()


def endpoint(llm: StandinLLM, **overrides: object) -> Endpoint:
    options: dict[str, object] = {
        "base_url": llm.base_url,
        "model": "m",
        "api_key": "k",
        "timeout_s": 0.5,
        "max_attempts": 4,
        "backoff_s": 0.01,
        "max_backoff_s": 5.0,
    }
    options.update(overrides)
    return Endpoint(EndpointConfig(**options), seed=0)  # type: ignore[arg-type]


def script(llm: StandinLLM, *faults: str) -> None:
    llm.table[("*", PROMPT[0]["content"])] = Script(ANSWER, list(faults))


def test_answer_usage_and_latency(standin: StandinLLM) -> None:
    script(standin)
    completion = endpoint(standin).complete(PROMPT)
    assert completion.text == ANSWER
    assert (completion.prompt_tokens, completion.completion_tokens) == (6, 4)
    assert completion.attempts == 1
    assert 0 < completion.latency_s < 1
    assert completion.finish_reason == "stop"


def test_429_waits_for_retry_after(standin: StandinLLM) -> None:
    script(standin, "429")
    started = time.monotonic()
    completion = endpoint(standin).complete(PROMPT)
    assert completion.attempts == 2
    assert time.monotonic() - started >= 0.3  # Retry-After: 0.3, far above the 0.01 s backoff
    assert standin.calls[PROMPT[0]["content"]] == 2


@pytest.mark.parametrize(
    "faults",
    [
        ("500", "503"),
        ("502",),
        ("timeout",),
        ("malformed",),
        ("truncated",),
        ("close",),
        ("429", "500", "timeout"),
    ],
)
def test_transient_faults_are_retried(standin: StandinLLM, faults: tuple[str, ...]) -> None:
    script(standin, *faults)
    completion = endpoint(standin).complete(PROMPT)
    assert completion.text == ANSWER
    assert completion.attempts == len(faults) + 1
    assert standin.calls[PROMPT[0]["content"]] == len(faults) + 1


def test_final_failure_after_the_last_attempt(standin: StandinLLM) -> None:
    script(standin, *["500"] * 10)
    with pytest.raises(CallFailed) as info:
        endpoint(standin, max_attempts=3).complete(PROMPT)
    assert info.value.attempts == 3
    assert "HTTP 500" in str(info.value) and "gave up after 3 attempts" in str(info.value)
    assert standin.calls[PROMPT[0]["content"]] == 3


def test_timeouts_until_the_end_fail(standin: StandinLLM) -> None:
    script(standin, "timeout", "timeout")
    with pytest.raises(CallFailed, match=r"timed out after 0\.5 s"):
        endpoint(standin, max_attempts=2).complete(PROMPT)


@pytest.mark.parametrize("status", ["400", "413", "422"])
def test_client_errors_are_final_at_once(standin: StandinLLM, status: str) -> None:
    script(standin, status)
    with pytest.raises(CallFailed) as info:
        endpoint(standin).complete(PROMPT)
    assert info.value.attempts == 1
    assert f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_refusals_stop_the_run(standin: StandinLLM, status: str) -> None:
    script(standin, status)
    with pytest.raises(EndpointRefused, match="check the API key, the model name"):
        endpoint(standin).complete(PROMPT)


def test_stop_interrupts_a_backoff(standin: StandinLLM) -> None:
    script(standin, *["500"] * 10)
    stop = threading.Event()
    caller = Endpoint(
        EndpointConfig(
            standin.base_url, "m", "k", max_attempts=10, backoff_s=30.0, max_backoff_s=30.0
        ),
        stop,
        seed=1,
    )
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        caller.complete(PROMPT)
    assert time.monotonic() - started < 5


def test_connection_refused_is_a_failure_not_a_crash() -> None:
    llm = StandinLLM().start()
    url = llm.base_url
    llm.stop()
    caller = Endpoint(EndpointConfig(url, "m", "k", max_attempts=2, backoff_s=0.01))
    with pytest.raises(CallFailed, match="connection failed"):
        caller.complete(PROMPT)


def test_retry_after_forms() -> None:
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({}) is None
    assert _retry_after({"retry-after": "soon"}) is None
    in_five = _retry_after({"retry-after": formatdate(time.time() + 5, usegmt=True)})
    assert in_five is not None and 3 < in_five <= 5.5
