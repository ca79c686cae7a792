"""The Route path without gRPC: limits, stage timing into metrics, and the table it reads."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar import FailedPrecondition, InvalidArgument, Query, Router, RoutingTable, TableHolder
from sidecar._cache import EmbeddingCache
from sidecar._metrics import Metrics
from sidecar._registry import ModelRecord


def _table(k: int = 3, dim: int = 384, models: int = 2) -> RoutingTable:
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((k, dim)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    records = [
        ModelRecord(
            f"m{i}",
            float(i + 1),
            rng.random(k),
            np.zeros(k, np.int64),
            0.5,
            0,
            "results",
            "v1",
            "",
            {},
            i + 1,
            i + 1,
            0.0,
            0.0,
        )
        for i in range(models)
    ]
    return RoutingTable.build(
        revision=7,
        clustering_version="v1",
        embedder_fingerprint="f",
        centroids=centroids,
        models=records,
    )


def test_prompt_byte_cap_states_the_limit(embedder):
    router = Router(TableHolder(_table()), embedder, max_prompt_bytes=1000)
    router.route(Query(prompt="é" * 250))  # 500 bytes: fine
    with pytest.raises(InvalidArgument, match="1200 bytes, over the limit of 1000 bytes"):
        router.route(Query(prompt="é" * 600))


def test_batch_size_cap(embedder):
    router = Router(TableHolder(_table()), embedder, max_batch_requests=2)
    assert len(router.route_batch([Query(prompt="a"), Query(prompt="b")])) == 2
    with pytest.raises(InvalidArgument, match="at most 2 requests"):
        router.route_batch([Query(prompt="a")] * 3)


def test_stage_times_reach_metrics(embedder):
    metrics = Metrics()
    cache: EmbeddingCache[object] = EmbeddingCache(8)
    router = Router(TableHolder(_table()), embedder, metrics=metrics, cache=cache)  # type: ignore[arg-type]
    first = router.route(Query(prompt="What is the capital of France?"))
    router.route(Query(prompt="What is the capital of France?"))  # a cache hit

    def value(name: str, **labels: str) -> float:
        got = metrics.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    assert value("uniroute_route_stage_seconds_count", stage="total") == 2
    assert value("uniroute_route_stage_seconds_count", stage="embed") == 1  # the hit skips it
    assert value("uniroute_route_stage_seconds_count", stage="tokenise") == 1
    assert value("uniroute_route_stage_seconds_sum", stage="embed") > 0.0005
    assert value("uniroute_routes_total", model=first.model) == 2
    assert value("uniroute_routes_by_cluster_total", cluster=str(first.cluster)) == 2


def test_no_table_and_empty_table(embedder):
    with pytest.raises(FailedPrecondition, match="no clustering"):
        Router(TableHolder(), embedder).route(Query(prompt="hi"))
    with pytest.raises(FailedPrecondition, match="no models"):
        Router(TableHolder(_table(models=0)), embedder).route(Query(prompt="hi"))


def test_each_request_uses_one_table_even_if_a_new_one_is_published(embedder):
    holder = TableHolder(_table())
    router = Router(holder, embedder)
    decision = router.route(Query(prompt="hello"))
    newer = _table(models=3)
    holder.publish(
        RoutingTable.build(
            revision=8,
            clustering_version="v1",
            embedder_fingerprint="f",
            centroids=newer.centroids,
            models=[],
        )
    )
    assert decision.table.revision == 7
    assert decision.model in decision.table.names
