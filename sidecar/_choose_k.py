"""Choosing K for ``sidecar fit -k auto``: cross-validation that holds out training LLMs.

The paper picks K by the deferral-curve Area on the training LLMs. Here, for
each K of a grid and each of a few seeded repetitions:

- the training prompts are split into a **fit** part (the map is fitted on it),
  a **simulated S_val** of the real S_val's size (Ψ is measured on it, as a
  registration would) and a **test** part (routed and scored);
- the training LLMs are split into folds. Each fold in turn is the pool of
  **held-out LLMs**: a LearnedMap is trained on the labels of the other LLMs
  only, and only the held-out LLMs are routed, so the score is that of routing
  LLMs the map never saw. K-means never reads labels, so every LLM is unseen
  by it and one pool holds them all. With fewer than 4 training LLMs there is
  no fold to hold out and still train on: the LearnedMap then trains on the
  labels of the LLMs it routes (on the fit prompts only; the test prompts stay
  held out);
- the held-out pool is routed over the λ sweep with each LLM's cost, and the
  hull Area of its deferral curve (``_deferral``) is the score.

K is the smallest grid value whose mean Area is within ``TOLERANCE`` (0.001)
of the best: differences that small are below what a few hundred test prompts
resolve, and a smaller K leaves more S_val items per cluster and a cheaper
kernel (a LearnedMap's curve is often flat past a few clusters). The grid is
bounded by the data: at most a quarter as many clusters as simulated
S_val items and no more than the distinct fit prompts.

Without training labels there is nothing to cross-validate, and ``rule_k``
decides: K = round(sqrt(n_val / 10)), within [1, 40]. Ψ's error per cluster
shrinks like sqrt(K / n_val) while a finer map can separate more; growing K
with the square root of S_val keeps about sqrt(10·n_val) items per cluster
(≈ 55 at n_val = 300, 100 at n_val = 1,000), so each Ψ_k is an average of
dozens of graded items. It gives K = 3 at n_val = 100 and 5 at n_val = 300;
on RouterBench the quality bench's held-out selection picks K-means K = 5 at
N_val = 100, 300 and 1,102, and this module's cross-validation picked 8 at
n_val = 300 with K = 3 to 8 within its noise (bench/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import _deferral
from ._clustering import MAP_KMEANS, MAP_LEARNED, normalize_rows, soft_assign
from ._errors import InvalidArgument
from ._learned_map import DEFAULT_L2, train_map
from ._profiles import soft_error_rates

FloatArray = npt.NDArray[np.float64]

K_GRID = (1, 2, 3, 5, 8, 12, 16, 25, 40)
MAX_RULE_K = 40
#: Area differences below this count as ties, which the smaller K wins.
TOLERANCE = 0.001
DEFAULT_REPS = 2
#: Iterations per LearnedMap inside the cross-validation (the final fit uses more).
CV_MAX_ITER = 60


@dataclass(frozen=True)
class KChoice:
    """The chosen K and the evidence for it (recorded in the artifact's info)."""

    k: int
    method: str  # "cv-held-out-llms" or "rule"
    grid: tuple[int, ...] = ()
    area_mean: tuple[float, ...] = ()
    area_std: tuple[float, ...] = ()
    details: dict[str, object] = field(default_factory=dict)

    def info(self) -> dict[str, object]:
        out: dict[str, object] = {"k": self.k, "method": self.method, **self.details}
        if self.grid:
            out["curve"] = [
                {"k": k, "area_mean": round(m, 6), "area_std": round(s, 6)}
                for k, m, s in zip(self.grid, self.area_mean, self.area_std, strict=True)
            ]
        return out

    def table(self) -> str:
        """The Area-vs-K curve as printed by ``sidecar fit -k auto``."""
        if not self.grid:
            return f"K = {self.k} by rule: {self.details.get('rule', '')}"
        lines = ["   K   Area (mean ± sd over repetitions)"]
        best = max(self.area_mean)
        for k, m, s in zip(self.grid, self.area_mean, self.area_std, strict=True):
            bar = "#" * max(
                0,
                round((m - min(self.area_mean)) / max(best - min(self.area_mean), 1e-12) * 30),
            )
            mark = "  <- chosen" if k == self.k else ""
            lines.append(f"{k:4d}   {m:.4f} ± {s:.4f}  {bar}{mark}")
        return "\n".join(lines)


def rule_k(n_val: int, n_distinct_train: int) -> KChoice:
    """K without training labels: round(sqrt(n_val / 10)) within [1, 40] (see module doc)."""
    k = max(1, min(MAX_RULE_K, round(math.sqrt(max(n_val, 0) / 10.0)), n_distinct_train))
    return KChoice(
        k, "rule", details={"rule": "round(sqrt(n_val / 10)) in [1, 40]", "n_val": n_val}
    )


def k_grid(n_sim_val: int, n_distinct_fit: int, grid: Sequence[int] = K_GRID) -> tuple[int, ...]:
    """The grid values the data can support: K <= n_sim_val / 4 and <= distinct fit prompts."""
    bound = min(max(1, n_sim_val // 4), n_distinct_fit)
    return tuple(k for k in grid if 1 <= k <= bound) or (1,)


def llm_pools(n_llms: int, map_kind: str, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """Held-out pools: LLM folds for a LearnedMap (>= 4 LLMs), all LLMs for K-means."""
    if map_kind == MAP_KMEANS or n_llms < 4:
        return [np.arange(n_llms)]
    folds = min(3, n_llms // 2)
    return [np.sort(f) for f in np.array_split(rng.permutation(n_llms), folds)]


def choose_k(
    vectors: npt.ArrayLike,
    scores: npt.ArrayLike,
    costs: npt.ArrayLike,
    *,
    n_val: int,
    map_kind: str = MAP_KMEANS,
    seed: int = 0,
    reps: int = DEFAULT_REPS,
    grid: Sequence[int] = K_GRID,
    l2: float = DEFAULT_L2,
    max_iter: int = CV_MAX_ITER,
    progress: Callable[[str], None] | None = None,
) -> KChoice:
    """K by cross-validation on the training prompts and LLMs; see the module docstring.

    ``vectors`` (n, D) embed the training prompts, ``scores`` (n, L) are the
    training LLMs' correctness (NaN unknown), ``costs`` (L,) their costs per
    request, ``n_val`` the real S_val's size (simulated in each repetition).
    """
    from sklearn.cluster import KMeans  # offline only

    x = normalize_rows(np.asarray(vectors))
    y = np.asarray(scores, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    n, n_llms = y.shape
    if map_kind not in (MAP_KMEANS, MAP_LEARNED):
        raise InvalidArgument(f"unknown map kind {map_kind!r}")
    if x.shape[0] != n or c.shape != (n_llms,):
        raise InvalidArgument("vectors, labels and costs disagree in size")
    if n_llms < 2 or n < 40:
        raise InvalidArgument(
            f"-k auto by cross-validation needs at least 2 training LLMs and 40 labelled "
            f"prompts, got {n_llms} and {n}"
        )
    if not (np.all(np.isfinite(c)) and np.all(c >= 0)):
        raise InvalidArgument("training LLM costs must be finite and >= 0")
    n_sim = max(2, min(n_val, n // 3))
    n_test = (n - n_sim) // 3
    rng = np.random.default_rng(seed)
    splits = [rng.permutation(n) for _ in range(reps)]
    pools = [llm_pools(n_llms, map_kind, rng) for _ in range(reps)]
    distinct = min(len(np.unique(x[s[n_sim + n_test :]], axis=0)) for s in splits)
    ks = k_grid(n_sim, distinct, grid)
    areas = np.zeros((len(ks), reps))
    for i, k in enumerate(ks):
        for r, perm in enumerate(splits):
            sval, test, fit = perm[:n_sim], perm[n_sim : n_sim + n_test], perm[n_sim + n_test :]
            km = KMeans(n_clusters=k, n_init=4, random_state=seed + r).fit(x[fit])
            centroids = normalize_rows(km.cluster_centers_)
            fold_areas = []
            for pool in pools[r]:
                seen = np.setdiff1d(np.arange(n_llms), pool)
                if map_kind == MAP_LEARNED and k > 1:
                    train_cols = seen if seen.size else pool
                    theta, bias, _ = train_map(
                        x[fit],
                        y[np.ix_(fit, train_cols)],
                        centroids,
                        seed=seed + r,
                        l2=l2,
                        max_iter=max_iter,
                    )
                    w_val, w_test = (
                        soft_assign(x[sval], theta, bias),
                        soft_assign(x[test], theta, bias),
                    )
                else:
                    w_val, w_test = _one_hot(x[sval], centroids), _one_hot(x[test], centroids)
                fold_areas.append(
                    _pool_area(w_val, w_test, y[sval][:, pool], y[test][:, pool], c[pool])
                )
            areas[i, r] = float(np.mean(fold_areas))
        if progress is not None:
            progress(f"K={k:3d}: Area {areas[i].mean():.4f} ± {areas[i].std():.4f}")
    mean, std = areas.mean(axis=1), areas.std(axis=1)
    best = int(np.flatnonzero(mean >= mean.max() - TOLERANCE)[0])
    return KChoice(
        k=ks[best],
        method="cv-held-out-llms",
        grid=ks,
        area_mean=tuple(float(a) for a in mean),
        area_std=tuple(float(s) for s in std),
        details={
            "map": map_kind,
            "repetitions": reps,
            "simulated_val": n_sim,
            "test_prompts": n_test,
            "fit_prompts": n - n_sim - n_test,
            "llm_pools": [len(p) for p in pools[0]],
            "seed": seed,
            "tolerance": TOLERANCE,
        },
    )


def _one_hot(x: FloatArray, centroids: FloatArray) -> FloatArray:
    w = np.zeros((x.shape[0], centroids.shape[0]))
    w[np.arange(x.shape[0]), np.argmax(x @ centroids.T, axis=1)] = 1.0
    return w


def _pool_area(
    w_val: FloatArray, w_test: FloatArray, y_val: FloatArray, y_test: FloatArray, cost: FloatArray
) -> float:
    """Hull Area of routing the test prompts among one pool of LLMs with Ψ from the S_val."""
    known_val = np.isfinite(y_val)
    psi, _ = soft_error_rates(w_val, 1.0 - np.nan_to_num(y_val), known_val)
    rows = np.all(np.isfinite(y_test), axis=1)  # test prompts every pooled LLM was graded on
    if not rows.any() or not cost.max() > 0:
        return 0.0
    expected = w_test[rows] @ psi
    chosen = _deferral.route_sweep(expected, cost, _deferral.LAMBDAS)
    per_prompt_cost = np.broadcast_to(cost, (int(rows.sum()), cost.size))
    points = _deferral.deferral_points(chosen, y_test[rows], per_prompt_cost, float(cost.max()))
    return _deferral.hull_area(points)
