"""Numba kernels for the UniRoute decision rule.

Routing sits on the request path of every LLM call, so a decision must cost
about a microsecond, not the ~10 us that the handful of small NumPy calls
(matvec, argmax, fancy indexing, temporaries) add up to. These kernels do the
whole decision in one compiled call (``route_one`` and ``score_candidates``
allocate nothing), and release the GIL (``nogil=True``) so gRPC worker threads
can route concurrently. They are pure functions of their arguments: no state.

The rule: a prompt embedding ``x`` goes to its nearest centroid ``c`` (maximum
dot product), and the chosen model is the candidate with the lowest
``psi[m, c] + lam * cost[m] / max_candidate_cost``; ties go to the lower raw
cost, then the lower index. ``soft_route_one`` replaces the hard cluster with
softmax weights over clusters (the LearnedMap variant).

Contract (callers guarantee it; nothing here converts or copies):

* every array is C-contiguous and has exactly the dtype below; anything else is
  rejected with ``TypeError`` by the explicit signatures (never silently
  recompiled on the request path). Read-only inputs are accepted.
* ``x``: float32[D], ``X``: float32[N, D], ``centroids``/``theta``: float32[K, D],
  ``psi``: float32[M, K], ``cost``: float32[M] (finite, >= 0),
  ``mask``: bool[M] (True = may be chosen), ``out_scores``: float32[M], writeable.
  K >= 1; M may be 1 (or 0, which routes to -1). Embeddings and centroids are
  expected L2-normalised, but nothing depends on it.
* ``lam`` is a float64 scalar (finite, normally >= 0): the score is formed in
  float64 and rounded once to float32, so a float32 ``lam`` would only add a
  second rounding for no speed gain.
* Mismatched shapes or an out-of-range ``cluster`` raise ``ValueError`` rather
  than read or write out of bounds.

Numerics: each score is computed in float64 and stored as float32 in
``out_scores``; the argmin is taken over those stored float32 values, so a
decision can always be reproduced from ``out_scores`` and ``cost`` alone.
Dot products accumulate in float32 with reassociation allowed (so they
vectorise); every centroid's dot product is computed by the same code in every
kernel, so ``route_batch`` makes bit-identical decisions to ``route_one`` and
duplicated centroids tie exactly (the first index wins).

Compilation happens eagerly at import (explicit signatures) and is cached on
disk (``cache=True``); ``warm_up`` exercises every kernel once so a server can
call it before reporting SERVING.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit, types

__all__ = [
    "nearest_centroid",
    "route_batch",
    "route_one",
    "score_candidates",
    "soft_route_one",
    "warm_up",
]

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Inputs are declared read-only: numba then accepts writeable and read-only
# (e.g. memory-mapped or frozen) arrays alike. Outputs must be writeable.
_UniTuple: Any = types.UniTuple  # unannotated in numba; keeps --strict mypy quiet
_F32_1D = types.Array(types.float32, 1, "C", readonly=True)
_F32_2D = types.Array(types.float32, 2, "C", readonly=True)
_BOOL_1D = types.Array(types.boolean, 1, "C", readonly=True)
_F32_1D_OUT = types.Array(types.float32, 1, "C")
_I64_1D_OUT = types.Array(types.int64, 1, "C")

_SIG_NEAREST = types.int64(_F32_1D, _F32_2D)
_SIG_SCORE = types.int64(_F32_2D, _F32_1D, types.int64, types.float64, _BOOL_1D, _F32_1D_OUT)
_INT_PAIR: types.Type = _UniTuple(types.int64, 2)
_ARRAY_PAIR: types.Type = _UniTuple(_I64_1D_OUT, 2)
_SIG_ROUTE_ONE = _INT_PAIR(_F32_1D, _F32_2D, _F32_2D, _F32_1D, types.float64, _BOOL_1D, _F32_1D_OUT)
_SIG_ROUTE_BATCH = _ARRAY_PAIR(_F32_2D, _F32_2D, _F32_2D, _F32_1D, types.float64, _BOOL_1D)
_SIG_SOFT = types.int64(_F32_1D, _F32_2D, _F32_2D, _F32_1D, types.float64, _BOOL_1D, _F32_1D_OUT)


# --------------------------------------------------------------------------- helpers
# Helpers carry no signature: they are compiled into (and cached with) the public
# kernels that call them, specialised to the types those kernels pass.


@njit(nogil=True, fastmath={"reassoc", "contract"})
def _dot4(
    x: F32Array, mat: F32Array, k0: int, k1: int, k2: int, k3: int
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    # Four rows at once so each load of x feeds four FMAs (the loop is load-bound
    # otherwise). reassoc lets LLVM vectorise the reductions; all four lanes get
    # the same reduction tree, so a row's dot product does not depend on its slot
    # (tests/test_kernels.py pins this with duplicated rows and ulp-level near-ties).
    s0 = np.float32(0.0)
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    for i in range(x.shape[0]):
        xi = x[i]
        s0 += xi * mat[k0, i]
        s1 += xi * mat[k1, i]
        s2 += xi * mat[k2, i]
        s3 += xi * mat[k3, i]
    return s0, s1, s2, s3


@njit(nogil=True)
def _nearest(x: F32Array, centroids: F32Array) -> int:
    # The tail block repeats the last row instead of switching to a scalar loop,
    # so every centroid goes through _dot4; strict '>' keeps the first index on ties.
    n_clusters = centroids.shape[0]
    last = n_clusters - 1
    best = 0
    best_val = np.float32(-np.inf)
    for k in range(0, n_clusters, 4):
        k1 = min(k + 1, last)
        k2 = min(k + 2, last)
        k3 = min(k + 3, last)
        v0, v1, v2, v3 = _dot4(x, centroids, k, k1, k2, k3)
        if v0 > best_val:
            best_val = v0
            best = k
        if v1 > best_val:
            best_val = v1
            best = k1
        if v2 > best_val:
            best_val = v2
            best = k2
        if v3 > best_val:
            best_val = v3
            best = k3
    return best


@njit(nogil=True)
def _max_candidate_cost(cost: F32Array, mask: BoolArray) -> float:
    # -1.0 means "no candidate": costs are >= 0, so it cannot be a real maximum.
    max_cost = -1.0
    for m in range(cost.shape[0]):
        if mask[m]:
            c = np.float64(cost[m])
            if c > max_cost:
                max_cost = c
    return max_cost


@njit(nogil=True)
def _cost_term(cost_m: np.float32, lam: float, max_cost: float) -> float:
    # A zero max cost means every candidate is free: no cost term, not 0/0.
    norm = np.float64(cost_m) / max_cost if max_cost > 0.0 else 0.0
    return lam * norm


@njit(nogil=True)
def _select(scores: F32Array, cost: F32Array, mask: BoolArray) -> int:
    # Lexicographic (score, raw cost, index) minimum over candidates, using the
    # float32 scores exactly as stored for the caller.
    best = -1
    best_score = np.float32(np.inf)
    best_cost = np.float32(np.inf)
    for m in range(scores.shape[0]):
        if mask[m]:
            s = scores[m]
            c = cost[m]
            if best < 0 or s < best_score or (s == best_score and c < best_cost):
                best = m
                best_score = s
                best_cost = c
    return best


@njit(nogil=True)
def _hard_scores(
    psi: F32Array,
    cost: F32Array,
    cluster: int,
    lam: float,
    mask: BoolArray,
    max_cost: float,
    out_scores: F32Array,
) -> None:
    for m in range(psi.shape[0]):
        if mask[m]:
            out_scores[m] = np.float32(
                np.float64(psi[m, cluster]) + _cost_term(cost[m], lam, max_cost)
            )
        else:
            out_scores[m] = np.float32(np.inf)


@njit(nogil=True)
def _check_models(psi: F32Array, cost: F32Array, mask: BoolArray, n_clusters: int) -> None:
    n_models = psi.shape[0]
    if psi.shape[1] != n_clusters:
        raise ValueError("psi must have one column per cluster")
    if cost.shape[0] != n_models or mask.shape[0] != n_models:
        raise ValueError("cost and mask must have one entry per model (row of psi)")


@njit(nogil=True)
def _check_centroids(dim: int, centroids: F32Array) -> None:
    if centroids.shape[0] < 1:
        raise ValueError("need at least one centroid")
    if centroids.shape[1] != dim:
        raise ValueError("embedding and centroid dimensions differ")


@njit(nogil=True, fastmath={"reassoc", "contract"})
def _weighted_row(psi: F32Array, m: int, weights: F64Array) -> float:
    acc = 0.0
    for k in range(weights.shape[0]):
        acc += weights[k] * np.float64(psi[m, k])
    return acc


# --------------------------------------------------------------------------- kernels


@njit(_SIG_NEAREST, cache=True, nogil=True)
def nearest_centroid(x: F32Array, centroids: F32Array) -> int:
    """Cluster of one embedding; shares its dot-product code with every router."""
    _check_centroids(x.shape[0], centroids)
    return _nearest(x, centroids)


@njit(_SIG_SCORE, cache=True, nogil=True)
def score_candidates(
    psi: F32Array,
    cost: F32Array,
    cluster: int,
    lam: float,
    mask: BoolArray,
    out_scores: F32Array,
) -> int:
    """Pick a model for a known cluster; scores go to out_scores so callers can log them.

    Non-candidates score +inf. Returns -1 when the mask has no candidate.
    """
    _check_models(psi, cost, mask, psi.shape[1])
    if out_scores.shape[0] != psi.shape[0]:
        raise ValueError("out_scores must have one entry per model")
    if cluster < 0 or cluster >= psi.shape[1]:
        raise ValueError("cluster out of range")
    max_cost = _max_candidate_cost(cost, mask)
    _hard_scores(psi, cost, cluster, lam, mask, max_cost, out_scores)
    return _select(out_scores, cost, mask)


@njit(_SIG_ROUTE_ONE, cache=True, nogil=True)
def route_one(
    x: F32Array,
    centroids: F32Array,
    psi: F32Array,
    cost: F32Array,
    lam: float,
    mask: BoolArray,
    out_scores: F32Array,
) -> tuple[int, int]:
    """One full decision in one compiled call, to pay the dispatch overhead once.

    Returns (cluster, chosen); chosen is -1 when the mask has no candidate.
    """
    _check_centroids(x.shape[0], centroids)
    _check_models(psi, cost, mask, centroids.shape[0])
    if out_scores.shape[0] != psi.shape[0]:
        raise ValueError("out_scores must have one entry per model")
    cluster = _nearest(x, centroids)
    max_cost = _max_candidate_cost(cost, mask)
    _hard_scores(psi, cost, cluster, lam, mask, max_cost, out_scores)
    return cluster, _select(out_scores, cost, mask)


@njit(_SIG_ROUTE_BATCH, cache=True, nogil=True)
def route_batch(
    X: F32Array,
    centroids: F32Array,
    psi: F32Array,
    cost: F32Array,
    lam: float,
    mask: BoolArray,
) -> tuple[I64Array, I64Array]:
    """Many decisions per call for offline evaluation and batched requests.

    Identical, row by row, to route_one (same dot-product code, so no
    near-tie can flip), with one scratch buffer and one max-cost pass per batch.
    Returns (clusters int64[N], chosen int64[N]); chosen is -1 for an empty mask.
    """
    _check_centroids(X.shape[1], centroids)
    _check_models(psi, cost, mask, centroids.shape[0])
    n_rows = X.shape[0]
    clusters = np.empty(n_rows, dtype=np.int64)
    chosen = np.empty(n_rows, dtype=np.int64)
    scratch = np.empty(psi.shape[0], dtype=np.float32)
    max_cost = _max_candidate_cost(cost, mask)
    for n in range(n_rows):
        cluster = _nearest(X[n], centroids)
        clusters[n] = cluster
        if max_cost < 0.0:
            chosen[n] = -1
        else:
            _hard_scores(psi, cost, cluster, lam, mask, max_cost, scratch)
            chosen[n] = _select(scratch, cost, mask)
    return clusters, chosen


@njit(_SIG_SOFT, cache=True, nogil=True)
def soft_route_one(
    x: F32Array,
    theta: F32Array,
    psi: F32Array,
    cost: F32Array,
    lam: float,
    mask: BoolArray,
    out_scores: F32Array,
) -> int:
    """LearnedMap routing: error rates blended by softmax(theta @ x) over clusters.

    Same tie rules and out_scores convention as route_one; returns chosen or -1.
    Allocates one K-length float64 buffer for the weights.
    """
    _check_centroids(x.shape[0], theta)
    _check_models(psi, cost, mask, theta.shape[0])
    if out_scores.shape[0] != psi.shape[0]:
        raise ValueError("out_scores must have one entry per model")
    max_cost = _max_candidate_cost(cost, mask)
    if max_cost < 0.0:
        out_scores[:] = np.float32(np.inf)
        return -1

    n_clusters = theta.shape[0]
    last = n_clusters - 1
    weights = np.empty(n_clusters, dtype=np.float64)
    for k in range(0, n_clusters, 4):
        k1 = min(k + 1, last)
        k2 = min(k + 2, last)
        k3 = min(k + 3, last)
        v0, v1, v2, v3 = _dot4(x, theta, k, k1, k2, k3)
        weights[k] = v0
        weights[k1] = v1
        weights[k2] = v2
        weights[k3] = v3
    # Subtracting the max keeps exp() in range for arbitrarily large logits.
    top = weights.max()
    total = 0.0
    for k in range(n_clusters):
        e = np.exp(weights[k] - top)
        weights[k] = e
        total += e
    for k in range(n_clusters):
        weights[k] /= total

    for m in range(psi.shape[0]):
        if mask[m]:
            out_scores[m] = np.float32(
                _weighted_row(psi, m, weights) + _cost_term(cost[m], lam, max_cost)
            )
        else:
            out_scores[m] = np.float32(np.inf)
    return _select(out_scores, cost, mask)


def warm_up() -> None:
    """Run every kernel once so cache loading and first-call costs land at start-up.

    Call before reporting SERVING; the first real request then pays only the
    decision itself.
    """
    rng = np.random.default_rng(0)
    dim, n_clusters, n_models = 8, 3, 2
    centroids = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    x = np.ascontiguousarray(centroids[1])
    X = np.ascontiguousarray(centroids[::-1])
    psi = rng.random((n_models, n_clusters)).astype(np.float32)
    cost = np.array([1.0, 2.0], dtype=np.float32)
    mask = np.ones(n_models, dtype=np.bool_)
    out_scores = np.empty(n_models, dtype=np.float32)

    nearest_centroid(x, centroids)
    score_candidates(psi, cost, 0, 0.5, mask, out_scores)
    route_one(x, centroids, psi, cost, 0.5, mask, out_scores)
    route_batch(X, centroids, psi, cost, 0.5, mask)
    soft_route_one(x, centroids, psi, cost, 0.5, mask, out_scores)
