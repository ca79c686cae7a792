"""The Numba routing kernel against a plain NumPy statement of the UniRoute rule.

The references below are written for clarity (float64, lexsort for tie-breaking),
not speed, so a disagreement points at the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sidecar._kernels import route, warm_up

F32 = np.float32
SEEDS = [0, 1, 2, 3, 4]
# (K, D, M): the production-like shape, the ZeroRouter (K=1), a single model,
# and odd sizes that exercise the kernel's partial blocks.
SHAPES = [
    (64, 384, 50),
    (1, 384, 50),
    (64, 384, 1),
    (1, 8, 1),
    (5, 7, 3),
    (17, 33, 9),
]

Result = tuple[npt.NDArray[F32], npt.NDArray[np.int64], npt.NDArray[np.int64]]


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
    """Lexicographic minimum of (score is NaN, score, raw cost, index) over candidates."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return -1
    s = scores[idx]
    nan = np.isnan(s)
    order = np.lexsort((idx, cost[idx], np.where(nan, 0, s), nan))  # last key is primary
    return int(idx[order[0]])


def ref_hard_scores(
    psi: npt.NDArray[F32],
    cost: npt.NDArray[F32],
    cluster: int,
    lam: float,
    mask: npt.NDArray[np.bool_],
) -> npt.NDArray[F32]:
    with np.errstate(invalid="ignore"):
        scores = (psi[:, cluster].astype(np.float64) + lam * ref_cost_norm(cost, mask)).astype(F32)
    scores[~mask] = np.inf
    return scores


def ref_route(
    X: npt.NDArray[F32],
    centroids: npt.NDArray[F32],
    psi: npt.NDArray[F32],
    cost: npt.NDArray[F32],
    lams: npt.NDArray[np.float64],
    masks: npt.NDArray[np.bool_],
) -> Result:
    n, m = X.shape[0], psi.shape[0]
    scores = np.empty((n, m), dtype=F32)
    clusters = np.empty(n, dtype=np.int64)
    chosen = np.empty(n, dtype=np.int64)
    for i in range(n):
        clusters[i] = ref_nearest(X[i], centroids)
        scores[i] = ref_hard_scores(psi, cost, int(clusters[i]), float(lams[i]), masks[i])
        chosen[i] = ref_select(scores[i], cost, masks[i])
    return scores, clusters, chosen


# --------------------------------------------------------------------------- helpers


def unit_rows(a: npt.NDArray[np.float64]) -> npt.NDArray[F32]:
    a = np.atleast_2d(a)
    return np.ascontiguousarray((a / np.linalg.norm(a, axis=1, keepdims=True)).astype(F32))


def run(
    X: npt.NDArray[F32],
    centroids: npt.NDArray[F32],
    psi: npt.NDArray[F32],
    cost: npt.NDArray[F32],
    lams: npt.NDArray[np.float64] | float,
    masks: npt.NDArray[np.bool_],
) -> Result:
    """Calls the kernel with fresh output buffers full of garbage, so an unwritten
    entry fails the tests. A scalar lams and a 1-D masks apply to every row."""
    X = np.ascontiguousarray(np.atleast_2d(X), dtype=F32)
    n, m = X.shape[0], psi.shape[0]
    lams = np.ascontiguousarray(np.broadcast_to(np.asarray(lams, dtype=np.float64), (n,)))
    masks = np.ascontiguousarray(np.broadcast_to(masks, (n, m)))
    out_scores = np.full((n, m), np.nan, dtype=F32)
    out_clusters = np.full(n, -7, dtype=np.int64)
    out_chosen = np.full(n, -7, dtype=np.int64)
    route(X, centroids, psi, cost, lams, masks, out_scores, out_clusters, out_chosen)
    return out_scores, out_clusters, out_chosen


def decide(
    psi: npt.NDArray[F32],
    cost: npt.NDArray[F32],
    cluster: int,
    lam: float,
    mask: npt.NDArray[np.bool_],
) -> tuple[int, npt.NDArray[F32]]:
    """One decision for a known cluster: identity centroids and x = e_cluster."""
    k = psi.shape[1]
    centroids = np.eye(k, dtype=F32)
    scores, clusters, chosen = run(centroids[cluster], centroids, psi, cost, lam, mask)
    assert clusters[0] == cluster
    return int(chosen[0]), scores[0]


class Problem:
    """A random routing problem with a different mask and λ on every row."""

    def __init__(self, rng: np.random.Generator, k: int, d: int, m: int, n: int = 32) -> None:
        self.centroids = unit_rows(rng.standard_normal((k, d)))
        self.X = unit_rows(rng.standard_normal((n, d)))
        self.psi = rng.random((m, k)).astype(F32)
        self.cost = rng.uniform(0.1, 10.0, m).astype(F32)
        self.masks = rng.random((n, m)) < 0.6
        self.masks[np.arange(n), rng.integers(m, size=n)] = True
        self.lams = rng.uniform(0.0, 2.0, n)
        self.lams[0] = 0.0


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_batch_matches_reference(seed: int, k: int, d: int, m: int) -> None:
    p = Problem(np.random.default_rng(seed), k, d, m)
    got = run(p.X, p.centroids, p.psi, p.cost, p.lams, p.masks)
    expected = ref_route(p.X, p.centroids, p.psi, p.cost, p.lams, p.masks)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    scores, _, chosen = got
    assert p.masks[np.arange(len(chosen)), chosen].all()
    assert np.isposinf(scores[~p.masks]).all()
    assert np.isfinite(scores[p.masks]).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_single_row_calls_equal_the_batch_row_by_row(seed: int, k: int, d: int, m: int) -> None:
    p = Problem(np.random.default_rng(seed), k, d, m)
    batch = run(p.X, p.centroids, p.psi, p.cost, p.lams, p.masks)
    expected = ref_route(p.X, p.centroids, p.psi, p.cost, p.lams, p.masks)
    for n in range(p.X.shape[0]):
        scores, clusters, chosen = run(
            p.X[n : n + 1], p.centroids, p.psi, p.cost, p.lams[n : n + 1], p.masks[n : n + 1]
        )
        assert scores.shape == (1, m) and clusters.shape == chosen.shape == (1,)
        np.testing.assert_array_equal(scores[0], batch[0][n])
        assert (clusters[0], chosen[0]) == (batch[1][n], batch[2][n])
        np.testing.assert_array_equal(scores[0], expected[0][n])
        assert (clusters[0], chosen[0]) == (expected[1][n], expected[2][n])


def test_rows_are_independent_masks_and_lams() -> None:
    # The same embedding on every row: only the row's own mask and λ decide.
    psi = np.array([[0.1], [0.3], [0.6]], dtype=F32)
    cost = np.array([10.0, 5.0, 1.0], dtype=F32)
    masks = np.array(
        [[True, True, True], [True, True, True], [False, True, True], [False, False, False]]
    )
    lams = np.array([0.0, 10.0, 0.0, 0.0])
    scores, clusters, chosen = run(
        np.ones((4, 1), F32), np.ones((1, 1), F32), psi, cost, lams, masks
    )
    assert clusters.tolist() == [0, 0, 0, 0]
    assert chosen.tolist() == [0, 2, 1, -1]
    # Row 1 normalises by 10 (all candidates), a row without model 0 would use 5.
    np.testing.assert_array_equal(scores[1], np.array([10.1, 5.3, 1.6], dtype=F32))
    np.testing.assert_array_equal(scores[2], np.array([np.inf, 0.3, 0.6], dtype=F32))
    assert np.isposinf(scores[3]).all()


# --------------------------------------------------------------------------- nearest centroid


def test_an_embedding_on_a_centroid_goes_to_it() -> None:
    rng = np.random.default_rng(10)
    centroids = unit_rows(rng.standard_normal((13, 384)))
    psi = np.zeros((1, 13), dtype=F32)
    _, clusters, _ = run(centroids, centroids, psi, np.ones(1, F32), 0.0, np.ones(1, bool))
    assert clusters.tolist() == list(range(13))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 8, 9, 64])
def test_exact_centroid_tie_takes_first_index(k: int) -> None:
    rng = np.random.default_rng(k)
    row = unit_rows(rng.standard_normal(384))[0]
    x = unit_rows(row + 0.5 * rng.standard_normal(384))[0]
    psi = np.zeros((1, k), dtype=F32)
    one, yes = np.ones(1, F32), np.ones(1, bool)
    # All rows identical: every slot of every block must produce the same value.
    same = np.ascontiguousarray(np.repeat(row[None, :], k, axis=0))
    assert run(x, same, psi, one, 0.0, yes)[1][0] == 0
    if k >= 3:
        # A duplicated best pair, the copy in the last (partial) block; others far away.
        centroids = unit_rows(
            -np.repeat(x[None, :], k, axis=0) + 0.1 * rng.standard_normal((k, 384))
        )
        first, second = 1, k - 1
        centroids[first] = row
        centroids[second] = row
        assert ref_nearest(x, centroids) == first
        assert run(x, centroids, psi, one, 0.0, yes)[1][0] == first


def test_batch_agrees_with_single_rows_at_rounding_level_near_ties() -> None:
    # Pairs of centroids that differ by a few ulps, and queries sitting on them:
    # any difference in summation order between calls would flip some rows.
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
    scores, clusters, chosen = run(X, centroids, psi, cost, 0.3, mask)
    for n, x in enumerate(X):
        s1, c1, k1 = run(x, centroids, psi, cost, 0.3, mask)
        assert (c1[0], k1[0]) == (clusters[n], chosen[n])
        np.testing.assert_array_equal(s1[0], scores[n])


# --------------------------------------------------------------------------- selection and ties


def test_duplicate_psi_rows_tie_goes_to_lower_cost_even_at_higher_index() -> None:
    psi = np.array([[0.2, 0.9], [0.2, 0.1], [0.2, 0.5], [0.3, 0.0]], dtype=F32)
    cost = np.array([5.0, 1.0, 3.0, 0.0], dtype=F32)
    mask = np.ones(4, dtype=np.bool_)
    # lam = 0: models 0..2 tie on score 0.2, model 1 is the cheapest of them.
    chosen, scores = decide(psi, cost, 0, 0.0, mask)
    assert chosen == 1
    assert scores[0] == scores[1] == scores[2]
    mask[1] = False
    assert decide(psi, cost, 0, 0.0, mask)[0] == 2


def test_full_tie_goes_to_lower_index() -> None:
    psi = np.array([[0.4], [0.2], [0.2], [0.2]], dtype=F32)
    cost = np.array([1.0, 2.0, 2.0, 2.0], dtype=F32)
    mask = np.array([True, False, True, True])
    assert decide(psi, cost, 0, 0.0, mask)[0] == 2
    assert decide(psi, cost, 0, 0.3, mask)[0] == 2


def test_tie_made_by_the_cost_term_goes_to_the_cheaper_model() -> None:
    # 0.25 + 0.25 * 1 == 0.5 + 0.25 * 0 exactly, so only the cost tie-break decides.
    psi = np.array([[0.25], [0.5]], dtype=F32)
    cost = np.array([4.0, 0.0], dtype=F32)
    mask = np.ones(2, dtype=np.bool_)
    chosen, scores = decide(psi, cost, 0, 0.25, mask)
    assert chosen == 1
    assert scores[0] == scores[1] == F32(0.5)
    # Swap the order: the cheap model is now first, and still wins.
    assert decide(psi[::-1].copy(), cost[::-1].copy(), 0, 0.25, mask)[0] == 0


def test_costs_are_normalised_by_the_candidates_only() -> None:
    # A huge-cost non-candidate must not shrink the candidates' cost term.
    psi = np.array([[0.3], [0.5], [0.0]], dtype=F32)
    cost = np.array([1.0, 0.0, 1000.0], dtype=F32)
    mask = np.array([True, True, False])
    chosen, scores = decide(psi, cost, 0, 0.5, mask)
    assert chosen == 1
    np.testing.assert_array_equal(scores, np.array([0.8, 0.5, np.inf], dtype=F32))


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
        chosen, scores = decide(psi, cost, cluster, 1e6, mask)
        np.testing.assert_array_equal(scores[mask], psi[mask, cluster])
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
        assert decide(psi, cost, cluster, 1e6, mask)[0] == cheapest
        # ... whereas lam = 0 goes purely by error rate.
        best_quality = ref_select(psi[:, cluster], cost, mask)
        assert decide(psi, cost, cluster, 0.0, mask)[0] == best_quality


def test_empty_mask_gives_minus_one_and_all_inf_but_still_the_cluster() -> None:
    p = Problem(np.random.default_rng(3), 64, 384, 50)
    masks = p.masks.copy()
    masks[::2] = False
    scores, clusters, chosen = run(p.X, p.centroids, p.psi, p.cost, p.lams, masks)
    np.testing.assert_array_equal(clusters, [ref_nearest(x, p.centroids) for x in p.X])
    assert (chosen[::2] == -1).all() and (chosen[1::2] >= 0).all()
    assert np.isposinf(scores[::2]).all()


def test_single_model_is_chosen_whenever_it_is_a_candidate() -> None:
    psi = np.array([[0.7, 0.1]], dtype=F32)
    cost = np.array([3.0], dtype=F32)
    chosen, scores = decide(psi, cost, 1, 2.0, np.array([True]))
    assert chosen == 0 and scores[0] == F32(0.1 + 2.0)
    chosen, scores = decide(psi, cost, 1, 2.0, np.array([False]))
    assert chosen == -1 and np.isposinf(scores[0])


def test_no_models() -> None:
    centroids = unit_rows(np.random.default_rng(0).standard_normal((4, 16)))
    psi = np.empty((0, 4), dtype=F32)
    scores, clusters, chosen = run(
        centroids[1:3], centroids, psi, np.empty(0, F32), 1.0, np.empty(0, bool)
    )
    assert scores.shape == (2, 0)
    assert clusters.tolist() == [1, 2] and chosen.tolist() == [-1, -1]


def test_zero_rows() -> None:
    p = Problem(np.random.default_rng(6), 5, 7, 3)
    out_scores = np.empty((0, 3), dtype=F32)
    out_clusters = np.empty(0, dtype=np.int64)
    out_chosen = np.empty(0, dtype=np.int64)
    route(
        np.empty((0, 7), dtype=F32),
        p.centroids,
        p.psi,
        p.cost,
        np.empty(0),
        np.empty((0, 3), dtype=np.bool_),
        out_scores,
        out_clusters,
        out_chosen,
    )


# --------------------------------------------------------------------------- NaN scores


def test_an_infinite_cost_nan_score_is_never_preferred() -> None:
    # cost inf -> max cost inf -> inf/inf = NaN for that model; the others get 0.
    psi = np.array([[0.1], [0.5], [0.4]], dtype=F32)
    cost = np.array([np.inf, 1.0, 2.0], dtype=F32)
    mask = np.ones(3, dtype=np.bool_)
    for lam in (0.0, 0.5):
        chosen, scores = decide(psi, cost, 0, lam, mask)
        assert np.isnan(scores[0])
        assert chosen == 2
    # The NaN model last or in the middle changes nothing.
    order = [1, 0, 2]
    chosen, scores = decide(psi[order], cost[order], 0, 0.5, mask)
    assert np.isnan(scores[1]) and chosen == 2


@pytest.mark.parametrize("seed", SEEDS)
def test_nan_scores_lose_to_every_number(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, k = 20, 4
    psi = rng.random((m, k)).astype(F32)
    nan_rows = rng.random(m) < 0.5
    nan_rows[0] = True
    psi[nan_rows] = np.nan
    cost = rng.uniform(0.1, 2.0, m).astype(F32)
    for _ in range(10):
        mask = rng.random(m) < 0.6
        for cluster in range(k):
            chosen, scores = decide(psi, cost, cluster, 0.3, mask)
            assert chosen == ref_select(scores, cost, mask)
            if (mask & ~nan_rows).any():
                assert not np.isnan(scores[chosen])


def test_all_nan_candidates_fall_back_to_the_tie_rules() -> None:
    psi = np.full((4, 1), np.nan, dtype=F32)
    psi[3] = 0.2  # not a candidate
    cost = np.array([3.0, 1.0, 1.0, 0.0], dtype=F32)
    mask = np.array([True, True, True, False])
    chosen, scores = decide(psi, cost, 0, 0.0, mask)
    assert np.isnan(scores[:3]).all()
    assert chosen == 1  # lowest raw cost, then lowest index


# --------------------------------------------------------------------------- non-finite embeddings


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("k", [1, 3, 4, 64])
def test_a_non_finite_embedding_has_no_cluster(bad: float, k: int) -> None:
    rng = np.random.default_rng(k)
    d, m = 16, 5
    centroids = unit_rows(rng.standard_normal((k, d)))
    X = unit_rows(rng.standard_normal((4, d)))
    X[1, 3] = bad
    X[2, :] = bad
    psi = rng.random((m, k)).astype(F32)
    cost = rng.uniform(0.1, 1.0, m).astype(F32)
    scores, clusters, chosen = run(X, centroids, psi, cost, 0.5, np.ones(m, bool))
    assert clusters[1] == clusters[2] == -1
    assert chosen[1] == chosen[2] == -1
    assert np.isposinf(scores[1:3]).all()
    # The finite rows around them are unaffected.
    for n in (0, 3):
        assert clusters[n] == ref_nearest(X[n], centroids)
        assert chosen[n] >= 0


def test_a_positive_centroid_column_makes_inf_the_best_and_is_still_no_cluster() -> None:
    # x[0] = +inf times a positive centroid entry: every dot product is +inf.
    centroids = unit_rows(np.array([[1.0, 0.1], [1.0, -0.1]]))
    x = np.array([np.inf, 0.0], dtype=F32)
    psi = np.zeros((1, 2), dtype=F32)
    _, clusters, chosen = run(x, centroids, psi, np.ones(1, F32), 0.0, np.ones(1, bool))
    assert clusters[0] == -1 and chosen[0] == -1


# --------------------------------------------------------------------------- contract


def full_args(p: Problem) -> list[Any]:
    n, m = p.X.shape[0], p.psi.shape[0]
    return [
        p.X,
        p.centroids,
        p.psi,
        p.cost,
        p.lams,
        p.masks,
        np.empty((n, m), dtype=F32),
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.int64),
    ]


def test_read_only_inputs_are_accepted() -> None:
    p = Problem(np.random.default_rng(12), 5, 7, 3)
    expected = run(p.X, p.centroids, p.psi, p.cost, p.lams, p.masks)
    for a in (p.X, p.centroids, p.psi, p.cost, p.lams, p.masks):
        a.setflags(write=False)
    args = full_args(p)
    route(*args)
    np.testing.assert_array_equal(args[6], expected[0])
    np.testing.assert_array_equal(args[7], expected[1])
    np.testing.assert_array_equal(args[8], expected[2])


def test_a_row_view_of_a_read_only_table_mask_is_accepted() -> None:
    # What the router passes for one Route: the table's frozen 1-D mask as a 1 x M view.
    p = Problem(np.random.default_rng(15), 5, 7, 3)
    mask = np.ones(3, dtype=np.bool_)
    mask.flags.writeable = False
    _, clusters, chosen = run(p.X[:1], p.centroids, p.psi, p.cost, p.lams[:1], mask[None, :])
    assert clusters[0] == ref_nearest(p.X[0], p.centroids)
    assert chosen[0] >= 0


@pytest.mark.parametrize(
    ("position", "bad"),
    [
        (0, lambda a: a.astype(np.float64)),
        (1, lambda a: np.asfortranarray(a)),
        (2, lambda a: a[:, ::1].T.copy().T),  # Fortran-ordered copy
        (3, lambda a: a.astype(np.float64)),
        (4, lambda a: a.astype(F32)),  # lams must be float64
        (5, lambda a: a.astype(np.int8)),
        (6, lambda a: a.astype(np.float64)),
        (7, lambda a: a.astype(np.int32)),
        (8, lambda a: a.astype(np.int32)),
        (6, lambda a: np.ascontiguousarray(a).reshape(-1)),  # wrong rank
    ],
)
def test_wrong_dtype_layout_or_rank_is_rejected_not_recompiled(position: int, bad: object) -> None:
    p = Problem(np.random.default_rng(13), 5, 8, 3)
    args = full_args(p)
    args[position] = bad(args[position])  # type: ignore[operator]
    with pytest.raises(TypeError):
        route(*args)
    assert len(route.signatures) == 1


def test_read_only_outputs_are_rejected() -> None:
    p = Problem(np.random.default_rng(16), 5, 8, 3)
    args = full_args(p)
    args[6].setflags(write=False)
    with pytest.raises(TypeError):
        route(*args)


@pytest.mark.parametrize(
    ("position", "shrink"),
    [
        (0, lambda a: a[:, :7].copy()),  # D differs from the centroids'
        (1, lambda a: np.empty((0, 8), dtype=F32)),  # no centroid
        (2, lambda a: a[:, :4].copy()),  # psi columns != K
        (3, lambda a: a[:2].copy()),  # cost != M
        (4, lambda a: a[:-1].copy()),  # lams != N
        (5, lambda a: a[:-1].copy()),  # masks rows != N
        (5, lambda a: a[:, :2].copy()),  # masks columns != M
        (6, lambda a: a[:-1].copy()),
        (6, lambda a: a[:, :2].copy()),
        (7, lambda a: a[:-1].copy()),
        (8, lambda a: a[:-1].copy()),
    ],
)
def test_mismatched_shapes_raise_instead_of_reading_out_of_bounds(
    position: int, shrink: object
) -> None:
    p = Problem(np.random.default_rng(14), 5, 8, 3)
    args = full_args(p)
    args[position] = shrink(args[position])  # type: ignore[operator]
    with pytest.raises(ValueError):
        route(*args)


def test_warm_up_runs_the_kernel_with_the_declared_dtypes() -> None:
    warm_up()  # a dtype slip in warm_up would raise TypeError here
    assert len(route.signatures) == 1
