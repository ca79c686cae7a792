"""Numba kernels for the UniRoute decision rule: one per map kind, each for Route and RouteBatch.

Routing sits on the request path of every LLM call, so a decision must cost
about a microsecond, not the ~10 us that the handful of small NumPy calls
(matvec, argmax, fancy indexing, temporaries) add up to. ``route`` makes N
decisions in one compiled call, allocates nothing (the caller passes the output
buffers), and releases the GIL (``nogil=True``) so gRPC worker threads can route
concurrently. A single Route is simply N = 1, so a Route and a RouteBatch go
through the same code and make bit-identical decisions. It is a pure function
of its arguments: no state.

The rule, for each row n: the embedding ``X[n]`` goes to its nearest centroid
``c`` (maximum dot product; the first index wins ties), and the chosen model is
the candidate (``masks[n, m]``) with the lowest score
``psi[m, c] + lams[n] * cost[m] / max_candidate_cost`` (max over the row's
candidates; a zero maximum means no cost term). Ties go to the lower raw cost,
then the lower index.

Contract (callers guarantee it; nothing here converts or copies):

* every array is C-contiguous and has exactly the dtype below; anything else is
  rejected with ``TypeError`` by the explicit signature (never silently
  recompiled on the request path). Read-only inputs are accepted.
* inputs: ``X`` float32[N, D], ``centroids`` float32[K, D], ``psi`` float32[M, K],
  ``cost`` float32[M] (>= 0), ``lams`` float64[N] (finite, normally >= 0; the
  score is formed in float64 and rounded once to float32), ``masks`` bool[N, M]
  (True = may be chosen).
* outputs (writeable): ``out_scores`` float32[N, M], ``out_clusters`` int64[N],
  ``out_chosen`` int64[N].
* K >= 1; N and M may be 0. Embeddings and centroids are expected
  L2-normalised, but nothing depends on it.
* Mismatched shapes raise ``ValueError`` rather than read or write out of bounds.

Outputs, per row n:

* ``out_clusters[n]``: the nearest centroid, or -1 when no centroid has a finite
  dot product (``X[n]`` holds a NaN or an infinity, or is so large that the dot
  products overflow). Detected from the running best alone, at no extra cost.
* ``out_scores[n, m]``: the score of candidate m; +inf for a non-candidate, and
  +inf for every model when the row has no cluster.
* ``out_chosen[n]``: the chosen model, or -1 when ``masks[n]`` has no candidate
  or the row has no cluster.

Numerics: each score is computed in float64 and stored as float32; the argmin
is taken over the stored float32 values, so a decision can always be reproduced
from ``out_scores`` and ``cost`` alone. A NaN score (e.g. an infinite cost,
inf/inf) is worse than any number: it is chosen only when every candidate's
score is NaN, and then by the same tie rules (lower raw cost, lower index).
Dot products accumulate in float32 with reassociation allowed (so they
vectorise); every centroid's dot product goes through the same code whatever
its position and whatever N, so duplicated centroids tie exactly (the first
index wins) and a row's decision does not depend on the other rows.

``route_soft`` is the same rule under a LearnedMap: row n gets soft weights
Φ(X[n]) = softmax_k(theta[k]·X[n] + bias[k]) (written to ``out_weights``, float64
[N, K]), the expected error of model m is e_m = float32(Σ_k Φ_k·psi[m, k]), and
its score is ``float32(e_m + lams[n] * cost[m] / max_candidate_cost)``: the hard
score with e_m in place of ``psi[m, c]``, so ``bench.deferral.route_sweep`` over
the e_m (the kernel's scores at λ = 0) reproduces every decision. The same
selection, tie and NaN rules apply; ``out_clusters[n]`` is the most likely
cluster (largest logit, first on ties), or -1 when the logits are not finite.
The Σ_k runs with reassociation allowed (it vectorises); its order depends only
on K, so Route and RouteBatch still agree bit for bit.

Compilation happens eagerly at import (explicit signature) and is cached on
disk (``cache=True``); ``warm_up`` runs both kernels once so a server can call
them before reporting SERVING.

Longer than 400 lines because it holds the hard and the soft kernel with
their shared helpers, which must compile together.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit, types

__all__ = ["route", "route_soft", "warm_up"]

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Inputs are declared read-only: numba then accepts writeable and read-only
# (e.g. memory-mapped or frozen) arrays alike. Outputs must be writeable.
_F32_1D = types.Array(types.float32, 1, "C", readonly=True)
_F32_2D = types.Array(types.float32, 2, "C", readonly=True)
_F64_1D = types.Array(types.float64, 1, "C", readonly=True)
_BOOL_2D = types.Array(types.boolean, 2, "C", readonly=True)
_F32_2D_OUT = types.Array(types.float32, 2, "C")
_F64_2D_OUT = types.Array(types.float64, 2, "C")
_I64_1D_OUT = types.Array(types.int64, 1, "C")

_SIG_ROUTE = types.void(
    _F32_2D,  # X
    _F32_2D,  # centroids
    _F32_2D,  # psi
    _F32_1D,  # cost
    _F64_1D,  # lams
    _BOOL_2D,  # masks
    _F32_2D_OUT,  # out_scores
    _I64_1D_OUT,  # out_clusters
    _I64_1D_OUT,  # out_chosen
)
_SIG_ROUTE_SOFT = types.void(
    _F32_2D,  # X
    _F32_2D,  # theta
    _F32_1D,  # bias
    _F32_2D,  # psi
    _F32_1D,  # cost
    _F64_1D,  # lams
    _BOOL_2D,  # masks
    _F64_2D_OUT,  # out_weights
    _F32_2D_OUT,  # out_scores
    _I64_1D_OUT,  # out_clusters
    _I64_1D_OUT,  # out_chosen
)


# --------------------------------------------------------------------------- helpers
# Helpers carry no signature: they are compiled into (and cached with) the kernel,
# specialised to the types it passes.


@njit(nogil=True, fastmath={"reassoc", "contract"})
def _dot4(
    x: F32Array, mat: F32Array, k0: int, k1: int, k2: int, k3: int
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    # Four rows at once so each load of x feeds four FMAs (the loop is load-bound
    # otherwise). reassoc lets LLVM vectorise the reductions; all four lanes get
    # the same reduction tree, so a row's dot product does not depend on its slot
    # (tests/test_kernels.py pins this with duplicated rows and ulp-level near-ties).
    # No nnan/ninf flags: a NaN or inf in x must reach the comparisons in _nearest.
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
    # -1 when no dot product is finite: a NaN compares false with everything, so it
    # never becomes the best, and an infinite best can only come from an inf in x
    # (or overflow); either way the vector has no meaningful nearest centroid.
    n_clusters = centroids.shape[0]
    last = n_clusters - 1
    best = -1
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
    if best_val == np.float32(np.inf):
        return -1
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
    # Lexicographic (score is NaN, score, raw cost, index) minimum over candidates,
    # using the float32 scores exactly as stored for the caller. The first two
    # tests decide every comparison between numbers; the rest only runs when the
    # best so far is a NaN.
    best = -1
    best_score = np.float32(np.inf)
    best_cost = np.float32(np.inf)
    for m in range(scores.shape[0]):
        if mask[m]:
            s = scores[m]
            c = cost[m]
            if best < 0 or s < best_score:
                better = True
            elif s == best_score:
                better = c < best_cost
            elif best_score != best_score:  # the best so far is NaN
                better = s == s or c < best_cost  # any number beats it; else tie rules
            else:
                better = False
            if better:
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
def _soft_weights(x: F32Array, theta: F32Array, bias: F32Array, out_w: F64Array) -> int:
    # Logits through the same _dot4 blocks as _nearest (so a logit does not depend
    # on its slot), then a max-shifted softmax in float64. Returns the largest
    # logit's index, or -1 when no logit is finite or a NaN reaches the sum (a
    # non-finite x makes every logit non-finite; see _nearest).
    n_clusters = theta.shape[0]
    last = n_clusters - 1
    best = -1
    best_val = -np.inf
    for k in range(0, n_clusters, 4):
        k1 = min(k + 1, last)
        k2 = min(k + 2, last)
        k3 = min(k + 3, last)
        v0, v1, v2, v3 = _dot4(x, theta, k, k1, k2, k3)
        l0 = np.float64(v0) + np.float64(bias[k])
        l1 = np.float64(v1) + np.float64(bias[k1])
        l2 = np.float64(v2) + np.float64(bias[k2])
        l3 = np.float64(v3) + np.float64(bias[k3])
        out_w[k] = l0
        out_w[k1] = l1
        out_w[k2] = l2
        out_w[k3] = l3
        if l0 > best_val:
            best_val = l0
            best = k
        if l1 > best_val:
            best_val = l1
            best = k1
        if l2 > best_val:
            best_val = l2
            best = k2
        if l3 > best_val:
            best_val = l3
            best = k3
    if best < 0 or best_val == np.inf:
        return -1
    total = 0.0
    for k in range(n_clusters):
        w = np.exp(out_w[k] - best_val)
        out_w[k] = w
        total += w
    if not total >= 1.0:  # NaN: some logit was NaN (the best one alone contributes 1)
        return -1
    inv = 1.0 / total
    for k in range(n_clusters):
        out_w[k] *= inv
    return best


@njit(nogil=True, fastmath={"reassoc", "contract"})
def _expected_error(psi: F32Array, m: int, w: F64Array) -> np.float32:
    # Σ_k Φ_k psi[m, k], vectorised; rounded once to float32 like a hard Ψ entry.
    # No nnan/ninf: a NaN in psi must stay a NaN.
    e = 0.0
    for k in range(w.shape[0]):
        e += w[k] * np.float64(psi[m, k])
    return np.float32(e)


@njit(nogil=True)
def _soft_scores(
    psi: F32Array,
    cost: F32Array,
    w: F64Array,
    lam: float,
    mask: BoolArray,
    max_cost: float,
    out_scores: F32Array,
) -> None:
    for m in range(psi.shape[0]):
        if mask[m]:
            e = _expected_error(psi, m, w)
            out_scores[m] = np.float32(np.float64(e) + _cost_term(cost[m], lam, max_cost))
        else:
            out_scores[m] = np.float32(np.inf)


@njit(nogil=True)
def _check_decisions(
    X: F32Array,
    n_clusters: int,
    psi: F32Array,
    cost: F32Array,
    lams: F64Array,
    masks: BoolArray,
    out_scores: F32Array,
    out_clusters: I64Array,
    out_chosen: I64Array,
) -> int:
    # The shapes both kernels share; returns the number of rows.
    n_rows = X.shape[0]
    n_models = psi.shape[0]
    if psi.shape[1] != n_clusters:
        raise ValueError("psi must have one column per cluster")
    if cost.shape[0] != n_models:
        raise ValueError("cost must have one entry per model (row of psi)")
    if lams.shape[0] != n_rows or masks.shape[0] != n_rows:
        raise ValueError("lams and masks must have one row per embedding")
    if masks.shape[1] != n_models:
        raise ValueError("masks must have one column per model")
    if out_scores.shape[0] != n_rows or out_scores.shape[1] != n_models:
        raise ValueError("out_scores must be N x M")
    if out_clusters.shape[0] != n_rows or out_chosen.shape[0] != n_rows:
        raise ValueError("out_clusters and out_chosen must have one entry per embedding")
    return n_rows


# --------------------------------------------------------------------------- kernels


@njit(_SIG_ROUTE, cache=True, nogil=True)
def route(
    X: F32Array,
    centroids: F32Array,
    psi: F32Array,
    cost: F32Array,
    lams: F64Array,
    masks: BoolArray,
    out_scores: F32Array,
    out_clusters: I64Array,
    out_chosen: I64Array,
) -> None:
    """N routing decisions, one per row of X; see the module docstring for the contract.

    Row n: out_clusters[n] is X[n]'s nearest centroid (-1 if X[n] is not finite),
    out_scores[n] the candidates' scores (+inf for non-candidates) and out_chosen[n]
    the chosen model (-1 if there is no candidate or no cluster).
    """
    if centroids.shape[0] < 1:
        raise ValueError("need at least one centroid")
    if centroids.shape[1] != X.shape[1]:
        raise ValueError("embedding and centroid dimensions differ")
    n_rows = _check_decisions(X, centroids.shape[0], psi, cost, lams, masks,
                              out_scores, out_clusters, out_chosen)  # fmt: skip
    for n in range(n_rows):
        cluster = _nearest(X[n], centroids)
        out_clusters[n] = cluster
        scores = out_scores[n]
        if cluster < 0:
            scores[:] = np.float32(np.inf)
            out_chosen[n] = -1
            continue
        mask = masks[n]
        max_cost = _max_candidate_cost(cost, mask)
        _hard_scores(psi, cost, cluster, lams[n], mask, max_cost, scores)
        out_chosen[n] = _select(scores, cost, mask)


@njit(_SIG_ROUTE_SOFT, cache=True, nogil=True)
def route_soft(
    X: F32Array,
    theta: F32Array,
    bias: F32Array,
    psi: F32Array,
    cost: F32Array,
    lams: F64Array,
    masks: BoolArray,
    out_weights: F64Array,
    out_scores: F32Array,
    out_clusters: I64Array,
    out_chosen: I64Array,
) -> None:
    """N decisions under a LearnedMap; ``route``'s contract plus theta float32[K, D],
    bias float32[K] and out_weights float64[N, K] (the row's Φ; unspecified when
    out_clusters[n] is -1). See the module docstring for the rule.
    """
    n_clusters = theta.shape[0]
    if n_clusters < 1:
        raise ValueError("need at least one cluster")
    if theta.shape[1] != X.shape[1]:
        raise ValueError("embedding and theta dimensions differ")
    if bias.shape[0] != n_clusters:
        raise ValueError("bias must have one entry per cluster")
    n_rows = _check_decisions(X, n_clusters, psi, cost, lams, masks,
                              out_scores, out_clusters, out_chosen)  # fmt: skip
    if out_weights.shape[0] != n_rows or out_weights.shape[1] != n_clusters:
        raise ValueError("out_weights must be N x K")
    for n in range(n_rows):
        w = out_weights[n]
        cluster = _soft_weights(X[n], theta, bias, w)
        out_clusters[n] = cluster
        scores = out_scores[n]
        if cluster < 0:
            scores[:] = np.float32(np.inf)
            out_chosen[n] = -1
            continue
        mask = masks[n]
        max_cost = _max_candidate_cost(cost, mask)
        _soft_scores(psi, cost, w, lams[n], mask, max_cost, scores)
        out_chosen[n] = _select(scores, cost, mask)


def warm_up() -> None:
    """Run both kernels once so cache loading and first-call costs land at start-up.

    Call before reporting SERVING; the first real request then pays only the
    decision itself.
    """
    rng = np.random.default_rng(0)
    dim, n_clusters, n_models, n_rows = 8, 3, 2, 3
    centroids = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    X = np.ascontiguousarray(centroids[::-1])
    psi = rng.random((n_models, n_clusters)).astype(np.float32)
    cost = np.array([1.0, 2.0], dtype=np.float32)
    lams = np.full(n_rows, 0.5)
    masks = np.ones((n_rows, n_models), dtype=np.bool_)
    out_scores = np.empty((n_rows, n_models), dtype=np.float32)
    out_clusters = np.empty(n_rows, dtype=np.int64)
    out_chosen = np.empty(n_rows, dtype=np.int64)
    route(X, centroids, psi, cost, lams, masks, out_scores, out_clusters, out_chosen)
    route(
        X[:1],
        centroids,
        psi,
        cost,
        lams[:1],
        masks[:1],
        out_scores[:1],
        out_clusters[:1],
        out_chosen[:1],
    )
    bias = np.zeros(n_clusters, dtype=np.float32)
    weights = np.empty((n_rows, n_clusters), dtype=np.float64)
    theta = np.ascontiguousarray(centroids * np.float32(10.0))
    route_soft(
        X, theta, bias, psi, cost, lams, masks, weights, out_scores, out_clusters, out_chosen
    )
    route_soft(
        X[:1],
        theta,
        bias,
        psi,
        cost,
        lams[:1],
        masks[:1],
        weights[:1],
        out_scores[:1],
        out_clusters[:1],
        out_chosen[:1],
    )
