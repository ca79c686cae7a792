"""End to end over real sockets: a real server, the real embedder, a real SQLite file."""

from __future__ import annotations

import math

import grpc
import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT, topic_results
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from uniroute.v1 import registry_pb2, router_pb2

from sidecar import ArtifactError, Registry, ServerConfig, serve
from sidecar._clustering import load_clustering, save_clustering
from sidecar._server import REGISTRY_SERVICE, ROUTER_SERVICE


def register(client, name, cost, good_topic, **kwargs):
    return client.registry.RegisterModel(
        registry_pb2.RegisterModelRequest(
            name=name,
            cost=cost,
            results=registry_pb2.ValidationResults(results=topic_results(good_topic)),
            **kwargs,
        )
    )


@pytest.fixture
def live(make_sidecar, connect, topic_artifact):
    """A server with three models: a coder, a chef and a cheap coin-flipper."""
    sidecar = make_sidecar(artifact_dir=topic_artifact)
    client = connect(sidecar.port)
    register(client, "coder", 10.0, "code")
    register(client, "chef", 8.0, "cook")
    register(client, "cheap", 0.1, None)
    return sidecar, client


def route(client, prompt, **kwargs):
    return client.router.Route(router_pb2.RouteRequest(prompt=prompt, **kwargs))


def status_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value.code(), info.value.details()


def test_health_and_reflection(make_sidecar, connect, topic_artifact):
    sidecar = make_sidecar(artifact_dir=topic_artifact)
    client = connect(sidecar.port)
    health = health_pb2_grpc.HealthStub(client.channel)
    for service in ("", ROUTER_SERVICE, REGISTRY_SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in next(replies).list_services_response.service}
    assert {ROUTER_SERVICE, REGISTRY_SERVICE, "grpc.health.v1.Health"} <= names
    assert ROUTER_SERVICE == "uniroute.v1.Router"


def test_route_without_models_is_failed_precondition(make_sidecar, connect, topic_artifact):
    client = connect(make_sidecar(artifact_dir=topic_artifact).port)
    code, details = status_of(route, client, CODE_PROMPT)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no models are registered" in details


def test_routing_rule_specialists_and_cost(live):
    sidecar, client = live
    code = route(client, CODE_PROMPT, cost_weight=0.0)
    cook = route(client, COOK_PROMPT, cost_weight=0.0)
    assert code.model == "coder"
    assert cook.model == "chef"
    assert code.cluster != cook.cluster
    # A large λ makes cost dominate: the cheapest model wins everything.
    assert route(client, CODE_PROMPT, cost_weight=50.0).model == "cheap"
    assert route(client, COOK_PROMPT, cost_weight=50.0).model == "cheap"
    assert code.revision == sidecar.registry.revision == 4  # clustering + 3 models
    assert code.clustering_version == load_clustering_version(sidecar)


def load_clustering_version(sidecar):
    active = sidecar.registry.active_clustering()
    return active.clustering.version


def test_scores_follow_the_rule(live):
    _, client = live
    response = route(client, CODE_PROMPT, cost_weight=0.3)
    assert [s.model for s in response.scores] == ["coder", "chef", "cheap"]
    max_cost = max(s.cost for s in response.scores)
    for s in response.scores:
        assert s.score == pytest.approx(s.expected_error + 0.3 * s.cost / max_cost, abs=1e-6)
    best = min(response.scores, key=lambda s: s.score)
    assert response.model == best.model
    # Laplace smoothing: the coder got 10/10 code items right, so Ψ = (0 + 1) / (10 + 2).
    coder = next(s for s in response.scores if s.model == "coder")
    assert coder.expected_error == pytest.approx(1 / 12, abs=1e-6)
    assert response.cost_weight == pytest.approx(0.3)


def test_costs_are_normalised_over_candidates(live):
    _, client = live
    response = route(client, CODE_PROMPT, cost_weight=1.0, candidate_models=["chef", "cheap"])
    assert {s.model for s in response.scores} == {"chef", "cheap"}
    chef = next(s for s in response.scores if s.model == "chef")
    assert chef.score == pytest.approx(chef.expected_error + 1.0, abs=1e-6)  # chef is the max


def test_candidates_restrict_the_choice(live):
    _, client = live
    response = route(client, CODE_PROMPT, cost_weight=0.0, candidate_models=["chef", "cheap"])
    assert response.model == "cheap"  # the coder would win, but is not a candidate
    code, details = status_of(route, client, CODE_PROMPT, candidate_models=["coder", "gpt-9"])
    assert code == grpc.StatusCode.NOT_FOUND
    assert "gpt-9" in details


@pytest.mark.parametrize("weight", [math.nan, math.inf, -0.5])
def test_bad_cost_weight_is_invalid(live, weight):
    _, client = live
    code, details = status_of(route, client, CODE_PROMPT, cost_weight=weight)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cost_weight" in details


@pytest.mark.parametrize("prompt", ["", "   \n\t "])
def test_empty_prompt_is_invalid(live, prompt):
    _, client = live
    code, details = status_of(route, client, prompt)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt is empty" in details


def test_precomputed_embedding(live, embedder):
    _, client = live
    vector = embedder.embed(COOK_PROMPT).vector
    by_text = route(client, COOK_PROMPT)
    by_vector = client.router.Route(
        router_pb2.RouteRequest(embedding=(vector * 3.0).tolist())  # the server normalises
    )
    assert (by_vector.model, by_vector.cluster) == (by_text.model, by_text.cluster)
    assert by_vector.prompt_tokens == 0
    code, details = status_of(client.router.Route, router_pb2.RouteRequest(embedding=[0.1] * 17))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "dimension 17" in details


def test_long_prompt_is_truncated_not_rejected(live, embedder):
    _, client = live
    response = route(client, "Please review this code. " + "word " * 600, request_id="req-7")
    assert response.truncated
    assert response.prompt_tokens == embedder.max_tokens
    assert response.request_id == "req-7"
    short = route(client, CODE_PROMPT)
    assert not short.truncated
    assert 0 < short.prompt_tokens < 40


def test_route_batch_matches_route(live):
    _, client = live
    prompts = [CODE_PROMPT, COOK_PROMPT, "Bake a loaf of rye bread", "Sort a dict by value"]
    batch = client.router.RouteBatch(
        router_pb2.RouteBatchRequest(
            requests=[router_pb2.RouteRequest(prompt=p, cost_weight=0.05) for p in prompts]
        )
    )
    singles = [route(client, p, cost_weight=0.05) for p in prompts]
    assert [(r.model, r.cluster) for r in batch.responses] == [
        (r.model, r.cluster) for r in singles
    ]
    for b, s in zip(batch.responses, singles, strict=True):
        for bs, ss in zip(b.scores, s.scores, strict=True):
            assert bs.score == pytest.approx(ss.score, abs=1e-4)
    bad = router_pb2.RouteBatchRequest(
        requests=[router_pb2.RouteRequest(prompt="ok"), router_pb2.RouteRequest(prompt=" ")]
    )
    code, details = status_of(client.router.RouteBatch, bad)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1]" in details
    code, _ = status_of(client.router.RouteBatch, router_pb2.RouteBatchRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_register_errors_change_nothing(live):
    sidecar, client = live
    before = sidecar.registry.revision
    bad_results = registry_pb2.ValidationResults(
        results=[
            registry_pb2.ValidationResult(item_id="code-0", score=1),
            registry_pb2.ValidationResult(item_id="nope-1", score=1),
            registry_pb2.ValidationResult(item_id="code-0", score=0),
        ]
    )
    cases = [
        (registry_pb2.RegisterModelRequest(name="m", cost=1, results=bad_results), "unknown"),
        (registry_pb2.RegisterModelRequest(name="m", cost=-1, results=bad_results), "cost"),
        (
            registry_pb2.RegisterModelRequest(
                name="m", cost=math.nan, profile=registry_pb2.ErrorProfile(error_rates=[0.1, 0.2])
            ),
            "cost",
        ),
        (registry_pb2.RegisterModelRequest(name="m", cost=1), "either results"),
        (
            registry_pb2.RegisterModelRequest(
                name="m", cost=1, profile=registry_pb2.ErrorProfile(error_rates=[0.1, 0.2, 0.3])
            ),
            "K=2",
        ),
        (registry_pb2.RegisterModelRequest(name="bad name!", cost=1, results=bad_results), "name"),
    ]
    for request, needle in cases:
        code, details = status_of(client.registry.RegisterModel, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert needle in details
    assert "duplicate" in status_of(client.registry.RegisterModel, cases[0][0])[1]
    code, details = status_of(register, client, "coder", 1.0, "cook")
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "allow_update" in details
    assert sidecar.registry.revision == before
    assert route(client, CODE_PROMPT).model == "coder"


def test_update_and_deregister_take_effect_immediately(live):
    _, client = live
    updated = register(client, "coder", 10.0, "cook", allow_update=True)
    assert updated.create_revision == 2
    assert updated.revision == 5
    assert route(client, CODE_PROMPT, cost_weight=0.0).model != "coder"
    response = client.registry.DeregisterModel(registry_pb2.DeregisterModelRequest(name="cheap"))
    assert response.revision == 6
    assert {s.model for s in route(client, CODE_PROMPT).scores} == {"coder", "chef"}
    code, _ = status_of(
        client.registry.DeregisterModel, registry_pb2.DeregisterModelRequest(name="cheap")
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = status_of(client.registry.GetModel, registry_pb2.GetModelRequest(name="cheap"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_explicit_profile_and_model_fields(live):
    _, client = live
    model = client.registry.RegisterModel(
        registry_pb2.RegisterModelRequest(
            name="oracle/v1",
            cost=0.0,
            profile=registry_pb2.ErrorProfile(error_rates=[0.0, 0.0]),
            description="graded elsewhere",
            labels={"team": "ml"},
        )
    )
    assert model.profile_source == registry_pb2.PROFILE_SOURCE_EXPLICIT
    assert list(model.error_rates) == [0.0, 0.0]
    assert route(client, COOK_PROMPT, cost_weight=0.0).model == "oracle/v1"
    got = client.registry.GetModel(registry_pb2.GetModelRequest(name="coder"))
    assert got.profile_source == registry_pb2.PROFILE_SOURCE_RESULTS
    assert got.result_count == 20
    assert sum(got.validation_counts) == 20
    assert got.overall_error == pytest.approx(11 / 22)
    assert got.create_time.seconds > 0
    clustering = client.registry.GetClustering(registry_pb2.GetClusteringRequest())
    assert clustering.k == 2
    assert clustering.version == got.clustering_version
    assert sum(clustering.validation_counts) == 20


def test_list_models_pages(live):
    _, client = live
    first = client.registry.ListModels(registry_pb2.ListModelsRequest(page_size=2))
    assert [m.name for m in first.models] == ["cheap", "chef"]
    assert first.next_page_token
    second = client.registry.ListModels(
        registry_pb2.ListModelsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [m.name for m in second.models] == ["coder"]
    assert second.next_page_token == ""
    code, _ = status_of(client.registry.ListModels, registry_pb2.ListModelsRequest(page_size=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_registrations_survive_restart(make_sidecar, connect, topic_artifact, tmp_path):
    db = tmp_path / "restart.db"
    first = make_sidecar(artifact_dir=topic_artifact, db_path=db)
    client = connect(first.port)
    register(client, "coder", 10.0, "code")
    register(client, "chef", 8.0, "cook")
    before = route(client, COOK_PROMPT)
    first.stop(0)

    second = make_sidecar(db_path=db)  # no --artifact: the stored clustering is used
    client = connect(second.port)
    after = route(client, COOK_PROMPT)
    assert (after.model, after.revision, after.clustering_version) == (
        before.model,
        before.revision,
        before.clustering_version,
    )
    models = client.registry.ListModels(registry_pb2.ListModelsRequest()).models
    assert [m.name for m in models] == ["chef", "coder"]


def test_default_cost_weight_from_config(make_sidecar, connect, topic_artifact):
    client = connect(make_sidecar(artifact_dir=topic_artifact, cost_weight=50.0).port)
    register(client, "coder", 10.0, "code")
    register(client, "cheap", 0.1, None)
    assert route(client, CODE_PROMPT).model == "cheap"
    assert route(client, CODE_PROMPT).cost_weight == 50.0
    assert route(client, CODE_PROMPT, cost_weight=0.0).model == "coder"


def test_clustering_from_another_embedder_is_refused(embedder, topic_artifact, tmp_path):
    clustering = load_clustering(topic_artifact)
    foreign = type(clustering)(
        centroids=clustering.centroids,
        embedder_fingerprint="0" * 64,
        item_ids=clustering.item_ids,
        item_clusters=clustering.item_clusters,
    )
    save_clustering(foreign, tmp_path / "foreign")
    db = tmp_path / "refuse.db"
    config = ServerConfig(listen="127.0.0.1:0", db_path=db, artifact_dir=tmp_path / "foreign")
    with pytest.raises(ArtifactError, match="re-run `sidecar fit`"):
        serve(config, embedder=embedder)
    registry = Registry.open(db)
    assert registry.revision == 0  # refused before anything was written
    registry.close()
