"""Hostile input, property-based: arbitrary messages to a live server never crash or corrupt it.

This covers the Route and Registry RPCs and Envoy's ext_proc stream (arbitrary
ProcessingRequest sequences: headers, bodies, phases never asked for).

Every call must end with a status (never INTERNAL or UNKNOWN, never a hang), the
store may change only when a write succeeds (then by exactly one revision), and
the server must still route correctly afterwards.
"""

from __future__ import annotations

import json
import math

import grpc
import pytest
from _helpers import CODE_PROMPT, Client, register_specialists, topic_results, two_topic_prompts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uniroute.v1 import registry_pb2, router_pb2

from sidecar._proto import envoy_base_pb2, ext_proc_pb2

BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
VAL_IDS = [i for i, _, _ in two_topic_prompts()[1]]
NAMES = st.one_of(st.sampled_from(["coder", "chef", "new-model", ""]), st.text(max_size=140))
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def live(embedder, topic_artifact, tmp_path_factory):
    from sidecar import ServerConfig, serve

    sidecar = serve(
        ServerConfig(
            listen="127.0.0.1:0",
            db_path=tmp_path_factory.mktemp("fuzz") / "fuzz.db",
            artifact_dir=topic_artifact,
            progress_interval=0.1,
        ),
        embedder=embedder,
    )
    client = Client(sidecar.port)
    register_specialists(client)
    yield sidecar, client
    client.close()
    sidecar.stop(0)


def still_routes(client) -> None:
    response = client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT, cost_weight=0.0))
    assert response.model == "coder"


def store_state(sidecar):
    snapshot = sidecar.registry.snapshot()
    return snapshot.revision, [(m.name, m.cost, m.error_rates.tolist()) for m in snapshot.models]


route_requests = st.builds(
    router_pb2.RouteRequest,
    prompt=st.one_of(st.text(max_size=400), st.just(CODE_PROMPT)),
    candidate_models=st.lists(NAMES, max_size=4),
    embedding=st.one_of(st.just([]), st.lists(st.floats(width=32), max_size=400)),
    request_id=st.text(max_size=200),
)


@SETTINGS
@given(request=route_requests, weight=st.one_of(st.none(), FLOATS))
def test_any_route_request_gets_a_status(live, request, weight):
    sidecar, client = live
    if weight is not None:
        request.cost_weight = weight
    before = store_state(sidecar)
    try:
        response = client.router.Route(request, timeout=20)
        assert response.model in ("coder", "chef")
        if weight is not None:
            assert math.isfinite(weight) and weight >= 0
    except grpc.RpcError as exc:
        assert exc.code() not in BROKEN, exc.details()
        assert "Traceback" not in (exc.details() or "")
    assert store_state(sidecar) == before


results = st.lists(
    st.builds(
        registry_pb2.ValidationResult,
        item_id=st.one_of(st.sampled_from(VAL_IDS), st.text(max_size=20)),
        score=FLOATS,
    ),
    max_size=30,
)
register_requests = st.builds(
    registry_pb2.RegisterModelRequest,
    name=NAMES,
    cost=FLOATS,
    description=st.text(max_size=1100),
    labels=st.dictionaries(st.text(max_size=140), st.text(max_size=140), max_size=70),
    allow_update=st.booleans(),
)


@SETTINGS
@given(
    request=register_requests,
    evidence=st.one_of(
        st.none(),
        results.map(lambda r: ("results", r)),
        st.lists(FLOATS, max_size=4).map(lambda p: ("profile", p)),
    ),
)
def test_any_registration_changes_the_store_only_when_valid(live, request, evidence):
    sidecar, client = live
    if evidence is not None and evidence[0] == "results":
        request.results.results.extend(evidence[1])
    elif evidence is not None:
        request.profile.error_rates.extend(evidence[1])
    before_revision, before_models = store_state(sidecar)
    try:
        model = client.registry.RegisterModel(request, timeout=20)
    except grpc.RpcError as exc:
        assert exc.code() not in BROKEN, exc.details()
        assert store_state(sidecar) == (before_revision, before_models)
    else:
        assert model.revision == before_revision + 1 == sidecar.registry.revision
        assert model.name == request.name
        assert all(0.0 <= r <= 1.0 for r in model.error_rates)
        if model.name in ("coder",):  # keep the routing check meaningful
            client.registry.RegisterModel(
                registry_pb2.RegisterModelRequest(
                    name="coder",
                    cost=1.0,
                    allow_update=True,
                    results=registry_pb2.ValidationResults(results=topic_results("code")),
                )
            )
        elif model.name != "chef":
            client.registry.DeregisterModel(registry_pb2.DeregisterModelRequest(name=model.name))
    still_routes(client)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(start=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_watch_request_gets_a_first_message_or_a_status(live, start):
    sidecar, client = live
    call = client.registry.Watch(registry_pb2.WatchRequest(start_revision=start), timeout=5)
    try:
        first = next(iter(call))
        assert first.WhichOneof("payload") in ("snapshot", "changes", "progress")
        assert first.header.revision <= sidecar.registry.revision
    except grpc.RpcError as exc:
        assert exc.code() not in BROKEN, exc.details()
        assert start < 0 and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        call.cancel()
    still_routes(client)


@SETTINGS
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes_are_answered_with_a_status(live, payload):
    sidecar, client = live
    before = store_state(sidecar)
    for method in (
        "/uniroute.v1.Router/Route",
        "/uniroute.v1.Registry/DeregisterModel",
        "/uniroute.v1.Registry/ActivateClustering",
    ):
        call = client.channel.unary_unary(method)
        try:
            call(payload, timeout=20)
        except grpc.RpcError as exc:
            assert exc.code() not in BROKEN, (method, exc.details())
    if sidecar.registry.revision == before[0]:
        assert store_state(sidecar) == before
    still_routes(client)


# ---------------------------------------------------------------- Envoy ext_proc

EXT_PROC = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            ":method",
            ":path",
            "content-length",
            "x-uniroute-cost-weight",
            "x-uniroute-candidates",
            "x-request-id",
        ]
    ),
    st.text(max_size=30),
)
HEADER_VALUES = st.one_of(
    st.sampled_from(["POST", "GET", "/v1/chat/completions", "/v1/completions", "coder,chef"]),
    st.text(max_size=60),
    st.integers(min_value=-5, max_value=10**12).map(str),
    FLOATS.map(str),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "tool", ""]),
            "content": st.one_of(
                st.text(max_size=200),
                st.lists(
                    st.fixed_dictionaries(
                        {"type": st.sampled_from(["text", "image_url"]), "text": JSON}
                    ),
                    max_size=3,
                ),
                JSON,
            ),
        }
    ),
    max_size=4,
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda model, messages, prompt: json.dumps(
            {"model": model, "messages": messages, "prompt": prompt}
        ).encode(),
        st.sampled_from(["auto", "coder", ""]),
        MESSAGES,
        st.one_of(st.text(max_size=100), JSON),
    ),
)


def _headers(pairs) -> ext_proc_pb2.HttpHeaders:
    return ext_proc_pb2.HttpHeaders(
        headers=envoy_base_pb2.HeaderMap(
            headers=[
                envoy_base_pb2.HeaderValue(key=k, raw_value=v.encode("utf-8", "replace"))
                for k, v in pairs
            ]
        )
    )


processing_requests = st.one_of(
    st.builds(
        lambda pairs, end: ext_proc_pb2.ProcessingRequest(
            request_headers=ext_proc_pb2.HttpHeaders(
                headers=_headers(pairs).headers, end_of_stream=end
            )
        ),
        st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8).map(
            lambda pairs: [(":method", "POST"), (":path", "/v1/chat/completions"), *pairs]
        ),
        st.booleans(),
    ),
    st.builds(
        lambda raw, end: ext_proc_pb2.ProcessingRequest(
            request_body=ext_proc_pb2.HttpBody(body=raw, end_of_stream=end)
        ),
        BODIES,
        st.booleans(),
    ),
    st.builds(
        lambda pairs: ext_proc_pb2.ProcessingRequest(response_headers=_headers(pairs)),
        st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=3),
    ),
    st.builds(
        lambda raw: ext_proc_pb2.ProcessingRequest(response_body=ext_proc_pb2.HttpBody(body=raw)),
        st.binary(max_size=50),
    ),
    st.just(ext_proc_pb2.ProcessingRequest()),
)


@SETTINGS
@given(requests=st.lists(processing_requests, min_size=1, max_size=4))
def test_any_processing_request_sequence_is_answered(live, requests):
    """Each message gets one answer until the processor ends the stream with OK."""
    sidecar, client = live
    before = store_state(sidecar)
    call = client.channel.stream_stream(
        EXT_PROC,
        request_serializer=ext_proc_pb2.ProcessingRequest.SerializeToString,
        response_deserializer=ext_proc_pb2.ProcessingResponse.FromString,
    )
    try:
        answers = list(call(iter(requests), timeout=20))
    except grpc.RpcError as exc:
        assert exc.code() not in BROKEN, exc.details()
        assert "Traceback" not in (exc.details() or "")
    else:
        assert 1 <= len(answers) <= len(requests)
        for answer in answers:
            immediate = answer.immediate_response
            if answer.WhichOneof("response") == "immediate_response":
                assert immediate.status.code in (400, 413, 500, 503)
                error = json.loads(immediate.body)["error"]
                assert error["message"] and error["code"] != "uniroute_internal"
    assert store_state(sidecar) == before
    still_routes(client)


@SETTINGS
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes_on_the_processor_stream_get_a_status(live, payload):
    _, client = live
    call = client.channel.stream_stream(EXT_PROC)
    try:
        list(call(iter([payload, payload]), timeout=20))
    except grpc.RpcError as exc:
        assert exc.code() not in BROKEN, exc.details()
    still_routes(client)
