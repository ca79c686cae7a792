"""The Route path without gRPC: limits, stage timing into metrics, and the table it reads."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from _helpers import synthetic_table

from sidecar import (
    Decision,
    FailedPrecondition,
    InvalidArgument,
    Query,
    Router,
    RoutingTable,
    TableHolder,
)
from sidecar._cache import EmbeddingCache
from sidecar._metrics import Metrics
from sidecar._records import ModelRecord


def _table(k: int = 3, dim: int = 384, models: int = 2) -> RoutingTable:
    return synthetic_table(k=k, dim=dim, models=models)


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
    router.route(Query(prompt="What is the capital of France?"), path="extproc")

    def value(name: str, **labels: str) -> float:
        got = metrics.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    assert value("uniroute_route_stage_seconds_count", stage="total") == 3
    assert value("uniroute_route_stage_seconds_count", stage="embed") == 1  # hits skip it
    assert value("uniroute_route_stage_seconds_count", stage="tokenise") == 1
    assert value("uniroute_route_stage_seconds_sum", stage="embed") > 0.0005
    assert value("uniroute_routes_total", model=first.model, path="route") == 2
    assert value("uniroute_routes_total", model=first.model, path="extproc") == 1
    assert value("uniroute_routes_by_cluster_total", cluster=str(first.cluster)) == 3


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


# ------------------------------------------------------------ concurrent publishing

TORN_K = 7  # clusters; centroid k of revision r is the basis vector e[(k + r) % TORN_K]
TORN_SECONDS = 2.0  # the writer publishes for this long, and at least TORN_MIN_TABLES tables
TORN_MIN_TABLES = 200
TORN_READERS = 3


def _torn_models(revision: int) -> int:
    return 2 + revision % 4  # the model count changes too, so a mixed read cannot line up


def _torn_expected(revision: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Names, Ψ (M, K) and costs (M,) of the table of ``revision``, from the formula alone."""
    m = _torn_models(revision)
    names = tuple(f"r{revision}-m{i}" for i in range(m))
    psi = np.array(
        [
            [((3 * revision + 5 * i + 7 * c) % 11) / 16 + i / 1024 for c in range(TORN_K)]
            for i in range(m)
        ],
        dtype=np.float32,
    )
    costs = np.array([1 + (revision + 2 * i) % 5 for i in range(m)], dtype=np.float32)
    return names, psi, costs


def _torn_table(revision: int, dim: int) -> RoutingTable:
    names, psi, costs = _torn_expected(revision)
    centroids = np.zeros((TORN_K, dim), dtype=np.float32)
    centroids[np.arange(TORN_K), (np.arange(TORN_K) + revision) % TORN_K] = 1.0
    records = [
        ModelRecord(
            name=name,
            cost=float(costs[i]),
            error_rates=psi[i].astype(np.float64),
            validation_counts=np.ones(TORN_K, np.int64),
            overall_error=float(psi[i].mean()),
            result_count=TORN_K,
            profile_source="explicit",
            clustering_version=f"v{revision}",
            description="",
            labels={},
            create_revision=revision,
            revision=revision,
            create_time=0.0,
            update_time=0.0,
        )
        for i, name in enumerate(names)
    ]
    return RoutingTable.build(
        revision=revision,
        clustering_version=f"v{revision}",
        embedder_fingerprint="f",
        centroids=centroids,
        models=records,
    )


def _check_torn(decision: Decision, axis: int, cost_weight: float) -> int:
    """Asserts every part of one decision comes from the table of a single revision."""
    revision = decision.table.revision
    names, psi, costs = _torn_expected(revision)
    assert decision.table.names == names, revision
    cluster = (axis - revision) % TORN_K  # the query is the basis vector e[axis]
    assert decision.cluster == cluster, (revision, decision.cluster, cluster)
    wide = costs.astype(np.float64)
    expected = (psi[:, cluster].astype(np.float64) + cost_weight * wide / wide.max()).astype(
        np.float32
    )
    assert np.allclose(decision.scores, expected, rtol=1e-6, atol=0), revision
    assert decision.mask.shape == (len(names),) and decision.mask.all(), revision
    assert decision.model in names and expected[decision.chosen] == expected.min(), revision
    got = decision.candidates()
    assert [name for name, _, _, _ in got] == list(names), revision
    explained = np.array([(e, c, s) for _, e, c, s in got])
    want = np.stack([psi[:, cluster], costs, expected], axis=1)
    assert np.allclose(explained, want, rtol=1e-6, atol=0), revision
    return revision


def test_concurrent_publishes_never_give_a_torn_decision(embedder):
    """Readers route while a writer publishes hundreds of tables; no decision mixes two.

    Every value in the table of revision r (centroids, Ψ, costs, names, model
    count) is a function of r, so a decision that read parts of two tables
    cannot agree with the table it reports. A short GIL switch interval makes
    the threads interleave inside route() and route_batch(). Queries carry their
    embedding, so no ONNX run slows the readers down.
    """
    dim = embedder.dim
    holder = TableHolder(_torn_table(1, dim))
    router = Router(holder, embedder)
    published = {1: holder.current}
    done = threading.Event()
    errors: list[str] = []
    seen: list[set[int]] = [set() for _ in range(TORN_READERS)]
    counts = [0] * TORN_READERS

    def writer() -> None:
        revision = 1
        deadline = time.monotonic() + TORN_SECONDS
        try:
            while not done.is_set() and (revision < TORN_MIN_TABLES or time.monotonic() < deadline):
                revision += 1
                table = _torn_table(revision, dim)
                published[revision] = table
                assert holder.publish(table)
                time.sleep(0)  # let the readers in between two publishes
        except Exception as exc:
            errors.append(f"writer: {exc!r}")
        finally:
            done.set()

    def reader(n: int) -> None:
        step = 0
        try:
            while not done.is_set():
                step += 1
                axis, cost_weight = (n + step) % TORN_K, (0.0, 0.25, 1.0)[step % 3]
                vector = np.zeros(dim)
                vector[axis] = 1.0
                query = Query(embedding=vector.tolist(), cost_weight=cost_weight)
                if step % 4:
                    decisions = [router.route(query)]
                else:  # a batch decides every query against one and the same table
                    decisions = router.route_batch([query] * 3)
                    assert len({id(d.table) for d in decisions}) == 1
                for decision in decisions:
                    seen[n].add(_check_torn(decision, axis, cost_weight))
                    assert decision.table is published[decision.table.revision]
                    counts[n] += 1
        except Exception as exc:  # AssertionError included: reported below, not lost
            errors.append(f"reader {n} at step {step}: {exc!r}")
            done.set()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        threads = [threading.Thread(target=writer)]
        threads += [threading.Thread(target=reader, args=(n,)) for n in range(TORN_READERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(old_interval)
    assert errors == [], errors[:3]
    revisions = set[int]().union(*seen)
    print(f"{sum(counts)} decisions over {len(revisions)} of {len(published)} revisions")
    assert len(revisions) > 50, "the readers hardly raced the writer"
    assert all(counts), counts


class _NaNEmbedder:
    """An embedder whose model file is broken: every vector comes back NaN."""

    def __init__(self, real) -> None:
        self.real = real
        self.dim = real.dim
        self.fingerprint = real.fingerprint

    def encode(self, text):
        return self.real.encode(text)

    def run(self, ids, mask):
        return np.full((ids.shape[0], self.dim), np.nan, dtype=np.float32)

    def embed(self, text):
        return self.real.embed(text)

    def embed_batch(self, texts):
        return self.real.embed_batch(texts)


def test_a_nan_embedding_is_an_error_not_cluster_0(embedder):
    """A NaN vector used to go silently to cluster 0 and route as if it were a prompt there."""
    from sidecar import EmbeddingFailed

    router = Router(TableHolder(_table()), _NaNEmbedder(embedder))
    with pytest.raises(EmbeddingFailed, match="non-finite"):
        router.route(Query(prompt="Write a Python function that reverses a list."))
    with pytest.raises(EmbeddingFailed, match=r"requests\[0\]"):
        router.route_batch([Query(prompt="Reverse a list in Python.")])
    good = Router(TableHolder(_table()), embedder)
    assert good.route(Query(prompt="Reverse a list in Python.")).model in ("m0", "m1")
