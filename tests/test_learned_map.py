"""The LearnedMap trainer on small synthetic problems whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar._clustering import normalize_rows, soft_assign
from sidecar._errors import InvalidArgument
from sidecar._learned_map import (
    _Objective,
    fit_learned_clustering,
    label_matrix,
    train_map,
)
from sidecar._profiles import soft_error_rates

ANGLES = np.deg2rad([60.0, 120.0, 240.0, 300.0])


def four_blobs(n_per_blob: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blobs at 60°, 120°, 240° and 300° on the unit circle (plus small noise), 2-D.

    The blobs above the x axis are close to each other, so K-means with K = 2
    splits top from bottom. The labels depend on the other axis: LLM "right"
    is correct exactly when x > 0, LLM "left" exactly when x < 0. K-means'
    clusters then hold half of each, and its Ψ cannot tell the LLMs apart;
    the right map splits left from right.
    """
    rng = np.random.default_rng(seed)
    points = []
    for angle in ANGLES:
        centre = np.array([np.cos(angle), np.sin(angle)])
        points.append(centre + 0.03 * rng.standard_normal((n_per_blob, 2)))
    x = normalize_rows(np.vstack(points)).astype(np.float64)
    right = (x[:, 0] > 0).astype(np.float64)
    return x, np.stack([right, 1.0 - right], axis=1), np.sign(x[:, 0])


def kmeans_top_bottom() -> np.ndarray:
    return normalize_rows(np.array([[0.0, 1.0], [0.0, -1.0]]))


def test_the_gradient_is_exact() -> None:
    rng = np.random.default_rng(0)
    x = normalize_rows(rng.standard_normal((40, 5))).astype(np.float64)
    scores = (rng.random((40, 3)) < 0.6).astype(np.float64)
    scores[rng.random((40, 3)) < 0.1] = np.nan  # missing labels are left out
    objective = _Objective(x, scores, rng.random(40) < 0.5, rng.standard_normal((4, 5)), 0.01)
    params = rng.standard_normal(4 * 5 + 4)
    _, grad = objective(params)
    numeric = np.zeros_like(params)
    for i in range(params.size):
        step = np.zeros_like(params)
        step[i] = 1e-6
        numeric[i] = (objective(params + step)[0] - objective(params - step)[0]) / 2e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


def test_training_finds_the_split_that_predicts_the_labels() -> None:
    x, scores, _ = four_blobs(40, seed=1)
    theta, bias, report = train_map(x, scores, kmeans_top_bottom(), seed=0, l2=0.0, max_iter=300)
    # The K-means start is useless (each cluster is half right, half wrong for each LLM) ...
    assert report.loss_kmeans == pytest.approx(np.log(2), abs=0.02)
    # ... and training ends far below it.
    assert report.loss_end < 0.3
    test_x, test_scores, test_side = four_blobs(25, seed=2)
    w = soft_assign(test_x, theta, bias)
    cluster = np.argmax(w, axis=1)
    # One cluster per side of the y axis, confidently.
    assert len(set(cluster[test_side > 0])) == 1 and len(set(cluster[test_side < 0])) == 1
    assert cluster[test_side > 0][0] != cluster[test_side < 0][0]
    assert np.min(np.max(w, axis=1)) > 0.9
    # Ψ measured on fresh items separates the LLMs where K-means could not.
    psi, _ = soft_error_rates(w, 1.0 - test_scores)
    right_cluster = cluster[test_side > 0][0]
    assert psi[right_cluster, 0] < 0.1 and psi[right_cluster, 1] > 0.9
    assert psi[1 - right_cluster, 0] > 0.9 and psi[1 - right_cluster, 1] < 0.1


def test_training_is_deterministic_for_a_seed() -> None:
    x, scores, _ = four_blobs(20, seed=3)
    a = train_map(x, scores, kmeans_top_bottom(), seed=5, max_iter=40)
    b = train_map(x, scores, kmeans_top_bottom(), seed=5, max_iter=40)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def test_a_strong_l2_keeps_theta_at_its_start() -> None:
    x, scores, _ = four_blobs(20, seed=4)
    centroids = kmeans_top_bottom()
    theta, bias, report = train_map(x, scores, centroids, l2=1e6, max_iter=50)
    np.testing.assert_allclose(theta, report.temperature * centroids, atol=1e-3)
    np.testing.assert_allclose(bias, 0.0, atol=1e-3)


def test_one_cluster_needs_no_training() -> None:
    x, scores, _ = four_blobs(10, seed=5)
    theta, bias, report = train_map(x, scores, normalize_rows(np.array([[1.0, 0.0]])))
    assert theta.shape == (1, 2) and bias.tolist() == [0.0]
    assert report.iterations == 0 and report.loss_end == report.loss_start


def test_fit_learned_clustering_weights_sval_and_records_the_map() -> None:
    x, scores, _ = four_blobs(30, seed=6)
    val_x, _, val_side = four_blobs(5, seed=7)
    ids = [f"v{i}" for i in range(len(val_x))]
    clustering, report = fit_learned_clustering(
        x, scores, ids, val_x, k=2, embedder_fingerprint="fp", seed=0, l2=0.0, max_iter=300
    )
    assert clustering.map_kind == "learned"
    learned = clustering.learned
    assert learned is not None
    assert learned.item_weights.shape == (20, 2) and learned.item_weights.dtype == np.float32
    np.testing.assert_array_equal(clustering.item_clusters, np.argmax(learned.item_weights, 1))
    # Items left and right of the y axis land in different clusters.
    assert len(set(clustering.item_clusters[val_side > 0])) == 1
    assert set(clustering.item_clusters[val_side > 0]) != set(
        clustering.item_clusters[val_side < 0]
    )
    info = clustering.info["map"]
    assert isinstance(info, dict) and info["kind"] == "learned"
    assert info["loss_end"] == pytest.approx(report.loss_end, abs=1e-6)


def test_label_matrix_marks_missing_labels_and_refuses_strangers() -> None:
    names, scores = label_matrix(["a", "b", "c"], {"m2": {"a": 1.0}, "m1": {"b": 0.0, "c": 0.5}})
    assert names == ("m1", "m2")
    np.testing.assert_array_equal(np.isnan(scores), [[True, False], [False, True], [False, True]])
    assert scores[2, 0] == 0.5
    with pytest.raises(InvalidArgument, match="not training prompt ids"):
        label_matrix(["a"], {"m": {"zzz": 1.0}})
    with pytest.raises(InvalidArgument, match="at least one LLM"):
        label_matrix(["a"], {})


def test_bad_shapes_are_refused() -> None:
    x, scores, _ = four_blobs(5, seed=8)
    with pytest.raises(InvalidArgument, match="labels"):
        train_map(x, scores[:-1], kmeans_top_bottom())
    with pytest.raises(InvalidArgument, match="centroids"):
        train_map(x, scores, np.ones((2, 3)))
