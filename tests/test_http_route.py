"""One OpenAI-style request through the processor's logic, with the real Router and embedder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT, two_topic_prompts

from sidecar import InvalidArgument, Query, Router, RoutingTable, TableHolder
from sidecar._clustering import load_clustering
from sidecar._http_route import Exchange, RouteOptions, Step
from sidecar._metrics import Metrics
from sidecar._registry import Registry

CHAT_HEADERS = {":method": "POST", ":path": "/v1/chat/completions", "x-request-id": "req-1"}


def results(topic: str) -> list[tuple[str, float]]:
    return [(i, float(t == topic)) for i, _, t in two_topic_prompts()[1]]


@pytest.fixture
def registry(topic_artifact: Path, tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path / "reg.db")
    reg.activate_clustering(load_clustering(topic_artifact))
    yield reg
    reg.close()


@pytest.fixture
def router(registry: Registry, embedder) -> Router:
    registry.register_model(
        "coder", 1.0, results=results("code"), labels={"upstream_model": "coder-2024-07"}
    )
    registry.register_model("chef", 1.0, results=results("cook"))
    table = RoutingTable.from_snapshot(registry.snapshot())
    return Router(TableHolder(table), embedder, metrics=Metrics(), max_prompt_bytes=4096)


def chat(text: str, **extra: object) -> bytes:
    return json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
    ).encode()


def run(
    router: Router,
    body: bytes,
    headers: dict[str, str] | None = None,
    options: RouteOptions | None = None,
) -> tuple[Exchange, Step]:
    exchange = Exchange(router, options or RouteOptions())
    first = exchange.on_request_headers({**CHAT_HEADERS, **(headers or {})}, False)
    assert first.wants_body and not first.done and first.reply is None
    return exchange, exchange.on_request_body(body, True)


def error_of(step: Step) -> tuple[int, str, str]:
    assert step.reply is not None and step.done
    error = json.loads(step.reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return step.reply.status, error["code"], error["message"]


def test_auto_is_routed_as_route_would_and_rewritten(router: Router) -> None:
    body = chat(CODE_PROMPT, temperature=0.1)
    exchange, step = run(router, body)
    expected = router.route(Query(prompt=CODE_PROMPT))
    assert exchange.decision is not None and exchange.outcome == "routed"
    assert (exchange.decision.model, exchange.decision.cluster) == (
        expected.model,
        expected.cluster,
    )
    assert expected.model == "coder"
    assert step.body is not None and step.clear_route_cache and step.done
    assert json.loads(step.body) == {**json.loads(body), "model": "coder-2024-07"}
    assert dict(step.set_headers) == {
        "x-uniroute-model": "coder",
        "x-uniroute-cluster": str(expected.cluster),
        "x-uniroute-revision": str(expected.table.revision),
        "content-length": str(len(step.body)),
    }


def test_upstream_id_defaults_to_the_registry_name(router: Router) -> None:
    _, step = run(router, chat(COOK_PROMPT))
    assert step.body is not None and json.loads(step.body)["model"] == "chef"
    assert ("x-uniroute-model", "chef") in step.set_headers


def test_completions_are_routed_too(router: Router) -> None:
    body = json.dumps({"model": "auto", "prompt": COOK_PROMPT}).encode()
    _, step = run(router, body, {":path": "/v1/completions"})
    assert ("x-uniroute-model", "chef") in step.set_headers


def test_hints_cost_weight_and_candidates(router: Router) -> None:
    exchange, step = run(router, chat(CODE_PROMPT), {"x-uniroute-cost-weight": "0.25"})
    assert exchange.decision is not None and exchange.decision.cost_weight == 0.25
    _, step = run(router, chat(CODE_PROMPT), {"x-uniroute-candidates": " chef , ,chef"})
    assert ("x-uniroute-model", "chef") in step.set_headers


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"x-uniroute-candidates": "chef,nobody"}, "unknown_candidates"),
        ({"x-uniroute-cost-weight": "-1"}, "invalid_request"),
        ({"x-uniroute-cost-weight": "nan"}, "invalid_request"),
        ({"x-uniroute-cost-weight": "cheap"}, "invalid_request"),
    ],
)
def test_bad_hints_are_400(router: Router, headers: dict[str, str], code: str) -> None:
    _, step = run(router, chat(CODE_PROMPT), headers)
    status, got, message = error_of(step)
    assert (status, got) == (400, code)
    assert "nobody" in message or "x-uniroute-cost-weight" in message


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({"model": "auto", "messages": []}).encode(),
        json.dumps({"model": "auto", "messages": [{"role": "user", "content": ""}]}).encode(),
    ],
)
def test_bad_bodies_are_400(router: Router, body: bytes) -> None:
    status, code, _ = error_of(run(router, body)[1])
    assert (status, code) == (400, "invalid_request")


def test_explicit_models_and_other_requests_pass_untouched(router: Router) -> None:
    for body in (
        json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        json.dumps({"messages": [{"role": "user", "content": "no model at all"}]}).encode(),
        json.dumps({"model": 7}).encode(),
    ):
        exchange, step = run(router, body)
        assert step == Step() and exchange.outcome == "passed"
    exchange = Exchange(router, RouteOptions())
    for headers, end in (
        ({**CHAT_HEADERS, ":method": "GET"}, False),
        ({**CHAT_HEADERS, ":path": "/v1/models"}, False),
        ({**CHAT_HEADERS, ":path": "/v1/embeddings"}, False),
        (CHAT_HEADERS, True),  # no body follows
    ):
        step = exchange.on_request_headers(headers, end)
        assert step.done and not step.wants_body and step.reply is None


def test_a_custom_alias(router: Router) -> None:
    options = RouteOptions(alias="uniroute")
    _, step = run(router, chat(CODE_PROMPT), options=options)
    assert step == Step()  # "auto" is just a model name now
    body = json.dumps({"model": "uniroute", "prompt": "x", "messages": []}).encode()
    status, _, _ = error_of(run(router, body, options=options)[1])
    assert status == 400


def test_too_large_by_header_and_by_body(router: Router) -> None:
    options = RouteOptions(max_body_bytes=100)
    exchange = Exchange(router, options)
    step = exchange.on_request_headers({**CHAT_HEADERS, "content-length": "101"}, False)
    status, code, message = error_of(step)
    assert (status, code) == (413, "request_too_large") and "100 bytes" in message
    _, step = run(router, chat("x" * 200), options=options)  # no content-length: chunked
    assert error_of(step)[:2] == (413, "request_too_large")


def test_a_partial_body_is_a_configuration_error(router: Router) -> None:
    exchange = Exchange(router, RouteOptions())
    exchange.on_request_headers(CHAT_HEADERS, False)
    status, code, message = error_of(exchange.on_request_body(b'{"model"', False))
    assert (status, code) == (500, "uniroute_misconfigured") and "BUFFERED" in message


def test_no_models_is_503(registry: Registry, embedder) -> None:
    router = Router(TableHolder(RoutingTable.from_snapshot(registry.snapshot())), embedder)
    status, code, message = error_of(run(router, chat(CODE_PROMPT))[1])
    assert (status, code) == (503, "no_models_available") and "register" in message
    not_ready = Router(TableHolder(), embedder)
    assert error_of(run(not_ready, chat(CODE_PROMPT))[1])[0] == 503


def test_a_long_conversation_is_clipped_not_refused(router: Router) -> None:
    long_text = CODE_PROMPT + " filler" * 5000  # ~35 KB, over this router's 4 KB prompt cap
    exchange, step = run(router, chat(long_text))
    assert exchange.outcome == "routed" and step.body is not None


def test_routes_are_counted_with_the_extproc_path(router: Router) -> None:
    run(router, chat(CODE_PROMPT))
    assert router.metrics is not None
    value = router.metrics.registry.get_sample_value(
        "uniroute_routes_total", {"model": "coder", "path": "extproc"}
    )
    assert value == 1


def test_the_prompt_is_never_logged(router: Router, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="sidecar")
    run(router, chat(CODE_PROMPT), {"x-request-id": "abc-123"})
    run(router, chat(""), {"x-request-id": "abc-124"})
    text = caplog.text
    assert "request_id=abc-123 model=coder" in text and "cluster=" in text and "revision=" in text
    assert "request_id=abc-124 status=400" in text
    assert CODE_PROMPT not in text


def test_options_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="extproc-prompt"):
        RouteOptions(prompt_rule="everything")
    with pytest.raises(InvalidArgument, match="alias"):
        RouteOptions(alias="")
    with pytest.raises(InvalidArgument, match="max-body"):
        RouteOptions(max_body_bytes=0)
