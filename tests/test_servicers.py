"""The servicers' contract over a real server: required fields, opaque tokens, one Route path."""

from __future__ import annotations

import base64

import grpc
import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT, register_specialists, topic_results
from uniroute.v1 import registry_pb2, router_pb2


def _code(call, *args):
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code(), info.value.details()


def routes_counted(sidecar) -> float:
    registry = sidecar.metrics.registry
    return sum(
        registry.get_sample_value("uniroute_routes_total", {"model": m, "path": "route"}) or 0.0
        for m in ("coder", "chef")
    )


@pytest.fixture
def live(make_sidecar, connect, topic_artifact):
    sidecar = make_sidecar(artifact_dir=topic_artifact, embedding_cache=16)
    client = connect(sidecar.port)
    register_specialists(client)
    return sidecar, client


def test_register_without_a_cost_is_invalid_argument(live):
    """A forgotten cost used to register a free model (proto3 zero value)."""
    sidecar, client = live
    before = sidecar.registry.revision
    request = registry_pb2.RegisterModelRequest(
        name="forgot-cost", results=registry_pb2.ValidationResults(results=topic_results("code"))
    )
    code, details = _code(client.registry.RegisterModel, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cost is required" in details
    assert sidecar.registry.revision == before
    request.cost = 0.0  # an explicit zero is a free model, and allowed
    assert client.registry.RegisterModel(request).cost == 0.0


@pytest.mark.parametrize("cost", [1e39, 3.5e38, 1e300])
def test_a_cost_beyond_float32_is_refused(live, cost):
    """Such a cost became inf in the float32 table, and inf/inf a NaN score for every model."""
    sidecar, client = live
    before = sidecar.registry.revision
    request = registry_pb2.RegisterModelRequest(
        name="huge",
        cost=cost,
        results=registry_pb2.ValidationResults(results=topic_results("code")),
    )
    code, details = _code(client.registry.RegisterModel, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cost" in details
    assert sidecar.registry.revision == before
    response = client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT, cost_weight=1.0))
    assert response.model == "coder"
    assert all(s.score == s.score for s in response.scores)  # no NaN


def test_page_tokens_are_opaque_and_checked(make_sidecar, connect, topic_artifact):
    sidecar = make_sidecar(artifact_dir=topic_artifact)
    client = connect(sidecar.port)
    for name in ("a", "b", "c"):
        client.registry.RegisterModel(
            registry_pb2.RegisterModelRequest(
                name=name, cost=1.0, profile=registry_pb2.ErrorProfile(error_rates=[0.1, 0.2])
            )
        )
    first = client.registry.ListModels(registry_pb2.ListModelsRequest(page_size=1))
    assert [m.name for m in first.models] == ["a"]
    assert first.next_page_token not in ("", "a")  # not the raw name any more
    second = client.registry.ListModels(
        registry_pb2.ListModelsRequest(page_size=5, page_token=first.next_page_token)
    )
    assert [m.name for m in second.models] == ["b", "c"]
    forged = base64.urlsafe_b64encode(b"b").decode()
    for token in ("a", forged, "%%%", "v1:a"):
        code, details = _code(
            client.registry.ListModels, registry_pb2.ListModelsRequest(page_token=token)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "next_page_token" in details


def test_route_batch_takes_the_route_path(live):
    """RouteBatch used to skip the embedding cache and the metrics."""
    sidecar, client = live
    batch = router_pb2.RouteBatchRequest(
        requests=[
            router_pb2.RouteRequest(prompt=CODE_PROMPT, request_id="a"),
            router_pb2.RouteRequest(prompt=COOK_PROMPT, request_id="b"),
            router_pb2.RouteRequest(prompt=CODE_PROMPT, request_id="c", candidate_models=["chef"]),
        ]
    )
    before = routes_counted(sidecar)
    first = client.router.RouteBatch(batch)
    assert [r.model for r in first.responses] == ["coder", "chef", "chef"]
    assert [r.request_id for r in first.responses] == ["a", "b", "c"]
    cache = sidecar.router.cache
    assert cache is not None
    hits = cache.hits
    second = client.router.RouteBatch(batch)
    assert cache.hits == hits + 3  # every prompt of the second batch came from the cache
    assert list(second.responses) == list(first.responses)
    assert routes_counted(sidecar) == before + 6
    single = client.router.Route(batch.requests[2])
    assert single == first.responses[2]


def test_a_follower_refuses_writes_naming_its_leader(
    make_sidecar, connect, topic_artifact, tmp_path
):
    leader = make_sidecar(artifact_dir=topic_artifact)
    follower = make_sidecar(follow=f"127.0.0.1:{leader.port}", db_path=tmp_path / "f.db")
    client = connect(follower.port)
    request = registry_pb2.DeregisterModelRequest(name="coder")
    code, details = _code(client.registry.DeregisterModel, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"127.0.0.1:{leader.port}" in details
