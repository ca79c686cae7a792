"""The Numba routing kernels against a plain NumPy statement of the UniRoute rule.

The references below are written for clarity (float64, lexsort for tie-breaking),
not speed, so a disagreement points at the kernels.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from sidecar._kernels import (
    nearest_centroid,
    route_batch,
    route_one,
    score_candidates,
    soft_route_one,
    warm_up,
)

F32 = np.float32
SEEDS = [0, 1, 2, 3, 4]
# (K, D, M): the production-like shape, the ZeroRouter (K=1), a single model,
# and odd sizes that exercise the kernels' partial blocks.
SHAPES = [
    (64, 384, 50),
    (1, 384, 50),
    (64, 384, 1),
    (1, 8, 1),
    (5, 7, 3),
    (17, 33, 9),
]


# --------------------------------------------------------------------------- references


def ref_dots(x: npt.NDArray[F32], rows: npt.NDArray[F32]) -> npt.NDArray[np.float64]:
    # Row-wise sums rather than a BLAS matvec: BLAS may round identical rows
    # differently depending on their position, which would break exact ties.
    return np.asarray((rows.astype(np.float64) * x.astype(np.float64)).sum(axis=1), np.float64)


def ref_nearest(x: npt.NDArray[F32], centroids: npt.NDArray[F32]) -> int:
    return int(np.argmax(ref_dots(x, centroids)))


def ref_cost_norm(cost: npt.NDArray[F32], mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    cost64 = cost.astype(np.float64)
    top = cost64[mask].max() if mask.any() else 0.0
    return cost64 / top if top > 0 else np.zeros_like(cost64)


def ref_select(
    scores: npt.NDArray[F32], cost: npt.NDArray[F32], mask: npt.NDArray[np.bool_]
) -> int:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return -1
    order = np.lexsort((idx, cost[idx], scores[idx]))  # last key is primary
    return int(idx[order[0]])


def ref_hard_scores(
    psi: npt.NDArray[F32],
    cost: npt.NDArray[F32],
    cluster: int,
    lam: float,
    mask: npt.NDArray[np.bool_],
) -> npt.NDArray[F32]:
    scores = (psi[:, cluster].astype(np.float64) + lam * ref_cost_norm(cost, mask)).astype(F32)
    scores[~mask] = np.inf
    return scores


def ref_soft_scores(
    x: npt.NDArray[F32],
    theta: npt.NDArray[F32],
    psi: npt.NDArray[F32],
    cost: npt.NDArray[F32],
    lam: float,
    mask: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    logits = ref_dots(x, theta)
    w = np.exp(logits - logits.max())
    w /= w.sum()
    scores = np.asarray(psi.astype(np.float64) @ w + lam * ref_cost_norm(cost, mask), np.float64)
    scores[~mask] = np.inf
    return scores


# --------------------------------------------------------------------------- fixtures


def unit_rows(a: npt.NDArray[np.float64]) -> npt.NDArray[F32]:
    a = np.atleast_2d(a)
    return np.ascontiguousarray((a / np.linalg.norm(a, axis=1, keepdims=True)).astype(F32))


class Problem:
    def __init__(self, rng: np.random.Generator, k: int, d: int, m: int) -> None:
        self.centroids = unit_rows(rng.standard_normal((k, d)))
        self.X = unit_rows(rng.standard_normal((32, d)))
        self.psi = rng.random((m, k)).astype(F32)
        self.cost = rng.uniform(0.1, 10.0, m).astype(F32)
        self.mask = rng.random(m) < 0.6
        self.mask[rng.integers(m)] = True
        self.lam = float(rng.uniform(0.0, 2.0))


def garbage_scores(m: int) -> npt.NDArray[F32]:
    """An output buffer that fails the tests wherever the kernel forgets to write."""
    return np.full(m, np.nan, dtype=F32)


# --------------------------------------------------------------------------- nearest_centroid


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_nearest_centroid_matches_reference(seed: int, k: int, d: int, m: int) -> None:
    p = Problem(np.random.default_rng(seed), k, d, m)
    for x in p.X:
        assert nearest_centroid(x, p.centroids) == ref_nearest(x, p.centroids)


def test_nearest_centroid_on_a_centroid_returns_it() -> None:
    rng = np.random.default_rng(10)
    centroids = unit_rows(rng.standard_normal((13, 384)))
    for j in range(13):
        assert nearest_centroid(np.ascontiguousarray(centroids[j]), centroids) == j


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 9, 64])
def test_nearest_centroid_exact_tie_takes_first_index(k: int) -> None:
    rng = np.random.default_rng(k)
    row = unit_rows(rng.standard_normal(384))[0]
    x = unit_rows(row + 0.5 * rng.standard_normal(384))[0]
    # All rows identical: every slot of every block must produce the same value.
    same = np.ascontiguousarray(np.repeat(row[None, :], k, axis=0))
    assert nearest_centroid(x, same) == 0
    if k >= 3:
        # A duplicated best pair, the copy in the last (partial) block; others far away.
        centroids = unit_rows(
            -np.repeat(x[None, :], k, axis=0) + 0.1 * rng.standard_normal((k, 384))
        )
        first, second = 1, k - 1
        centroids[first] = row
        centroids[second] = row
        assert ref_nearest(x, centroids) == first
        assert nearest_centroid(x, centroids) == first


# --------------------------------------------------------------------------- score_candidates


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_score_candidates_matches_reference(seed: int, k: int, d: int, m: int) -> None:
    p = Problem(np.random.default_rng(seed), k, d, m)
    for cluster in range(k):
        out = garbage_scores(m)
        chosen = score_candidates(p.psi, p.cost, cluster, p.lam, p.mask, out)
        expected = ref_hard_scores(p.psi, p.cost, cluster, p.lam, p.mask)
        np.testing.assert_array_equal(out, expected)
        assert chosen == ref_select(expected, p.cost, p.mask)
        assert p.mask[chosen]
        assert np.isposinf(out[~p.mask]).all()
        assert np.isfinite(out[p.mask]).all()


def test_duplicate_psi_rows_tie_goes_to_lower_cost_even_at_higher_index() -> None:
    psi = np.array([[0.2, 0.9], [0.2, 0.1], [0.2, 0.5], [0.3, 0.0]], dtype=F32)
    cost = np.array([5.0, 1.0, 3.0, 0.0], dtype=F32)
    mask = np.ones(4, dtype=np.bool_)
    out = garbage_scores(4)
    # lam = 0: models 0..2 tie on score 0.2, model 1 is the cheapest of them.
    assert score_candidates(psi, cost, 0, 0.0, mask, out) == 1
    assert out[0] == out[1] == out[2]
    mask[1] = False
    assert score_candidates(psi, cost, 0, 0.0, mask, out) == 2


def test_full_tie_goes_to_lower_index() -> None:
    psi = np.array([[0.4], [0.2], [0.2], [0.2]], dtype=F32)
    cost = np.array([1.0, 2.0, 2.0, 2.0], dtype=F32)
    mask = np.array([True, False, True, True])
    out = garbage_scores(4)
    assert score_candidates(psi, cost, 0, 0.0, mask, out) == 2
    assert score_candidates(psi, cost, 0, 0.3, mask, out) == 2


def test_tie_made_by_the_cost_term_goes_to_the_cheaper_model() -> None:
    # 0.25 + 0.25 * 1 == 0.5 + 0.25 * 0 exactly, so only the cost tie-break decides.
    psi = np.array([[0.25], [0.5]], dtype=F32)
    cost = np.array([4.0, 0.0], dtype=F32)
    mask = np.ones(2, dtype=np.bool_)
    out = garbage_scores(2)
    assert score_candidates(psi, cost, 0, 0.25, mask, out) == 1
    assert out[0] == out[1] == F32(0.5)
    # Swap the order: the cheap model is now first, and still wins.
    out2 = garbage_scores(2)
    assert score_candidates(psi[::-1].copy(), cost[::-1].copy(), 0, 0.25, mask, out2) == 0


def test_costs_are_normalised_by_the_candidates_only() -> None:
    # A huge-cost non-candidate must not shrink the candidates' cost term.
    psi = np.array([[0.3], [0.5], [0.0]], dtype=F32)
    cost = np.array([1.0, 0.0, 1000.0], dtype=F32)
    mask = np.array([True, True, False])
    out = garbage_scores(3)
    assert score_candidates(psi, cost, 0, 0.5, mask, out) == 1
    np.testing.assert_array_equal(out, np.array([0.8, 0.5, np.inf], dtype=F32))


@pytest.mark.parametrize("seed", SEEDS)
def test_zero_max_candidate_cost_means_no_cost_term(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, k = 12, 6
    psi = rng.random((m, k)).astype(F32)
    cost = rng.uniform(1.0, 5.0, m).astype(F32)
    mask = rng.random(m) < 0.5
    mask[:2] = True
    cost[mask] = 0.0  # only the non-candidates cost anything
    for cluster in range(k):
        out = garbage_scores(m)
        chosen = score_candidates(psi, cost, cluster, 1e6, mask, out)
        np.testing.assert_array_equal(out[mask], psi[mask, cluster])
        candidates = np.flatnonzero(mask)
        assert chosen == candidates[np.argmin(psi[candidates, cluster])]


@pytest.mark.parametrize("seed", SEEDS)
def test_large_lam_picks_the_cheapest_candidate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, k = 50, 8
    psi = rng.random((m, k)).astype(F32)
    cost = rng.permutation(np.arange(1, m + 1)).astype(F32)  # distinct costs
    mask = rng.random(m) < 0.5
    mask[rng.integers(m)] = True
    cheapest = int(np.flatnonzero(mask)[np.argmin(cost[mask])])
    for cluster in range(k):
        out = garbage_scores(m)
        assert score_candidates(psi, cost, cluster, 1e6, mask, out) == cheapest
        # ... whereas lam = 0 goes purely by error rate.
        best_quality = ref_select(psi[:, cluster], cost, mask)
        assert score_candidates(psi, cost, cluster, 0.0, mask, out) == best_quality


def test_empty_mask_returns_minus_one_and_all_inf() -> None:
    rng = np.random.default_rng(7)
    psi = rng.random((5, 3)).astype(F32)
    cost = rng.random(5).astype(F32)
    mask = np.zeros(5, dtype=np.bool_)
    out = garbage_scores(5)
    assert score_candidates(psi, cost, 2, 0.5, mask, out) == -1
    assert np.isposinf(out).all()


def test_single_model_is_chosen_whenever_it_is_a_candidate() -> None:
    psi = np.array([[0.7, 0.1]], dtype=F32)
    cost = np.array([3.0], dtype=F32)
    out = garbage_scores(1)
    assert score_candidates(psi, cost, 1, 2.0, np.array([True]), out) == 0
    assert out[0] == F32(0.1 + 2.0)
    assert score_candidates(psi, cost, 1, 2.0, np.array([False]), out) == -1
    assert np.isposinf(out[0])


# --------------------------------------------------------------------------- route_one


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_route_one_matches_reference(seed: int, k: int, d: int, m: int) -> None:
    p = Problem(np.random.default_rng(seed), k, d, m)
    for x in p.X:
        out = garbage_scores(m)
        cluster, chosen = route_one(x, p.centroids, p.psi, p.cost, p.lam, p.mask, out)
        expected_cluster = ref_nearest(x, p.centroids)
        expected = ref_hard_scores(p.psi, p.cost, expected_cluster, p.lam, p.mask)
        assert cluster == expected_cluster
        np.testing.assert_array_equal(out, expected)
        assert chosen == ref_select(expected, p.cost, p.mask)


def test_route_one_empty_mask_still_reports_the_cluster() -> None:
    p = Problem(np.random.default_rng(3), 64, 384, 50)
    mask = np.zeros(50, dtype=np.bool_)
    for x in p.X[:5]:
        out = garbage_scores(50)
        cluster, chosen = route_one(x, p.centroids, p.psi, p.cost, p.lam, mask, out)
        assert cluster == ref_nearest(x, p.centroids)
        assert chosen == -1
        assert np.isposinf(out).all()


def test_route_one_with_no_models() -> None:
    centroids = unit_rows(np.random.default_rng(0).standard_normal((4, 16)))
    psi = np.empty((0, 4), dtype=F32)
    cost = np.empty(0, dtype=F32)
    mask = np.empty(0, dtype=np.bool_)
    out = np.empty(0, dtype=F32)
    x = np.ascontiguousarray(centroids[2])
    assert route_one(x, centroids, psi, cost, 1.0, mask, out) == (2, -1)


# --------------------------------------------------------------------------- route_batch


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_route_batch_equals_route_one_row_by_row(seed: int, k: int, d: int, m: int) -> None:
    p = Problem(np.random.default_rng(seed), k, d, m)
    clusters, chosen = route_batch(p.X, p.centroids, p.psi, p.cost, p.lam, p.mask)
    assert clusters.dtype == np.int64 and chosen.dtype == np.int64
    assert clusters.shape == chosen.shape == (p.X.shape[0],)
    for n, x in enumerate(p.X):
        out = garbage_scores(m)
        assert (clusters[n], chosen[n]) == route_one(
            x, p.centroids, p.psi, p.cost, p.lam, p.mask, out
        )
        assert clusters[n] == ref_nearest(x, p.centroids)


def test_route_batch_agrees_with_route_one_at_rounding_level_near_ties() -> None:
    # Pairs of centroids that differ by a few ulps, and queries sitting on them:
    # any difference in summation order between the kernels would flip some rows.
    rng = np.random.default_rng(11)
    base = unit_rows(rng.standard_normal((32, 384)))
    twins = base * (1 + rng.integers(-3, 4, base.shape) * np.finfo(F32).eps)
    centroids = np.ascontiguousarray(np.vstack([base, twins.astype(F32)]))
    X = unit_rows(np.repeat(base, 8, axis=0) + 1e-3 * rng.standard_normal((256, 384)))
    dots = X.astype(np.float64) @ centroids.astype(np.float64).T
    top2 = np.sort(dots, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] < 1e-6).mean() > 0.5  # the test really is about near-ties

    m = 10
    psi = rng.random((m, 64)).astype(F32)
    cost = rng.uniform(0.1, 1.0, m).astype(F32)
    mask = np.ones(m, dtype=np.bool_)
    clusters, chosen = route_batch(X, centroids, psi, cost, 0.3, mask)
    out = garbage_scores(m)
    for n, x in enumerate(X):
        assert nearest_centroid(x, centroids) == clusters[n]
        assert route_one(x, centroids, psi, cost, 0.3, mask, out) == (clusters[n], chosen[n])


def test_route_batch_empty_mask_gives_minus_ones() -> None:
    p = Problem(np.random.default_rng(5), 17, 33, 9)
    mask = np.zeros(9, dtype=np.bool_)
    clusters, chosen = route_batch(p.X, p.centroids, p.psi, p.cost, p.lam, mask)
    np.testing.assert_array_equal(chosen, np.full(p.X.shape[0], -1))
    np.testing.assert_array_equal(clusters, [ref_nearest(x, p.centroids) for x in p.X])


def test_route_batch_with_zero_rows() -> None:
    p = Problem(np.random.default_rng(6), 5, 7, 3)
    clusters, chosen = route_batch(
        np.empty((0, 7), dtype=F32), p.centroids, p.psi, p.cost, p.lam, p.mask
    )
    assert clusters.shape == chosen.shape == (0,)


# --------------------------------------------------------------------------- soft_route_one


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_soft_route_one_matches_reference(seed: int, k: int, d: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    p = Problem(rng, k, d, m)
    theta = (3.0 * rng.standard_normal((k, d))).astype(F32)  # a spread of soft weights
    for x in p.X:
        out = garbage_scores(m)
        chosen = soft_route_one(x, theta, p.psi, p.cost, p.lam, p.mask, out)
        expected = ref_soft_scores(x, theta, p.psi, p.cost, p.lam, p.mask)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
        assert np.isposinf(out[~p.mask]).all()
        assert p.mask[chosen]
        # Agree on the winner unless the reference itself has a float32-level near-tie.
        ordered = np.sort(expected[p.mask])
        if ordered.size == 1 or ordered[1] - ordered[0] > 1e-5:
            assert chosen == int(np.argmin(expected))
        else:
            assert expected[chosen] <= ordered[0] + 1e-5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_soft_route_one_with_peaked_theta_is_the_hard_rule(
    seed: int, k: int, d: int, m: int
) -> None:
    rng = np.random.default_rng(seed)
    p = Problem(rng, k, d, m)
    theta = np.ascontiguousarray(p.centroids * F32(2.0**17))  # exact scaling: same argmax
    for j in range(min(k, 8)):
        x = unit_rows(p.centroids[j] + 0.02 * rng.standard_normal(d))[0]
        dots = np.sort(p.centroids.astype(np.float64) @ x.astype(np.float64))
        assert k == 1 or dots[-1] - dots[-2] > 0.01  # softmax is then exactly one-hot
        hard_out = garbage_scores(m)
        soft_out = garbage_scores(m)
        cluster, hard = route_one(x, p.centroids, p.psi, p.cost, p.lam, p.mask, hard_out)
        assert cluster == j
        assert soft_route_one(x, theta, p.psi, p.cost, p.lam, p.mask, soft_out) == hard
        np.testing.assert_array_equal(soft_out, hard_out)


def test_soft_route_one_is_stable_for_huge_logits() -> None:
    theta = np.array([[1e30, 0.0], [-1e30, 0.0]], dtype=F32)
    x = np.array([1.0, 0.0], dtype=F32)
    psi = np.array([[0.9, 0.1], [0.1, 0.9]], dtype=F32)
    cost = np.array([1.0, 1.0], dtype=F32)
    mask = np.ones(2, dtype=np.bool_)
    out = garbage_scores(2)
    assert soft_route_one(x, theta, psi, cost, 0.0, mask, out) == 1
    np.testing.assert_array_equal(out, np.array([0.9, 0.1], dtype=F32))


def test_soft_route_one_ties_and_empty_mask() -> None:
    rng = np.random.default_rng(8)
    k, d = 6, 16
    theta = rng.standard_normal((k, d)).astype(F32)
    x = unit_rows(rng.standard_normal(d))[0]
    row = rng.random(k).astype(F32)
    psi = np.ascontiguousarray(np.vstack([row + 0.5, row, row, row]).astype(F32))
    out = garbage_scores(4)
    mask = np.ones(4, dtype=np.bool_)
    # Equal scores (lam = 0): the cheaper of the duplicates wins, then the lower index.
    cost = np.array([0.0, 2.0, 1.0, 1.0], dtype=F32)
    assert soft_route_one(x, theta, psi, cost, 0.0, mask, out) == 2
    assert out[1] == out[2] == out[3]
    cost = np.array([0.0, 1.0, 1.0, 1.0], dtype=F32)
    assert soft_route_one(x, theta, psi, cost, 0.0, mask, out) == 1
    assert soft_route_one(x, theta, psi, cost, 0.0, np.array([1, 0, 0, 1], bool), out) == 3
    assert soft_route_one(x, theta, psi, cost, 0.0, np.zeros(4, bool), out) == -1
    assert np.isposinf(out).all()


def test_soft_route_one_single_cluster_is_the_zero_router() -> None:
    rng = np.random.default_rng(9)
    p = Problem(rng, 1, 32, 20)
    theta = rng.standard_normal((1, 32)).astype(F32)
    out = garbage_scores(20)
    expected = ref_hard_scores(p.psi, p.cost, 0, p.lam, p.mask)
    chosen = soft_route_one(p.X[0], theta, p.psi, p.cost, p.lam, p.mask, out)
    np.testing.assert_array_equal(out, expected)
    assert chosen == ref_select(expected, p.cost, p.mask)


# --------------------------------------------------------------------------- contract


def test_read_only_inputs_are_accepted() -> None:
    p = Problem(np.random.default_rng(12), 5, 7, 3)
    for a in (p.X, p.centroids, p.psi, p.cost, p.mask):
        a.setflags(write=False)
    out = garbage_scores(3)
    x = p.X[0]
    expected = route_one(
        x.copy(), p.centroids.copy(), p.psi.copy(), p.cost.copy(), p.lam, p.mask.copy(), out
    )
    assert route_one(x, p.centroids, p.psi, p.cost, p.lam, p.mask, out) == expected
    route_batch(p.X, p.centroids, p.psi, p.cost, p.lam, p.mask)
    soft_route_one(x, p.centroids, p.psi, p.cost, p.lam, p.mask, out)


def test_wrong_dtype_or_layout_is_rejected_not_recompiled() -> None:
    p = Problem(np.random.default_rng(13), 5, 8, 3)
    out = garbage_scores(3)
    with pytest.raises(TypeError):
        route_one(p.X[0].astype(np.float64), p.centroids, p.psi, p.cost, p.lam, p.mask, out)
    with pytest.raises(TypeError):
        route_one(p.X[:, ::2][0], p.centroids[:, ::2], p.psi, p.cost, p.lam, p.mask, out)
    with pytest.raises(TypeError):
        nearest_centroid(p.X[0], np.asfortranarray(p.centroids))
    assert len(route_one.signatures) == 1


def test_mismatched_shapes_raise_instead_of_reading_out_of_bounds() -> None:
    p = Problem(np.random.default_rng(14), 5, 8, 3)
    x = p.X[0]
    with pytest.raises(ValueError):
        nearest_centroid(x[:7].copy(), p.centroids)
    with pytest.raises(ValueError):
        nearest_centroid(x, np.empty((0, 8), dtype=F32))
    with pytest.raises(ValueError):
        score_candidates(p.psi, p.cost, 5, p.lam, p.mask, garbage_scores(3))
    with pytest.raises(ValueError):
        score_candidates(p.psi, p.cost, -1, p.lam, p.mask, garbage_scores(3))
    with pytest.raises(ValueError):
        route_one(x, p.centroids, p.psi, p.cost, p.lam, p.mask, garbage_scores(2))
    with pytest.raises(ValueError):
        route_one(x, p.centroids, p.psi[:, :4].copy(), p.cost, p.lam, p.mask, garbage_scores(3))
    with pytest.raises(ValueError):
        route_batch(p.X, p.centroids, p.psi, p.cost[:2].copy(), p.lam, p.mask)
    with pytest.raises(ValueError):
        soft_route_one(x, p.centroids, p.psi, p.cost, p.lam, p.mask[:2].copy(), garbage_scores(3))


def test_warm_up_runs_every_kernel_with_the_declared_dtypes() -> None:
    warm_up()  # a dtype slip in warm_up would raise TypeError here
    for kernel in (nearest_centroid, score_candidates, route_one, route_batch, soft_route_one):
        assert len(kernel.signatures) == 1
