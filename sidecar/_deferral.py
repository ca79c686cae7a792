"""Deferral curves: the λ sweep, the hull of achieved points, its Area and QNC.

Pure numpy, no I/O, so ``tests/test_deferral.py`` can check every function on
hand-computed cases. ``sidecar fit -k auto`` scores each K with it, and
``bench.quality`` (through ``bench.deferral``) with what the sidecar returned:
one implementation for the product and the bench.

Conventions (UniRoute paper, arXiv 2502.08773, section 6):

- A point is (normalised cost, quality) of one router at one λ on a test set:
  mean realised cost of the chosen models divided by ``norm_cost`` (the most
  expensive single model's mean test cost), and the mean correctness.
- Random mixing between achieved points is allowed, and so is abstaining,
  which costs 0 and scores 0: the curve is the upper concave envelope of the
  achieved points together with (0, 0). Below the cheapest useful point it is
  therefore the line from (0, 0) to that point.
- Spending less than a budget is allowed, so the curve never decreases: right
  of its highest point it stays flat at the best quality reached, up to cost 1.
- **Area** is the integral of that curve over normalised cost in [0, 1].
- **QNC** is the smallest normalised cost at which the curve reaches a target
  quality (that of the most accurate single LLM); ``inf`` if it never does.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: λ = 0 plus a log grid wide enough to go from "most accurate" to "cheapest".
LAMBDAS: FloatArray = np.concatenate(([0.0], np.geomspace(1e-4, 1e3, 200)))

_EPS = 1e-12


def route_sweep(
    expected_error: npt.ArrayLike, cost: npt.ArrayLike, lambdas: npt.ArrayLike
) -> IntArray:
    """The routing rule for every λ at once: chosen model index, shape (L, N).

    ``expected_error`` is (N, M); ``cost`` is (M,) or (N, M). Mirrors the
    sidecar's kernel bit for bit: score = float32(float64(Ψ) + λ·cost/max cost)
    with Ψ and cost as float32, the max over the row's candidates (a zero max
    means no cost term), and ties broken by lower cost, then lower index.
    """
    err = np.asarray(expected_error, dtype=np.float32).astype(np.float64)
    if err.ndim != 2:
        raise ValueError("expected_error must be (N, M)")
    cost32 = np.broadcast_to(np.asarray(cost, dtype=np.float32), err.shape)
    cost64 = cost32.astype(np.float64)
    max_cost = cost64.max(axis=1, keepdims=True)
    safe = np.where(max_cost > 0.0, max_cost, 1.0)
    norm = np.where(max_cost > 0.0, cost64 / safe, 0.0)  # (N, M)
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1, 1, 1)
    if np.any(~np.isfinite(lam)) or np.any(lam < 0.0):
        raise ValueError("λ must be finite and >= 0")
    scores = (err[None] + lam * norm[None]).astype(np.float32)  # (L, N, M)
    tied = scores == scores.min(axis=2, keepdims=True)
    tied_cost = np.where(tied, cost32[None], np.float32(np.inf))
    best = tied & (tied_cost == tied_cost.min(axis=2, keepdims=True))
    return np.argmax(best, axis=2).astype(np.int64)  # first True: the lowest index


def deferral_points(
    chosen: npt.ArrayLike, correct: npt.ArrayLike, cost: npt.ArrayLike, norm_cost: float
) -> FloatArray:
    """(normalised mean realised cost, mean quality) per row of ``chosen`` (L, N).

    ``correct`` and ``cost`` are the per-prompt (N, M) test matrices.
    """
    picks = np.atleast_2d(np.asarray(chosen, dtype=np.int64))
    q = np.asarray(correct, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if not norm_cost > 0.0:
        raise ValueError("norm_cost must be > 0")
    rows = np.arange(q.shape[0])[None, :]
    return np.stack((c[rows, picks].mean(axis=1) / norm_cost, q[rows, picks].mean(axis=1)), axis=1)


def single_model_points(
    correct: npt.ArrayLike, cost: npt.ArrayLike, norm_cost: float
) -> FloatArray:
    """Each model alone: (normalised mean cost, mean quality), shape (M, 2)."""
    q = np.asarray(correct, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    return np.stack((c.mean(axis=0) / norm_cost, q.mean(axis=0)), axis=1)


def upper_hull(points: npt.ArrayLike) -> FloatArray:
    """Vertices of the non-decreasing upper concave envelope of ``points`` ∪ {(0, 0)}.

    Starts at (0, 0) and ends at the cheapest point of highest quality; the
    curve is flat to the right of the last vertex.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if p.size and (np.any(~np.isfinite(p)) or np.any(p[:, 0] < 0.0)):
        raise ValueError("points must be finite with non-negative cost")
    p = np.vstack(([[0.0, 0.0]], p))
    q_best = p[:, 1].max()
    # Points beyond the cheapest best-quality point can never be on the curve.
    c_stop = p[p[:, 1] >= q_best - _EPS, 0].min()
    p = p[p[:, 0] <= c_stop]
    order = np.lexsort((-p[:, 1], p[:, 0]))  # by cost, then higher quality first
    hull: list[tuple[float, float]] = []
    for x, y in p[order]:
        if hull and x <= hull[-1][0] + _EPS:  # (nearly) the same cost as the last vertex
            if y <= hull[-1][1]:
                continue
            hull.pop()
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Drop the middle vertex if it lies on or below the chord.
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= -_EPS:
                hull.pop()
            else:
                break
        hull.append((float(x), float(y)))
    # Non-decreasing: keep vertices up to the highest one.
    ys = [y for _, y in hull]
    return np.asarray(hull[: int(np.argmax(ys)) + 1], dtype=np.float64)


def curve(points: npt.ArrayLike, costs: npt.ArrayLike) -> FloatArray:
    """The deferral curve's quality at each normalised cost."""
    h = upper_hull(points)
    x = np.asarray(costs, dtype=np.float64)
    return np.interp(x, h[:, 0], h[:, 1])  # np.interp is flat right of the last vertex


def hull_area(points: npt.ArrayLike) -> float:
    """Area under the deferral curve on normalised cost [0, 1]."""
    h = upper_hull(points)
    xs = np.concatenate((h[:, 0][h[:, 0] < 1.0], [1.0]))
    ys = np.interp(xs, h[:, 0], h[:, 1])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def qnc(points: npt.ArrayLike, target_quality: float) -> float:
    """Smallest normalised cost at which the curve reaches ``target_quality`` (inf if never)."""
    h = upper_hull(points)
    if target_quality <= 0.0:
        return 0.0
    if h[-1, 1] < target_quality - _EPS:
        return float("inf")
    i = int(np.argmax(h[:, 1] >= target_quality - _EPS))  # first vertex at or above the target
    if i == 0:
        return float(h[0, 0])
    (x1, y1), (x2, y2) = h[i - 1], h[i]
    if y2 - y1 <= _EPS:
        return float(x2)
    return float(min(x2, x1 + (target_quality - y1) * (x2 - x1) / (y2 - y1)))


def knn_expected_error(
    query_vectors: npt.ArrayLike, val_vectors: npt.ArrayLike, val_error: npt.ArrayLike, k: int
) -> FloatArray:
    """K-NN baseline: each model's mean error on the query's k most cosine-similar S_val items.

    Vectors are unit rows; ``val_error`` is (n_val, M). Similarity ties go to
    the lower S_val index, so the result is deterministic.
    """
    qv = np.asarray(query_vectors, dtype=np.float64)
    vv = np.asarray(val_vectors, dtype=np.float64)
    err = np.asarray(val_error, dtype=np.float64)
    if not 1 <= k <= vv.shape[0]:
        raise ValueError(f"k must be in [1, {vv.shape[0]}], got {k}")
    sims = qv @ vv.T
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return err[nearest].mean(axis=1)
