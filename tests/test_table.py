"""The routing table snapshot and its RCU holder."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sidecar._clustering import Clustering, normalize_rows
from sidecar._errors import InvalidArgument, NotFound
from sidecar._kernels import route
from sidecar._records import ActiveClustering, ModelRecord, Snapshot
from sidecar._registry import Registry
from sidecar._store import open_store
from sidecar._table import RoutingTable, TableHolder

K, D = 3, 8


def centroids() -> np.ndarray:
    return normalize_rows(np.random.default_rng(0).standard_normal((K, D)))


def record(
    name: str, cost: float, rates: list[float], version: str = "v1", revision: int = 1
) -> ModelRecord:
    return ModelRecord(
        name=name,
        cost=cost,
        error_rates=np.asarray(rates, dtype=np.float64),
        validation_counts=np.zeros(len(rates), dtype=np.int64),
        overall_error=float(np.mean(rates)),
        result_count=0,
        profile_source="explicit",
        clustering_version=version,
        description="",
        labels={},
        create_revision=revision,
        revision=revision,
        create_time=0.0,
        update_time=0.0,
    )


MODELS = [
    record("zeta", 3.0, [0.1, 0.2, 0.3], revision=2),
    record("stale", 9.0, [0.9, 0.9, 0.9], version="old", revision=3),
    record("alpha", 0.5, [0.4, 0.123456789, 0.6], revision=4),
]


def build(models: list[ModelRecord] = MODELS, revision: int = 7, **kw: object) -> RoutingTable:
    args: dict[str, object] = {
        "revision": revision,
        "clustering_version": "v1",
        "embedder_fingerprint": "fp",
        "centroids": centroids(),
        "models": models,
    }
    args.update(kw)
    return RoutingTable.build(**args)  # type: ignore[arg-type]


def test_build_shapes_and_dtypes() -> None:
    t = build()
    assert t.revision == 7
    assert t.clustering_version == "v1"
    assert t.embedder_fingerprint == "fp"
    assert t.names == ("zeta", "alpha")  # given order kept; "stale" is excluded
    assert t.size == 2 and t.k == K and t.dim == D
    assert t.psi.shape == (2, K) and t.psi.dtype == np.float32
    assert t.psi.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(
        t.psi, np.array([[0.1, 0.2, 0.3], [0.4, 0.123456789, 0.6]], dtype=np.float32)
    )
    assert t.costs.shape == (2,) and t.costs.dtype == np.float32
    assert t.costs.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(t.costs, np.array([3.0, 0.5], dtype=np.float32))
    assert t.centroids.dtype == np.float32 and t.centroids.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(t.centroids, centroids())
    assert dict(t.index) == {"zeta": 0, "alpha": 1}
    assert t.all_candidates.dtype == np.bool_
    assert t.all_candidates.tolist() == [True, True]


def test_build_converts_centroids_to_contiguous_float32() -> None:
    c64 = np.asfortranarray(centroids().astype(np.float64))
    t = build(centroids=c64)
    assert t.centroids.dtype == np.float32 and t.centroids.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(t.centroids, c64, atol=1e-7)


def test_build_without_matching_models() -> None:
    t = build(models=[MODELS[1]])
    assert t.size == 0
    assert t.names == ()
    assert t.psi.shape == (0, K) and t.psi.dtype == np.float32
    assert t.costs.shape == (0,) and t.costs.dtype == np.float32
    assert t.all_candidates.shape == (0,)


def test_build_accepts_an_iterator() -> None:
    t = build(models=iter(MODELS))  # type: ignore[arg-type]
    assert t.names == ("zeta", "alpha")


def test_table_is_immutable() -> None:
    t = build()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.revision = 8  # type: ignore[misc]


@pytest.mark.parametrize("name", ["centroids", "psi", "costs", "all_candidates"])
def test_every_array_is_read_only(name: str) -> None:
    t = build()
    array = getattr(t, name)
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[...] = array[...]
    with pytest.raises(ValueError):
        array.flags.writeable = True  # an own, frozen array cannot be thawed


def test_index_is_read_only() -> None:
    t = build()
    with pytest.raises(TypeError):
        t.index["new"] = 5  # type: ignore[index]
    assert dict(t.index) == {"zeta": 0, "alpha": 1}


def test_build_copies_its_inputs() -> None:
    source = centroids()
    rates = [0.1, 0.2, 0.3]
    model = record("m", 1.0, rates)
    t = build(models=[model], centroids=source)
    source[0, 0] = 99.0
    model.error_rates[0] = 0.99
    assert t.centroids[0, 0] != 99.0
    assert t.psi[0, 0] == np.float32(0.1)
    assert source.flags.writeable  # the caller's arrays are left as they were


def test_direct_construction_is_frozen_too() -> None:
    # RoutingTable(...) without build(): the arrays are still copied and frozen.
    psi = np.zeros((1, K), dtype=np.float32)
    t = RoutingTable(
        revision=1,
        clustering_version="v1",
        embedder_fingerprint="fp",
        centroids=centroids(),
        psi=psi,
        costs=np.ones(1, dtype=np.float32),
        names=("m",),
        index={"m": 0},
        all_candidates=np.ones(1, dtype=np.bool_),
    )
    for array in (t.centroids, t.psi, t.costs, t.all_candidates):
        assert not array.flags.writeable
    assert psi.flags.writeable and t.psi is not psi
    with pytest.raises(TypeError):
        t.index["x"] = 1  # type: ignore[index]
    assert t.labels == ({},)  # no labels given: one empty, read-only map per model


def test_labels_travel_with_their_rows_read_only(reg: Registry) -> None:
    reg.activate_clustering(clustering())
    reg.register_model("m-a", 1.0, error_rates=[0.3, 0.2, 0.1], labels={"upstream_model": "a-1"})
    reg.register_model("m-b", 2.0, error_rates=[0.3, 0.2, 0.1])
    t = RoutingTable.from_snapshot(reg.snapshot())
    assert t is not None
    assert [dict(m) for m in t.labels] == [{"upstream_model": "a-1"}, {}]
    with pytest.raises(TypeError):
        t.labels[0]["upstream_model"] = "x"  # type: ignore[index]


def test_from_snapshot_arrays_are_read_only(reg: Registry) -> None:
    reg.activate_clustering(clustering())
    reg.register_model("m-a", 1.0, error_rates=[0.3, 0.2, 0.1])
    t = RoutingTable.from_snapshot(reg.snapshot())
    assert t is not None
    for array in (t.centroids, t.psi, t.costs, t.all_candidates):
        assert not array.flags.writeable


def test_the_frozen_arrays_feed_the_kernel_as_they_are() -> None:
    t = build()
    x = np.ascontiguousarray(t.centroids[1:2])
    scores = np.empty((1, t.size), dtype=np.float32)
    clusters = np.empty(1, dtype=np.int64)
    chosen = np.empty(1, dtype=np.int64)
    masks = t.all_candidates[None, :]  # one Route: a 1 x M view, no copy
    route(x, t.centroids, t.psi, t.costs, np.zeros(1), masks, scores, clusters, chosen)
    assert clusters[0] == 1
    assert chosen[0] == 1  # λ = 0, cluster 1: alpha's 0.123456789 beats zeta's 0.2
    np.testing.assert_array_equal(scores[0], t.psi[:, 1])


@pytest.mark.parametrize("cost", [1e39, float("inf"), float("nan"), -float("inf")])
def test_a_cost_that_is_not_a_finite_float32_is_refused(cost: float) -> None:
    with pytest.raises(InvalidArgument, match="cost"):
        build(models=[record("big", cost, [0.1, 0.2, 0.3])])


def test_the_largest_float32_cost_is_accepted() -> None:
    top = float(np.finfo(np.float32).max)
    t = build(models=[record("big", top, [0.1, 0.2, 0.3])])
    assert np.isfinite(t.costs).all()


# ------------------------------------------------------------------------ from_snapshot


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(open_store(tmp_path / "r.db"))
    yield r
    r.close()


def clustering() -> Clustering:
    return Clustering(
        centroids=centroids(),
        embedder_fingerprint="fp-x",
        item_ids=("a", "b", "c"),
        item_clusters=np.array([0, 1, 2], dtype=np.int64),
    )


def test_from_snapshot_without_clustering(reg: Registry) -> None:
    assert RoutingTable.from_snapshot(reg.snapshot()) is None
    assert RoutingTable.from_snapshot(Snapshot(revision=5, clustering=None)) is None


def test_from_snapshot_of_registry(reg: Registry) -> None:
    c = clustering()
    reg.activate_clustering(c)
    reg.register_model("m-b", 2.0, results=[("a", 1.0), ("b", 0.0)])
    reg.register_model("m-a", 1.0, error_rates=[0.3, 0.2, 0.1])
    reg.register_model("m-c", 0.25, results=[("c", 1.0)])
    snap = reg.snapshot()
    t = RoutingTable.from_snapshot(snap)
    assert t is not None
    assert t.revision == snap.revision == 4
    assert t.clustering_version == c.version
    assert t.embedder_fingerprint == "fp-x"
    assert t.names == ("m-b", "m-a", "m-c")  # registration order, not name order
    expected = np.stack([m.error_rates for m in snap.models]).astype(np.float32)
    np.testing.assert_array_equal(t.psi, expected)
    # m-b: a right in cluster 0 -> 1/3, b wrong in cluster 1 -> 2/3, cluster 2 -> overall 2/4.
    np.testing.assert_allclose(t.psi[0], [1 / 3, 2 / 3, 0.5], atol=1e-6)
    np.testing.assert_array_equal(t.costs, np.array([2.0, 1.0, 0.25], dtype=np.float32))
    np.testing.assert_array_equal(t.centroids, c.centroids)


def test_from_snapshot_excludes_other_clustering_versions() -> None:
    c = clustering()
    models = (
        record("keep-1", 1.0, [0.1, 0.1, 0.1], version=c.version),
        record("old", 1.0, [0.2, 0.2, 0.2], version="something-else"),
        record("keep-2", 2.0, [0.3, 0.3, 0.3], version=c.version),
    )
    snap = Snapshot(revision=9, clustering=ActiveClustering(c, 1, 0.0), models=models)
    t = RoutingTable.from_snapshot(snap)
    assert t is not None
    assert t.names == ("keep-1", "keep-2")
    assert t.psi.shape == (2, K)
    np.testing.assert_array_equal(t.costs, np.array([1.0, 2.0], dtype=np.float32))


# ----------------------------------------------------------------------- candidate_mask


def test_candidate_mask_known_names() -> None:
    t = build()
    m = t.candidate_mask(["alpha"])
    assert m.dtype == np.bool_ and m.tolist() == [False, True]
    assert t.candidate_mask(["alpha", "zeta", "alpha"]).tolist() == [True, True]
    assert t.candidate_mask([]).tolist() == [False, False]
    assert t.candidate_mask(iter(["zeta"])).tolist() == [True, False]


def test_candidate_mask_unknown_names() -> None:
    t = build()
    with pytest.raises(NotFound) as info:
        t.candidate_mask(["zeta", "nope", "stale", "nope"])
    msg = str(info.value)
    assert "'nope', 'stale'" in msg  # sorted, deduplicated, excluded models count as unknown
    assert msg.count("'nope'") == 1
    assert "registered: zeta, alpha" in msg


def test_candidate_mask_on_empty_table() -> None:
    t = build(models=[])
    with pytest.raises(NotFound, match="registered: none"):
        t.candidate_mask(["x"])


# -------------------------------------------------------------------------- TableHolder


def test_holder_starts_empty_or_with_a_table() -> None:
    assert TableHolder().current is None
    t = build()
    assert TableHolder(t).current is t


def test_holder_publish_ordering() -> None:
    holder = TableHolder()
    t5 = build(revision=5)
    assert holder.publish(t5) is True and holder.current is t5
    t4 = build(revision=4)
    assert holder.publish(t4) is False
    assert holder.current is t5
    t5b = build(revision=5)
    assert holder.publish(t5b) is True and holder.current is t5b
    t9 = build(revision=9)
    assert holder.publish(t9) is True and holder.current is t9
    assert holder.publish(build(revision=0)) is False
    assert holder.current is t9


def test_holder_concurrent_publishers_end_at_the_newest() -> None:
    holder = TableHolder()
    tables = [build(revision=r) for r in range(200)]
    random.Random(0).shuffle(tables)
    chunks = [tables[i::4] for i in range(4)]
    start = threading.Barrier(4)

    def publish_all(chunk: list[RoutingTable]) -> None:
        start.wait()
        for t in chunk:
            holder.publish(t)

    threads = [threading.Thread(target=publish_all, args=(c,)) for c in chunks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert holder.current is not None and holder.current.revision == 199
