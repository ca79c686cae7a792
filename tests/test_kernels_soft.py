"""The LearnedMap kernel ``route_soft`` against a plain NumPy statement of the soft rule.

The reference computes Φ = softmax(θ·x + b) and Σ_k Φ_k Ψ_k in float64 with
NumPy; the kernel's sum is reassociated, so scores are compared to a few
float32 ulps and decisions exactly wherever the reference's best and second
best candidates are not within that margin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sidecar import _deferral
from sidecar._kernels import route, route_soft, warm_up

F32 = np.float32
SEEDS = [0, 1, 2, 3]
SHAPES = [(64, 384, 50), (1, 384, 50), (64, 384, 1), (1, 8, 1), (5, 7, 3), (17, 33, 9)]


def ref_weights(x: npt.NDArray[F32], theta: npt.NDArray[F32], bias: npt.NDArray[F32]) -> Any:
    logits = (theta.astype(np.float64) * x.astype(np.float64)).sum(axis=1) + bias
    w = np.exp(logits - logits.max())
    return w / w.sum(), int(np.argmax(logits))


def ref_route_soft(
    X: Any, theta: Any, bias: Any, psi: Any, cost: Any, lams: Any, masks: Any
) -> tuple[Any, Any, Any, Any]:
    n, m, k = X.shape[0], psi.shape[0], theta.shape[0]
    weights = np.empty((n, k))
    scores = np.empty((n, m))
    clusters = np.empty(n, dtype=np.int64)
    for i in range(n):
        weights[i], clusters[i] = ref_weights(X[i], theta, bias)
        expected = (psi.astype(np.float64) @ weights[i]).astype(F32).astype(np.float64)
        cost64 = cost.astype(np.float64)
        top = cost64[masks[i]].max() if masks[i].any() else 0.0
        norm = cost64 / top if top > 0 else np.zeros(m)
        scores[i] = np.where(masks[i], expected + lams[i] * norm, np.inf)
    return weights, scores, clusters, masks


def unit_rows(a: Any) -> npt.NDArray[F32]:
    a = np.atleast_2d(a)
    return np.ascontiguousarray((a / np.linalg.norm(a, axis=1, keepdims=True)).astype(F32))


class Problem:
    def __init__(self, rng: np.random.Generator, k: int, d: int, m: int, n: int = 24) -> None:
        self.theta = np.ascontiguousarray(
            unit_rows(rng.standard_normal((k, d))) * F32(rng.uniform(1, 30))
        )
        self.bias = rng.normal(0, 0.5, k).astype(F32)
        self.X = unit_rows(rng.standard_normal((n, d)))
        self.psi = rng.random((m, k)).astype(F32)
        self.cost = rng.uniform(0.1, 10.0, m).astype(F32)
        self.masks = rng.random((n, m)) < 0.6
        self.masks[np.arange(n), rng.integers(m, size=n)] = True
        self.lams = rng.uniform(0.0, 2.0, n)
        self.lams[0] = 0.0

    def args(self) -> list[Any]:
        n, m, k = self.X.shape[0], self.psi.shape[0], self.theta.shape[0]
        return [
            self.X,
            self.theta,
            self.bias,
            self.psi,
            self.cost,
            self.lams,
            self.masks,
            np.full((n, k), np.nan),
            np.full((n, m), np.nan, dtype=F32),
            np.full(n, -7, dtype=np.int64),
            np.full(n, -7, dtype=np.int64),
        ]


def run_soft(*inputs: Any) -> tuple[Any, Any, Any, Any]:
    X, theta, bias, psi, cost, lams, masks = inputs
    n, m, k = X.shape[0], psi.shape[0], theta.shape[0]
    out = (
        np.full((n, k), np.nan),
        np.full((n, m), np.nan, dtype=F32),
        np.full(n, -7, dtype=np.int64),
        np.full(n, -7, dtype=np.int64),
    )
    route_soft(X, theta, bias, psi, cost, lams, masks, *out)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("k", "d", "m"), SHAPES)
def test_soft_kernel_matches_the_numpy_reference(seed: int, k: int, d: int, m: int) -> None:
    p = Problem(np.random.default_rng(seed), k, d, m)
    weights, scores, clusters, chosen = run_soft(
        p.X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks
    )
    ref_w, ref_s, ref_c, masks = ref_route_soft(
        p.X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks
    )
    np.testing.assert_allclose(weights, ref_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    finite = np.isfinite(ref_s)
    np.testing.assert_allclose(scores[finite], ref_s[finite], rtol=1e-5, atol=1e-6)
    assert np.all(np.isinf(scores[~finite]))
    gaps = np.sort(ref_logit_gaps(p), axis=1)
    clear = gaps[:, 1] - gaps[:, 0] > 1e-3 if k > 1 else np.ones(len(p.X), bool)
    np.testing.assert_array_equal(clusters[clear], ref_c[clear])
    for i in range(len(p.X)):
        cand = np.flatnonzero(masks[i])
        s = np.sort(ref_s[i, cand])
        if len(s) == 1 or s[1] - s[0] > 1e-5:
            assert chosen[i] == cand[np.argmin(ref_s[i, cand])]


def ref_logit_gaps(p: Problem) -> Any:
    logits = p.X.astype(np.float64) @ p.theta.T.astype(np.float64) + p.bias
    return -logits  # sorted ascending: the best two first


@pytest.mark.parametrize("seed", SEEDS)
def test_rows_are_independent_route_equals_route_batch(seed: int) -> None:
    p = Problem(np.random.default_rng(100 + seed), 17, 33, 9)
    batch = run_soft(p.X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks)
    for i in range(len(p.X)):
        row = run_soft(
            p.X[i : i + 1], p.theta, p.bias, p.psi, p.cost, p.lams[i : i + 1], p.masks[i : i + 1]
        )
        for a, b in zip(row, batch, strict=True):
            np.testing.assert_array_equal(a[0], b[i])  # bit for bit


def test_decisions_are_reproduced_by_the_offline_sweep_from_the_lambda_zero_scores() -> None:
    # What bench.quality relies on: the kernel's λ = 0 scores are the expected
    # errors e_m, and route_sweep over them makes the kernel's decision at every λ.
    p = Problem(np.random.default_rng(7), 12, 40, 11, n=64)
    p.masks[:] = True
    zero = run_soft(p.X, p.theta, p.bias, p.psi, p.cost, np.zeros(64), p.masks)[1]
    for lam in (0.0, 0.01, 0.1, 0.3, 1.0, 5.0):
        chosen = run_soft(p.X, p.theta, p.bias, p.psi, p.cost, np.full(64, lam), p.masks)[3]
        swept = _deferral.route_sweep(zero, p.cost, [lam])[0]
        np.testing.assert_array_equal(chosen, swept)


def test_one_cluster_is_the_hard_kernel_exactly() -> None:
    p = Problem(np.random.default_rng(3), 1, 16, 6)
    soft = run_soft(p.X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks)
    n, m = p.X.shape[0], p.psi.shape[0]
    hard = (np.empty((n, m), F32), np.empty(n, np.int64), np.empty(n, np.int64))
    route(p.X, unit_rows(p.theta), p.psi, p.cost, p.lams, p.masks, *hard)
    np.testing.assert_array_equal(soft[0], 1.0)
    for a, b in zip(soft[1:], hard, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_very_sharp_map_decides_like_the_nearest_centroid() -> None:
    rng = np.random.default_rng(4)
    centroids = unit_rows(rng.standard_normal((6, 24)))
    X = np.ascontiguousarray(centroids[rng.integers(6, size=20)] + F32(0.05))
    X = unit_rows(X)
    psi = rng.random((5, 6)).astype(F32)
    cost = rng.uniform(1, 2, 5).astype(F32)
    lams, masks = np.full(20, 0.2), np.ones((20, 5), bool)
    theta = np.ascontiguousarray(centroids * F32(2000.0))
    soft = run_soft(X, theta, np.zeros(6, F32), psi, cost, lams, masks)
    hard = (np.empty((20, 5), F32), np.empty(20, np.int64), np.empty(20, np.int64))
    route(X, centroids, psi, cost, lams, masks, *hard)
    np.testing.assert_array_equal(soft[2], hard[1])
    np.testing.assert_array_equal(soft[3], hard[2])
    np.testing.assert_allclose(soft[1], hard[0], rtol=1e-6)


def test_the_bias_moves_mass_between_clusters() -> None:
    theta = np.zeros((2, 4), F32)
    psi = np.array([[0.1, 0.9], [0.9, 0.1]], F32)
    cost = np.ones(2, F32)
    x = unit_rows(np.ones((1, 4)))
    for bias, want in (([5.0, 0.0], 0), ([0.0, 5.0], 1)):
        w, _, c, chosen = run_soft(
            x, theta, np.array(bias, F32), psi, cost, np.zeros(1), np.ones((1, 2), bool)
        )
        assert c[0] == want and chosen[0] == want
        assert w[0, want] == pytest.approx(1 / (1 + np.exp(-5.0)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_embedding_has_no_cluster_and_no_choice(bad: float) -> None:
    p = Problem(np.random.default_rng(5), 5, 8, 3, n=2)
    X = p.X.copy()
    X[1, 3] = bad
    _, scores, clusters, chosen = run_soft(X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks)
    assert clusters[1] == -1 and chosen[1] == -1
    assert np.all(np.isinf(scores[1]))
    assert clusters[0] >= 0 and chosen[0] >= 0


def test_a_nan_psi_entry_never_wins() -> None:
    p = Problem(np.random.default_rng(6), 4, 8, 3, n=5)
    p.masks[:] = True
    p.psi[1, 2] = np.nan  # the soft sum spreads it to model 1's every score
    _, scores, _, chosen = run_soft(p.X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks)
    assert np.all(np.isnan(scores[:, 1]))
    assert np.all(chosen != 1)


def test_empty_mask_and_no_models() -> None:
    p = Problem(np.random.default_rng(8), 4, 8, 3, n=3)
    p.masks[1] = False
    _, scores, clusters, chosen = run_soft(p.X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks)
    assert chosen[1] == -1 and clusters[1] >= 0 and np.all(np.isinf(scores[1]))
    empty = run_soft(p.X, p.theta, p.bias, p.psi[:0], p.cost[:0], p.lams, np.ones((3, 0), bool))
    assert empty[3].tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    ("position", "bad"),
    [
        (0, lambda a: a.astype(np.float64)),
        (1, lambda a: np.asfortranarray(a)),
        (2, lambda a: a.astype(np.float64)),
        (7, lambda a: a.astype(F32)),  # out_weights must be float64
        (8, lambda a: a.astype(np.float64)),
    ],
)
def test_wrong_dtype_or_layout_is_rejected_not_recompiled(position: int, bad: Any) -> None:
    args = Problem(np.random.default_rng(9), 5, 8, 3).args()
    args[position] = bad(args[position])
    with pytest.raises(TypeError):
        route_soft(*args)
    assert len(route_soft.signatures) == 1


@pytest.mark.parametrize(
    ("position", "shrink"),
    [
        (0, lambda a: a[:, :7].copy()),  # D differs from theta's
        (1, lambda a: np.empty((0, 8), dtype=F32)),  # no cluster
        (2, lambda a: a[:-1].copy()),  # bias != K
        (3, lambda a: a[:, :4].copy()),  # psi columns != K
        (4, lambda a: a[:2].copy()),  # cost != M
        (5, lambda a: a[:-1].copy()),  # lams != N
        (6, lambda a: a[:, :2].copy()),  # masks columns != M
        (7, lambda a: a[:, :4].copy()),  # out_weights != N x K
        (8, lambda a: a[:-1].copy()),
        (9, lambda a: a[:-1].copy()),
        (10, lambda a: a[:-1].copy()),
    ],
)
def test_mismatched_shapes_raise_instead_of_reading_out_of_bounds(
    position: int, shrink: Any
) -> None:
    args = Problem(np.random.default_rng(10), 5, 8, 3).args()
    args[position] = shrink(args[position])
    with pytest.raises(ValueError):
        route_soft(*args)


def test_read_only_inputs_are_accepted() -> None:
    p = Problem(np.random.default_rng(11), 5, 7, 3)
    expected = run_soft(p.X, p.theta, p.bias, p.psi, p.cost, p.lams, p.masks)
    args = p.args()
    for a in args[:7]:
        a.setflags(write=False)
    route_soft(*args)
    for a, b in zip(args[7:], expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_warm_up_runs_the_soft_kernel_with_the_declared_dtypes() -> None:
    warm_up()
    assert len(route_soft.signatures) == 1
