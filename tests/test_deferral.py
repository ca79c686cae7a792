"""The deferral-curve metric (sidecar._deferral, used by fit -k auto and bench.quality), by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import _deferral as deferral
from sidecar import _kernels

# -- route_sweep: the routing rule for every λ --


def test_route_sweep_switches_to_the_cheap_model_past_the_break_even_lambda() -> None:
    # score0 = 0.2 + λ·10/10, score1 = 0.3 + λ·1/10: equal at λ = 0.1 / 0.9.
    chosen = deferral.route_sweep([[0.2, 0.3]], [10.0, 1.0], [0.0, 0.1, 0.2, 1000.0])
    assert chosen.shape == (4, 1)
    assert chosen[:, 0].tolist() == [0, 0, 1, 1]


def test_route_sweep_breaks_ties_by_lower_cost_then_lower_index() -> None:
    chosen = deferral.route_sweep([[0.2, 0.2, 0.2]], [3.0, 1.0, 1.0], [0.0])
    assert chosen.tolist() == [[1]]


def test_route_sweep_takes_per_prompt_costs_for_the_oracle() -> None:
    correct = np.array([[1, 1, 0], [0, 0, 0]], dtype=float)
    cost = np.array([[2.0, 1.0, 0.5], [2.0, 1.0, 0.5]])
    # λ = 0: the cheapest correct model, else the cheapest model.
    assert deferral.route_sweep(1.0 - correct, cost, [0.0]).tolist() == [[1, 2]]


def test_route_sweep_drops_the_cost_term_when_every_model_is_free() -> None:
    assert deferral.route_sweep([[0.3, 0.2]], [0.0, 0.0], [5.0]).tolist() == [[1]]


def test_route_sweep_rejects_negative_lambda() -> None:
    with pytest.raises(ValueError):
        deferral.route_sweep([[0.3, 0.2]], [1.0, 2.0], [-1.0])


def test_route_sweep_agrees_with_the_sidecar_kernel_including_ties() -> None:
    rng = np.random.default_rng(0)
    k, m, n = 6, 9, 300
    psi = (rng.integers(1, 10, size=(m, k)) / 10.0).astype(np.float32)  # many exact ties
    cost = rng.choice([0.5, 1.0, 2.0, 7.0], size=m).astype(np.float32)
    centroids = np.eye(k, dtype=np.float32)
    clusters = rng.integers(0, k, size=n)
    x = np.ascontiguousarray(centroids[clusters])
    mask = np.ones(m, dtype=np.bool_)
    lambdas = [0.0, 0.01, 0.1, 0.3, 1.0 / 3.0, 0.5, 1.0, 10.0]
    swept = deferral.route_sweep(psi[:, clusters].T, cost, lambdas)
    masks = np.ascontiguousarray(np.broadcast_to(mask, (n, m)))
    scores = np.empty((n, m), dtype=np.float32)
    got_clusters = np.empty(n, dtype=np.int64)
    chosen = np.empty(n, dtype=np.int64)
    for row, lam in enumerate(lambdas):
        lams = np.full(n, lam)
        _kernels.route(x, centroids, psi, cost, lams, masks, scores, got_clusters, chosen)
        assert got_clusters.tolist() == clusters.tolist()
        assert swept[row].tolist() == chosen.tolist(), lam


# -- deferral_points --


def test_deferral_points_average_realised_cost_and_quality() -> None:
    correct = np.array([[1, 0], [0, 1]], dtype=float)
    cost = np.array([[4.0, 1.0], [4.0, 2.0]])
    points = deferral.deferral_points([[0, 1], [1, 1]], correct, cost, norm_cost=4.0)
    # Row 0: prompt 0 → model 0 (right, 4), prompt 1 → model 1 (right, 2).
    # Row 1: both → model 1: wrong then right; cost 1 and 2.
    assert points.tolist() == [[0.75, 1.0], [0.375, 0.5]]


def test_single_model_points() -> None:
    correct = np.array([[1, 0], [1, 1]], dtype=float)
    cost = np.array([[4.0, 1.0], [2.0, 1.0]])
    assert deferral.single_model_points(correct, cost, 3.0).tolist() == [[1.0, 1.0], [1 / 3, 0.5]]


# -- upper_hull, hull_area, curve --


def test_single_point_mixes_with_abstaining_and_stays_flat() -> None:
    # Triangle from (0, 0) to (0.5, 0.8), then flat: 0.2 + 0.4.
    assert deferral.upper_hull([[0.5, 0.8]]).tolist() == [[0.0, 0.0], [0.5, 0.8]]
    assert deferral.hull_area([[0.5, 0.8]]) == pytest.approx(0.6)


def test_points_below_the_chord_are_not_on_the_curve() -> None:
    # (0.5, 0.7) lies under the chord (0.2, 0.6)–(1, 0.9), which is 0.7125 there.
    points = [[0.2, 0.6], [0.5, 0.7], [1.0, 0.9]]
    assert deferral.upper_hull(points).tolist() == [[0.0, 0.0], [0.2, 0.6], [1.0, 0.9]]
    assert deferral.hull_area(points) == pytest.approx(0.06 + 0.8 * 0.75)


def test_the_curve_never_decreases_past_the_best_point() -> None:
    points = [[0.1, 0.5], [0.4, 0.9], [0.8, 0.85]]
    assert deferral.upper_hull(points).tolist() == [[0.0, 0.0], [0.1, 0.5], [0.4, 0.9]]
    assert deferral.hull_area(points) == pytest.approx(0.025 + 0.21 + 0.54)
    assert deferral.curve(points, [0.05, 0.7, 1.0]).tolist() == pytest.approx([0.25, 0.9, 0.9])


def test_area_is_cut_at_cost_one() -> None:
    # The segment (0.5, 0.6)–(1.5, 0.9) is at 0.75 at cost 1.
    assert deferral.hull_area([[0.5, 0.6], [1.5, 0.9]]) == pytest.approx(0.15 + 0.5 * 0.675)


def test_same_cost_keeps_the_better_point_and_a_free_point_starts_the_curve() -> None:
    assert deferral.hull_area([[0.3, 0.5], [0.3, 0.7]]) == pytest.approx(
        deferral.hull_area([[0.3, 0.7]])
    )
    assert deferral.upper_hull([[0.0, 0.4], [0.5, 0.8]]).tolist() == [[0.0, 0.4], [0.5, 0.8]]
    assert deferral.hull_area([[0.0, 0.4], [0.5, 0.8]]) == pytest.approx(0.3 + 0.4)


def test_no_points_is_zero_area() -> None:
    assert deferral.hull_area(np.empty((0, 2))) == 0.0


point_lists = st.lists(st.tuples(st.floats(0.0, 1.2), st.floats(0.0, 1.0)), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(point_lists, st.tuples(st.floats(0.0, 1.2), st.floats(0.0, 1.0)))
def test_adding_a_point_never_lowers_the_area(
    points: list[tuple[float, float]], extra: tuple[float, float]
) -> None:
    assert deferral.hull_area([*points, extra]) >= deferral.hull_area(points) - 1e-9


@settings(max_examples=200, deadline=None)
@given(point_lists, st.floats(0.0, 1.0), st.integers(0, 11), st.integers(0, 11))
def test_mixtures_of_achieved_points_add_nothing(
    points: list[tuple[float, float]], w: float, i: int, j: int
) -> None:
    a, b = np.asarray(points[i % len(points)]), np.asarray(points[j % len(points)])
    mix = tuple(w * a + (1.0 - w) * b)
    assert deferral.hull_area([*points, mix]) == pytest.approx(deferral.hull_area(points), abs=1e-9)


# -- qnc --


@pytest.mark.parametrize(
    ("target", "expected"),
    [(0.75, 0.6), (0.9, 1.0), (0.6, 0.2), (0.3, 0.1), (0.95, math.inf), (0.0, 0.0)],
)
def test_qnc_reads_the_curve(target: float, expected: float) -> None:
    points = [[0.2, 0.6], [0.5, 0.7], [1.0, 0.9]]
    assert deferral.qnc(points, target) == pytest.approx(expected)


def test_qnc_of_a_free_point() -> None:
    assert deferral.qnc([[0.0, 0.4], [0.5, 0.8]], 0.3) == 0.0
    assert deferral.qnc([[0.0, 0.4], [0.5, 0.8]], 0.6) == pytest.approx(0.25)


# -- knn_expected_error --


def test_knn_averages_the_nearest_validation_errors() -> None:
    val = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    err = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    query = np.array([[1.0, 0.0]])  # similarities 1, 0, 0.6
    assert deferral.knn_expected_error(query, val, err, 1).tolist() == [[1.0, 0.0]]
    assert deferral.knn_expected_error(query, val, err, 2).tolist() == [[0.5, 0.5]]
    with pytest.raises(ValueError):
        deferral.knn_expected_error(query, val, err, 4)


def test_knn_similarity_ties_go_to_the_lower_index() -> None:
    val = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    err = np.array([[0.0], [1.0], [0.0]])
    assert deferral.knn_expected_error([[1.0, 0.0]], val, err, 1).tolist() == [[1.0]]
