"""A LearnedMap clustering through everything that keeps it: the artifact, soft Ψ, the
registry on both stores, the wire. (Training is in test_learned_map.py.)"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from sidecar._clustering import (
    MANIFEST_NAME,
    Clustering,
    LearnedMap,
    learned_map,
    load_clustering,
    map_from_text,
    map_to_text,
    normalize_rows,
    save_clustering,
)
from sidecar._errors import ArtifactError, InvalidArgument
from sidecar._profiles import Assignment, profile_from_results, soft_error_rates
from sidecar._registry import Registry
from sidecar._sqlite_store import SCHEMA_VERSION
from sidecar._wire import clustering_from_spec, clustering_spec

D = 8
ITEMS = ("i0", "i1", "i2", "i3")
# Soft weights of the four items over K = 3 clusters; cluster 2 carries almost nothing.
WEIGHTS = np.array(
    [[0.7, 0.3, 0.0], [0.5, 0.5 - 1e-5, 1e-5], [0.2, 0.8, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32
)
SCORES = {"i0": 1.0, "i1": 0.0, "i2": 0.5, "i3": 0.0}  # errors 0, 1, 0.5, 1


def kmeans_a() -> Clustering:
    rng = np.random.default_rng(1)
    return Clustering(
        centroids=normalize_rows(rng.standard_normal((3, D))),
        embedder_fingerprint="fp",
        item_ids=ITEMS,
        item_clusters=np.array([0, 1, 2, 1], dtype=np.int64),
    )


def learned_a(weights: np.ndarray = WEIGHTS) -> Clustering:
    rng = np.random.default_rng(2)
    base = kmeans_a()
    learned = LearnedMap(
        theta=(10 * base.centroids).astype(np.float32),
        bias=rng.normal(0, 1, 3).astype(np.float32),
        item_weights=np.ascontiguousarray(weights, dtype=np.float32),
    )
    return Clustering(
        centroids=base.centroids,
        embedder_fingerprint="fp",
        item_ids=ITEMS,
        item_clusters=np.argmax(weights, axis=1).astype(np.int64),
        info={"map": {"kind": "learned"}},
        learned=learned,
    )


def hand_soft_psi() -> list[float]:
    # cluster 0: mass 0.7+0.5+0.2 = 1.4, errors 0 + 0.5 + 0.1 = 0.6 -> 1.6 / 3.4
    # cluster 1: mass 0.3+0.49999+0.8+1 = 2.59999, errors 0.49999 + 0.4 + 1 -> 2.89999 / 4.59999
    # cluster 2: mass 1e-5 < 0.001 -> overall (2.5 + 1) / (4 + 2)
    return [1.6 / 3.4, 2.89999 / 4.59999, 3.5 / 6]


# --------------------------------------------------------------------------- soft Ψ


def test_soft_psi_by_hand() -> None:
    profile = learned_a().assignment().profile(SCORES)
    np.testing.assert_allclose(profile.error_rates, hand_soft_psi(), rtol=1e-6)
    assert profile.overall_error == pytest.approx(3.5 / 6)
    assert profile.validation_counts.tolist() == [2, 2, 0]  # argmax counts, summing to n
    assert profile.result_count == 4


def test_one_hot_weights_give_exactly_the_k_means_profile() -> None:
    one_hot = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    soft = learned_a(one_hot).assignment().profile(SCORES)
    hard = profile_from_results(SCORES, kmeans_a().item_cluster_map(), 3)
    np.testing.assert_array_equal(soft.error_rates, hard.error_rates)
    np.testing.assert_array_equal(soft.validation_counts, hard.validation_counts)
    assert soft.overall_error == hard.overall_error


def test_items_outside_the_clustering_are_ignored() -> None:
    with_extra = {**SCORES, "gone": 1.0}
    a = learned_a().assignment()
    np.testing.assert_array_equal(a.profile(with_extra).error_rates, a.profile(SCORES).error_rates)


def test_soft_error_rates_for_many_models_and_missing_labels() -> None:
    errors = np.array([[0.0, 1.0], [1.0, np.nan], [0.5, 0.0], [1.0, 1.0]])
    rates, overall = soft_error_rates(WEIGHTS, np.nan_to_num(errors), ~np.isnan(errors))
    np.testing.assert_allclose(rates[:, 0], hand_soft_psi(), rtol=1e-6)
    # Model 1 has no label on i1: its masses leave i1 out.
    mass0 = 0.7 + 0.2
    assert rates[0, 1] == pytest.approx((0.3 * 0 + 0.7 * 1 + 0.2 * 0 + 1) / (mass0 + 2), rel=1e-6)
    assert overall[1] == pytest.approx((2 + 1) / (3 + 2))


def test_assignment_without_weights_is_hard() -> None:
    a = Assignment(3, kmeans_a().item_cluster_map())
    np.testing.assert_array_equal(
        a.profile(SCORES).error_rates,
        profile_from_results(SCORES, kmeans_a().item_cluster_map(), 3).error_rates,
    )


# --------------------------------------------------------------------------- the clustering


def test_a_learned_version_covers_the_map_and_k_means_versions_do_not_change() -> None:
    km, lm = kmeans_a(), learned_a()
    assert km.map_kind == "kmeans" and lm.map_kind == "learned"
    assert lm.version != km.version
    other_bias = learned_a()
    assert other_bias.version == lm.version  # deterministic
    moved = LearnedMap(lm.learned.theta, lm.learned.bias + 1, lm.learned.item_weights)  # type: ignore[union-attr]
    assert Clustering(km.centroids, "fp", ITEMS, lm.item_clusters, learned=moved).version != (
        lm.version
    )
    # The K-means version is the hash that existed before LearnedMaps.
    assert Clustering(km.centroids, "fp", ITEMS, km.item_clusters).version == km.version


def test_item_clusters_must_be_the_argmax_of_the_weights() -> None:
    lm = learned_a()
    with pytest.raises(ValueError, match="argmax"):
        Clustering(lm.centroids, "fp", ITEMS, np.array([0, 0, 0, 0]), learned=lm.learned)


def test_learned_map_weights_come_from_the_stored_float32_theta() -> None:
    rng = np.random.default_rng(3)
    theta, bias, val = rng.standard_normal((3, D)), rng.standard_normal(3), rng.random((5, D))
    lm = learned_map(theta, bias, val)
    assert lm.theta.dtype == lm.bias.dtype == lm.item_weights.dtype == np.float32
    np.testing.assert_allclose(lm.item_weights.sum(axis=1), 1.0, rtol=1e-6)


def test_artifact_round_trip(tmp_path: Path) -> None:
    lm = learned_a()
    save_clustering(lm, tmp_path)
    loaded = load_clustering(tmp_path)
    assert loaded.version == lm.version and loaded.map_kind == "learned"
    assert loaded.learned is not None and lm.learned is not None
    np.testing.assert_array_equal(loaded.learned.theta, lm.learned.theta)
    np.testing.assert_array_equal(loaded.learned.item_weights, lm.learned.item_weights)
    # A K-means artifact has no map section at all: byte for byte what it used to be.
    save_clustering(kmeans_a(), tmp_path / "km")
    assert "map" not in json.loads((tmp_path / "km" / MANIFEST_NAME).read_text())


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["map"]["bias"].update(base64="AAAAAAAAAAAAAAAA"),  # other bias: version
        lambda m: m["map"].update(kind="spectral"),
        lambda m: m["map"]["item_weights"].update(shape=[3, 4]),
        lambda m: m["map"].pop("theta"),
        lambda m: m.update(map=[1, 2]),
    ],
)
def test_a_tampered_map_is_an_artifact_error(tmp_path: Path, edit: object) -> None:
    save_clustering(learned_a(), tmp_path)
    path = tmp_path / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)  # type: ignore[operator]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError):
        load_clustering(tmp_path)


def test_a_map_section_of_kind_kmeans_is_k_means(tmp_path: Path) -> None:
    save_clustering(kmeans_a(), tmp_path)
    path = tmp_path / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["map"] = {"kind": "kmeans"}
    path.write_text(json.dumps(manifest))
    assert load_clustering(tmp_path).version == kmeans_a().version


def test_store_text_round_trip() -> None:
    assert map_to_text(kmeans_a()) == "" and map_from_text("") is None
    lm = learned_a()
    back = map_from_text(map_to_text(lm))
    assert back is not None and lm.learned is not None
    np.testing.assert_array_equal(back.bias, lm.learned.bias)


# --------------------------------------------------------------------------- the wire


def test_wire_round_trip_and_k_means_stays_k_means() -> None:
    lm = learned_a()
    back = clustering_from_spec(clustering_spec(lm, 7))
    assert back.version == lm.version and back.learned is not None
    np.testing.assert_array_equal(back.learned.item_weights, WEIGHTS)
    km_spec = clustering_spec(kmeans_a())
    km_spec.ClearField("map_kind")  # UNSPECIFIED: what an older sender sends
    assert clustering_from_spec(km_spec).map_kind == "kmeans"


def test_wire_refuses_malformed_learned_maps() -> None:
    spec = clustering_spec(learned_a())
    spec.theta = spec.theta[:-4]
    with pytest.raises(InvalidArgument, match="theta must be"):
        clustering_from_spec(spec)
    spec = clustering_spec(learned_a())
    spec.bias = np.array([0, 0, 9], dtype="<f4").tobytes()
    with pytest.raises(InvalidArgument, match="does not match its content"):
        clustering_from_spec(spec)
    spec = clustering_spec(learned_a())
    spec.validation_clusters[0] = 2
    with pytest.raises(InvalidArgument, match="argmax"):
        clustering_from_spec(spec)
    spec = clustering_spec(learned_a())
    spec.validation_weights = np.full((4, 3), np.nan, dtype="<f4").tobytes()
    with pytest.raises(InvalidArgument, match="finite"):
        clustering_from_spec(spec)
    spec = clustering_spec(kmeans_a())
    spec.theta = b"\0" * 4 * 3 * D
    with pytest.raises(InvalidArgument, match="MAP_KIND_LEARNED only"):
        clustering_from_spec(spec)
    spec = clustering_spec(kmeans_a())
    spec.map_kind = 7  # type: ignore[assignment]
    with pytest.raises(InvalidArgument, match="unknown map_kind"):
        clustering_from_spec(spec)


# --------------------------------------------------------------------------- the registry


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    db = tmp_path / "r.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    r = Registry.open(db)
    yield r
    r.close()


def test_registration_under_a_learned_map_uses_soft_counts(reg: Registry) -> None:
    reg.activate_clustering(learned_a())
    model = reg.register_model("m", 1.0, results=list(SCORES.items()))
    np.testing.assert_allclose(model.error_rates, hand_soft_psi(), rtol=1e-6)
    assert model.validation_counts.tolist() == [2, 2, 0]
    stored = reg.active_clustering()
    assert stored is not None and stored.clustering.learned is not None
    assert stored.clustering.version == learned_a().version
    np.testing.assert_array_equal(stored.clustering.learned.item_weights, WEIGHTS)


def test_reclustering_k_means_to_learned_and_back_recomputes_psi_in_one_revision(
    reg: Registry,
) -> None:
    reg.activate_clustering(kmeans_a())
    hard = reg.register_model("m", 1.0, results=list(SCORES.items()))
    before = reg.revision
    revision = reg.activate_clustering(learned_a())
    assert revision == before + 1
    (change_set,) = reg.changes_after(before)
    assert [(c.kind, c.key) for c in change_set.changes] == [
        ("clustering", learned_a().version),
        ("model", "m"),
    ]
    clustering = change_set.changes[0].clustering
    assert clustering is not None and clustering.map_kind == "learned"
    soft = reg.get_model("m")
    assert soft.revision == revision and soft.clustering_version == learned_a().version
    np.testing.assert_allclose(soft.error_rates, hand_soft_psi(), rtol=1e-6)
    reg.activate_clustering(kmeans_a())
    np.testing.assert_array_equal(reg.get_model("m").error_rates, hard.error_rates)


def test_a_version_1_sqlite_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    reg = Registry.open(path)
    reg.activate_clustering(kmeans_a())
    reg.close()
    with closing(sqlite3.connect(path)) as db:  # turn it back into a version-1 file
        db.execute("ALTER TABLE clusterings DROP COLUMN learned_map")
        db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
        db.commit()
    reg = Registry.open(path)
    try:
        active = reg.active_clustering()
        assert active is not None and active.clustering.version == kmeans_a().version
        reg.activate_clustering(learned_a())
        assert reg.active_clustering().clustering.learned is not None  # type: ignore[union-attr]
    finally:
        reg.close()
    with closing(sqlite3.connect(path)) as db:
        (version,) = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(version) == SCHEMA_VERSION == 2
