"""The SQLite registry: revisions, validation, re-clustering, listeners, persistence, threads."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from sidecar._clustering import Clustering, normalize_rows
from sidecar._errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from sidecar._profiles import MAX_DESCRIPTION, MAX_LABELS
from sidecar._records import SOURCE_EXPLICIT, SOURCE_RESULTS, ModelRecord
from sidecar._registry import Registry


class Event(NamedTuple):
    """One entry of the event log, without its payload."""

    revision: int
    type: str
    kind: str
    key: str


def events_after(reg: Registry, revision: int) -> list[Event]:
    return [
        Event(change_set.revision, c.type, c.kind, c.key)
        for change_set in reg.changes_after(revision)
        for c in change_set.changes
    ]


D = 8
ITEMS = tuple(f"i{n}" for n in range(9))


def clustering_a() -> Clustering:
    """K=3, D=8; i0-i2 -> 0, i3-i5 -> 1, i6-i8 -> 2."""
    rng = np.random.default_rng(1)
    return Clustering(
        centroids=normalize_rows(rng.standard_normal((3, D))),
        embedder_fingerprint="fp-a",
        item_ids=ITEMS,
        item_clusters=np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int64),
        info={"name": "A"},
    )


def clustering_b() -> Clustering:
    """K=2 with a changed validation set: i8 is gone and j0 is new."""
    rng = np.random.default_rng(2)
    return Clustering(
        centroids=normalize_rows(rng.standard_normal((2, D))),
        embedder_fingerprint="fp-a",
        item_ids=("i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "j0"),
        item_clusters=np.array([1, 1, 0, 0, 0, 1, 1, 0, 0], dtype=np.int64),
    )


# Model "res": errors per item are 1 - score.
RES = [
    ("i0", 1.0),
    ("i1", 0.0),
    ("i2", 0.0),
    ("i3", 1.0),
    ("i4", 1.0),
    ("i5", 0.5),
    ("i6", 0.0),
    ("i7", 0.0),
    ("i8", 1.0),
]
# Under A: c0 err 2/3 -> 3/5; c1 err 0.5/3 -> 1.5/5; c2 err 2/3 -> 3/5; overall 4.5/9 -> 5.5/11.
RES_PSI_A = [0.6, 0.3, 0.6]
RES_OVERALL_A = 0.5
# Under B (i8 ignored): c0 = i2,i3,i4,i7 err 2/4 -> 3/6; c1 = i0,i1,i5,i6 err 2.5/4 -> 3.5/6;
# overall 4.5/8 -> 5.5/10.
RES_PSI_B = [0.5, 3.5 / 6]
RES_OVERALL_B = 0.55

# Model "res2": only three items.
RES2 = [("i0", 0.0), ("i2", 1.0), ("i3", 1.0)]
# Under A: c0 err 1/2 -> 2/4; c1 err 0/1 -> 1/3; c2 empty -> overall 1/3 -> 2/5.
RES2_PSI_A = [0.5, 1 / 3, 0.4]
# Under B: c0 = i2,i3 err 0/2 -> 1/4; c1 = i0 err 1/1 -> 2/3; overall 2/5.
RES2_PSI_B = [0.25, 2 / 3]


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    r = Registry.open(tmp_path / "r.db")
    yield r
    r.close()


@pytest.fixture
def active(reg: Registry) -> Registry:
    reg.activate_clustering(clustering_a())
    return reg


def state(reg: Registry) -> tuple[Any, ...]:
    """Everything observable about the store, for before/after comparisons."""
    snap = reg.snapshot()
    models = tuple(
        (
            m.name,
            m.cost,
            m.error_rates.tolist(),
            m.validation_counts.tolist(),
            m.overall_error,
            m.result_count,
            m.profile_source,
            m.clustering_version,
            m.description,
            dict(m.labels),
            m.create_revision,
            m.revision,
            m.create_time,
            m.update_time,
        )
        for m in snap.models
    )
    results = tuple(sorted(reg.results_of(m.name).items()) for m in snap.models)
    version = snap.clustering.clustering.version if snap.clustering else None
    return snap.revision, version, models, results, tuple(events_after(reg, 0))


# ------------------------------------------------------------------------- clustering


def test_empty_registry(reg: Registry) -> None:
    assert reg.revision == 0
    assert reg.active_clustering() is None
    snap = reg.snapshot()
    assert snap.revision == 0 and snap.clustering is None and snap.models == ()
    assert events_after(reg, 0) == []
    assert reg.list_models() == ([], 0)


def test_creates_parent_directories(tmp_path: Path) -> None:
    r = Registry.open(tmp_path / "a" / "b" / "r.db")
    try:
        assert (tmp_path / "a" / "b" / "r.db").exists()
    finally:
        r.close()


def test_activate_clustering(reg: Registry) -> None:
    c = clustering_a()
    assert reg.activate_clustering(c) == 1
    assert reg.revision == 1
    act = reg.active_clustering()
    assert act is not None
    assert act.revision == 1
    assert act.clustering.version == c.version
    assert act.clustering.compute_version() == c.version
    np.testing.assert_array_equal(act.clustering.centroids, c.centroids)
    assert act.clustering.centroids.dtype == np.float32
    assert act.clustering.centroids.flags["C_CONTIGUOUS"]
    assert act.clustering.item_ids == ITEMS
    np.testing.assert_array_equal(act.clustering.item_clusters, c.item_clusters)
    assert act.clustering.embedder_fingerprint == "fp-a"
    assert act.clustering.info == {"name": "A"}
    assert events_after(reg, 0) == [Event(1, "put", "clustering", c.version)]


def test_reactivating_same_version_is_a_noop(reg: Registry) -> None:
    calls: list[int] = []
    reg.activate_clustering(clustering_a())
    reg.add_listener(calls.append)
    before = state(reg)
    assert reg.activate_clustering(clustering_a()) == 1
    assert reg.revision == 1
    assert state(reg) == before
    assert calls == []


# ----------------------------------------------------------------------------- models


def test_register_from_results(active: Registry) -> None:
    rec = active.register_model(
        "org/res-1", 2.5, results=RES, description="desc", labels={"team": "x"}
    )
    assert isinstance(rec, ModelRecord)
    assert rec.name == "org/res-1"
    assert rec.cost == 2.5
    np.testing.assert_allclose(rec.error_rates, RES_PSI_A, atol=1e-12)
    assert rec.error_rates.dtype == np.float64
    assert rec.validation_counts.tolist() == [3, 3, 3]
    assert rec.validation_counts.dtype == np.int64
    assert rec.overall_error == pytest.approx(RES_OVERALL_A)
    assert rec.result_count == 9
    assert rec.profile_source == SOURCE_RESULTS
    assert rec.clustering_version == clustering_a().version
    assert rec.description == "desc"
    assert dict(rec.labels) == {"team": "x"}
    assert rec.create_revision == 2 and rec.revision == 2
    assert rec.update_time == rec.create_time
    assert active.revision == 2
    assert active.results_of("org/res-1") == dict(RES)
    got = active.get_model("org/res-1")
    np.testing.assert_array_equal(got.error_rates, rec.error_rates)
    assert got.revision == 2


def test_register_with_empty_cluster(active: Registry) -> None:
    rec = active.register_model("res2", 1.0, results=RES2)
    np.testing.assert_allclose(rec.error_rates, RES2_PSI_A, atol=1e-12)
    assert rec.validation_counts.tolist() == [2, 1, 0]
    assert rec.overall_error == pytest.approx(0.4)
    assert rec.result_count == 3


def test_register_explicit_profile(active: Registry) -> None:
    rec = active.register_model("exp", 0.0, error_rates=[0.1, 0.2, 0.6])
    np.testing.assert_allclose(rec.error_rates, [0.1, 0.2, 0.6])
    assert rec.validation_counts.tolist() == [0, 0, 0]
    assert rec.result_count == 0
    assert rec.overall_error == pytest.approx(0.3)
    assert rec.profile_source == SOURCE_EXPLICIT
    assert active.results_of("exp") == {}


def test_revisions_increase_and_events_are_ordered(active: Registry) -> None:
    revs = [
        active.register_model("m1", 1.0, results=RES).revision,
        active.register_model("m2", 1.0, results=RES2).revision,
        active.register_model("m1", 3.0, results=RES2, allow_update=True).revision,
        active.deregister_model("m2"),
        active.register_model("m3", 1.0, error_rates=[0.5, 0.5, 0.5]).revision,
    ]
    assert revs == [2, 3, 4, 5, 6]
    assert active.revision == 6
    v = clustering_a().version
    assert events_after(active, 0) == [
        Event(1, "put", "clustering", v),
        Event(2, "put", "model", "m1"),
        Event(3, "put", "model", "m2"),
        Event(4, "put", "model", "m1"),
        Event(5, "delete", "model", "m2"),
        Event(6, "put", "model", "m3"),
    ]
    assert events_after(active, 4) == [
        Event(5, "delete", "model", "m2"),
        Event(6, "put", "model", "m3"),
    ]
    assert events_after(active, 6) == []


def test_register_without_clustering(reg: Registry) -> None:
    with pytest.raises(FailedPrecondition):
        reg.register_model("m", 1.0, results=RES)
    with pytest.raises(FailedPrecondition):
        reg.register_model("m", 1.0, error_rates=[0.1])
    assert reg.revision == 0
    assert reg.snapshot().models == ()
    assert events_after(reg, 0) == []


def test_duplicate_name_without_allow_update(active: Registry) -> None:
    active.register_model("m", 1.0, results=RES, description="first")
    before = state(active)
    with pytest.raises(AlreadyExists, match="allow_update"):
        active.register_model("m", 9.0, results=RES2, description="second")
    with pytest.raises(AlreadyExists):
        active.register_model("m", 9.0, error_rates=[0.0, 0.0, 0.0])
    assert state(active) == before
    assert active.results_of("m") == dict(RES)


def test_allow_update_replaces_results(active: Registry) -> None:
    first = active.register_model("m", 1.0, results=RES, labels={"a": "1"})
    active.register_model("other", 1.0, results=RES)
    second = active.register_model(
        "m", 4.0, results=RES2, description="v2", labels={"b": "2"}, allow_update=True
    )
    assert second.create_revision == first.create_revision == 2
    assert second.create_time == first.create_time
    assert second.revision == 4
    assert second.update_time >= first.update_time
    assert second.cost == 4.0
    assert second.description == "v2"
    assert dict(second.labels) == {"b": "2"}
    np.testing.assert_allclose(second.error_rates, RES2_PSI_A, atol=1e-12)
    assert second.result_count == 3
    # The old per-item results are gone, not merged.
    assert active.results_of("m") == dict(RES2)
    # Registration order is kept by create_revision.
    assert [m.name for m in active.snapshot().models] == ["m", "other"]


def test_allow_update_on_new_name_creates(active: Registry) -> None:
    rec = active.register_model("new", 1.0, results=RES, allow_update=True)
    assert rec.create_revision == rec.revision == 2


def test_update_from_results_to_explicit_drops_results(active: Registry) -> None:
    active.register_model("m", 1.0, results=RES)
    rec = active.register_model("m", 1.0, error_rates=[0.2, 0.2, 0.2], allow_update=True)
    assert rec.profile_source == SOURCE_EXPLICIT
    assert active.results_of("m") == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"name": "has space"}, id="space-in-name"),
        pytest.param({"name": "x" * 129}, id="long-name"),
        pytest.param({"name": "bad\n"}, id="trailing-newline"),
        pytest.param({"name": "ünicode"}, id="non-ascii-name"),
        pytest.param({"name": "semi;colon"}, id="semicolon"),
        pytest.param({"cost": -0.01}, id="negative-cost"),
        pytest.param({"cost": math.nan}, id="nan-cost"),
        pytest.param({"cost": math.inf}, id="inf-cost"),
        pytest.param({"results": [("i0", 1.0), ("nope", 0.0)]}, id="unknown-item"),
        pytest.param({"results": [("i0", 1.0), ("i0", 0.0)]}, id="duplicate-item"),
        pytest.param({"results": [("i0", 1.5)]}, id="score-out-of-range"),
        pytest.param({"results": [("i0", math.nan)]}, id="nan-score"),
        pytest.param({"results": []}, id="empty-results"),
        pytest.param({"error_rates": [0.1, 0.2, 0.3]}, id="both"),
        pytest.param({"results": None}, id="neither"),
        pytest.param({"results": None, "error_rates": [0.1, 0.2]}, id="profile-wrong-k"),
        pytest.param({"results": None, "error_rates": [0.1, 0.2, 1.2]}, id="profile-range"),
        pytest.param(
            {"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}}, id="too-many-labels"
        ),
        pytest.param({"labels": {"": "v"}}, id="empty-label-key"),
        pytest.param({"labels": {"k" * 129: "v"}}, id="long-label-key"),
        pytest.param({"labels": {"k": "v" * 129}}, id="long-label-value"),
        pytest.param({"description": "d" * (MAX_DESCRIPTION + 1)}, id="long-description"),
    ],
)
def test_invalid_registration_changes_nothing(active: Registry, kwargs: dict[str, Any]) -> None:
    active.register_model("keep", 1.0, results=RES)
    calls: list[int] = []
    active.add_listener(calls.append)
    before = state(active)
    args: dict[str, Any] = {"name": "new-model", "cost": 1.0, "results": RES}
    args.update(kwargs)
    name, cost = args.pop("name"), args.pop("cost")
    with pytest.raises(InvalidArgument):
        active.register_model(name, cost, **args)
    assert state(active) == before
    assert calls == []


def test_invalid_update_keeps_old_record(active: Registry) -> None:
    active.register_model("m", 1.0, results=RES)
    before = state(active)
    with pytest.raises(InvalidArgument):
        active.register_model("m", 1.0, results=[("nope", 1.0)], allow_update=True)
    assert state(active) == before


def test_field_limits_are_inclusive(active: Registry) -> None:
    rec = active.register_model(
        "A" * 128,
        0.0,
        results=RES,
        description="d" * MAX_DESCRIPTION,
        labels={f"k{i}": "v" * 128 for i in range(MAX_LABELS)},
    )
    assert len(rec.labels) == MAX_LABELS
    assert rec.cost == 0.0
    for name in ("a.b_c:d/e@f+g-h", "0"):
        assert active.register_model(name, 1.0, results=RES).name == name


def test_deregister(active: Registry, tmp_path: Path) -> None:
    active.register_model("a", 1.0, results=RES)
    active.register_model("b", 1.0, results=RES2)
    assert active.deregister_model("a") == 4
    assert active.revision == 4
    with pytest.raises(NotFound):
        active.get_model("a")
    with pytest.raises(NotFound):
        active.results_of("a")
    assert [m.name for m in active.snapshot().models] == ["b"]
    assert events_after(active, 3) == [Event(4, "delete", "model", "a")]
    # The per-item results went with the model.
    with closing(sqlite3.connect(tmp_path / "r.db")) as db:
        rows = db.execute("SELECT model, COUNT(*) FROM model_results GROUP BY model").fetchall()
    assert rows == [("b", 3)]
    # The name can be registered again afresh.
    again = active.register_model("a", 1.0, results=RES2)
    assert again.create_revision == 5
    assert active.results_of("a") == dict(RES2)


def test_deregister_unknown(active: Registry) -> None:
    active.register_model("a", 1.0, results=RES)
    before = state(active)
    with pytest.raises(NotFound, match="'ghost'"):
        active.deregister_model("ghost")
    assert state(active) == before


def test_get_and_results_of_unknown(active: Registry) -> None:
    with pytest.raises(NotFound):
        active.get_model("ghost")
    with pytest.raises(NotFound):
        active.results_of("ghost")


def test_list_models_pagination_and_snapshot_order(active: Registry) -> None:
    order = ["m05", "m01", "m03", "m02", "m04"]
    for name in order:
        active.register_model(name, 1.0, results=RES)
    page, rev = active.list_models(limit=2)
    assert [m.name for m in page] == ["m01", "m02"] and rev == 6
    page, _ = active.list_models(after="m02", limit=2)
    assert [m.name for m in page] == ["m03", "m04"]
    page, _ = active.list_models(after="m04", limit=2)
    assert [m.name for m in page] == ["m05"]
    page, _ = active.list_models(after="m05", limit=2)
    assert page == []
    page, _ = active.list_models(after="m025")
    assert [m.name for m in page] == ["m03", "m04", "m05"]
    all_models, _ = active.list_models()
    assert [m.name for m in all_models] == sorted(order)
    snap = active.snapshot()
    assert snap.revision == 6
    assert [m.name for m in snap.models] == order
    assert [m.create_revision for m in snap.models] == [2, 3, 4, 5, 6]


# ----------------------------------------------------------------------- re-clustering


def test_new_clustering_recomputes_in_one_revision(active: Registry) -> None:
    active.register_model("res", 1.0, results=RES)
    active.register_model("exp", 0.5, error_rates=[0.1, 0.2, 0.3])
    active.register_model("res2", 2.0, results=RES2)
    calls: list[int] = []
    active.add_listener(calls.append)
    b = clustering_b()

    rev = active.activate_clustering(b)

    assert rev == 5 and active.revision == 5
    assert calls == [5]
    assert events_after(active, 4) == [
        Event(5, "put", "clustering", b.version),
        Event(5, "put", "model", "res"),
        Event(5, "delete", "model", "exp"),
        Event(5, "put", "model", "res2"),
    ]
    act = active.active_clustering()
    assert act is not None and act.clustering.version == b.version and act.revision == 5
    snap = active.snapshot()
    assert [m.name for m in snap.models] == ["res", "res2"]
    res, res2 = snap.models
    np.testing.assert_allclose(res.error_rates, RES_PSI_B, atol=1e-12)
    assert res.validation_counts.tolist() == [4, 4]
    assert res.overall_error == pytest.approx(RES_OVERALL_B)
    assert res.result_count == 8
    np.testing.assert_allclose(res2.error_rates, RES2_PSI_B, atol=1e-12)
    assert res2.validation_counts.tolist() == [2, 1]
    assert res2.overall_error == pytest.approx(0.4)
    for m in snap.models:
        assert m.clustering_version == b.version
        assert m.revision == 5
    assert (res.create_revision, res2.create_revision) == (2, 4)
    assert res.cost == 1.0 and res2.cost == 2.0
    with pytest.raises(NotFound):
        active.get_model("exp")
    # Stored results are kept whole, including the item the new clustering dropped.
    assert active.results_of("res") == dict(RES)

    # Explicit profiles now need K=2, and results may use the new item.
    with pytest.raises(InvalidArgument, match="K=2"):
        active.register_model("exp", 0.5, error_rates=[0.1, 0.2, 0.3])
    with pytest.raises(InvalidArgument, match="unknown"):
        active.register_model("r3", 1.0, results=[("i8", 1.0)])
    r3 = active.register_model("r3", 1.0, results=[("j0", 1.0)])
    np.testing.assert_allclose(r3.error_rates, [1 / 3, 1 / 3])


def test_switching_back_restores_the_original_profile(active: Registry) -> None:
    first = active.register_model("res", 1.0, results=RES)
    active.activate_clustering(clustering_b())
    rev = active.activate_clustering(clustering_a())
    assert rev == 4
    again = active.get_model("res")
    np.testing.assert_allclose(again.error_rates, first.error_rates, rtol=0, atol=1e-12)
    assert again.validation_counts.tolist() == [3, 3, 3]
    assert again.result_count == 9
    assert again.revision == 4
    assert again.clustering_version == clustering_a().version
    act = active.active_clustering()
    assert act is not None and act.revision == 4
    assert act.clustering.item_ids == ITEMS


def test_activation_with_only_explicit_models_empties_the_pool(active: Registry) -> None:
    active.register_model("e1", 1.0, error_rates=[0.1, 0.1, 0.1])
    active.register_model("e2", 1.0, error_rates=[0.2, 0.2, 0.2])
    b = clustering_b()
    assert active.activate_clustering(b) == 4
    assert active.snapshot().models == ()
    assert events_after(active, 3) == [
        Event(4, "put", "clustering", b.version),
        Event(4, "delete", "model", "e1"),
        Event(4, "delete", "model", "e2"),
    ]


# --------------------------------------------------------------------------- listeners


def test_listeners_once_per_revision_in_order(reg: Registry) -> None:
    first: list[int] = []
    second: list[int] = []
    reg.add_listener(first.append)
    reg.add_listener(second.append)
    reg.activate_clustering(clustering_a())
    reg.register_model("a", 1.0, results=RES)
    with pytest.raises(AlreadyExists):
        reg.register_model("a", 1.0, results=RES)
    with pytest.raises(InvalidArgument):
        reg.register_model("b", 1.0, results=[("zz", 1.0)])
    with pytest.raises(NotFound):
        reg.deregister_model("zz")
    reg.register_model("b", 1.0, error_rates=[0.1, 0.2, 0.3])
    reg.activate_clustering(clustering_a())  # no-op
    reg.deregister_model("a")
    reg.activate_clustering(clustering_b())
    assert first == [1, 2, 3, 4, 5]
    assert second == first


def test_listener_sees_committed_state(reg: Registry) -> None:
    seen: list[tuple[int, int, list[str]]] = []

    def listener(revision: int) -> None:
        snap = reg.snapshot()
        seen.append((revision, snap.revision, [m.name for m in snap.models]))

    reg.add_listener(listener)
    reg.activate_clustering(clustering_a())
    reg.register_model("a", 1.0, results=RES)
    assert seen == [(1, 1, []), (2, 2, ["a"])]


# ------------------------------------------------------------------------- persistence


def test_persistence_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    r = Registry.open(path)
    r.activate_clustering(clustering_a())
    r.register_model("res", 1.5, results=RES, description="d", labels={"k": "v"})
    r.register_model("exp", 0.5, error_rates=[0.1, 0.2, 0.3])
    r.register_model("res2", 2.0, results=RES2)
    r.deregister_model("res2")
    before = state(r)
    act_before = r.active_clustering()
    r.close()

    r2 = Registry.open(path)
    try:
        assert state(r2) == before
        assert r2.revision == 5
        act = r2.active_clustering()
        assert act is not None and act_before is not None
        assert act.clustering.version == act_before.clustering.version
        assert act.revision == act_before.revision
        assert act.create_time == act_before.create_time
        np.testing.assert_array_equal(act.clustering.centroids, clustering_a().centroids)
        assert act.clustering.item_ids == ITEMS
        np.testing.assert_array_equal(act.clustering.item_clusters, clustering_a().item_clusters)
        assert r2.results_of("res") == dict(RES)
        rec = r2.get_model("res")
        np.testing.assert_allclose(rec.error_rates, RES_PSI_A, atol=1e-12)
        assert dict(rec.labels) == {"k": "v"} and rec.description == "d"
        # Writing continues from the stored revision.
        assert r2.register_model("new", 1.0, results=RES).revision == 6
    finally:
        r2.close()


# ------------------------------------------------------------------------- concurrency


def test_concurrent_registrations(active: Registry) -> None:
    heard: list[int] = []
    active.add_listener(heard.append)
    revisions: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(25):
                rec = active.register_model(f"t{t}-m{i:02d}", float(t), results=RES)
                with lock:
                    revisions.append(rec.revision)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sorted(revisions) == list(range(2, 102))
    assert heard == list(range(2, 102))
    assert active.revision == 101
    snap = active.snapshot()
    assert len(snap.models) == 100
    assert len({m.name for m in snap.models}) == 100
    assert [m.create_revision for m in snap.models] == list(range(2, 102))
    events = events_after(active, 1)
    assert [e.revision for e in events] == list(range(2, 102))
    assert all(e.type == "put" and e.kind == "model" for e in events)
