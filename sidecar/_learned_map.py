"""Training a LearnedMap: a soft cluster map fitted to the training LLMs' labels.

UniRoute's learned cluster map (arXiv 2502.08773, section 5) replaces the
nearest centroid with Φ_k(x) = softmax_k(θ_k·e(x) + b_k). A model's expected
error on x is Σ_k Φ_k(x) Ψ_k(h), where Ψ_k(h) is h's soft-count,
Laplace-smoothed error rate in cluster k, so P(h right on x) = 1 − Σ_k Φ_k Ψ_k.
θ is trained so that this predicts the training LLMs' per-prompt correctness
(log loss), while new LLMs still need only S_val.

Our formulation, following the paper's with Ψ learned jointly with θ:

- Ψ is not a free parameter. For every θ it is what serving would compute:
  Ψ_k(h) = (Σ_i Φ_k(x_i) err_ih + α) / (Σ_i Φ_k(x_i) + 2α), α = 1, over a set
  of "profile" prompts (a stand-in for S_val), and gradients flow through it.
- The prompts are split in two halves (seeded). Ψ from one half predicts the
  labels of the other, and the other way round (cross-fitting). Predicting a
  prompt from a Ψ that counted the prompt itself would reward clusters that
  memorise single prompts; in deployment Ψ comes from S_val and is applied to
  new traffic, which the cross-fit mimics.
- θ starts at τ·(K-means centroids), b at 0. The temperature τ is the one of
  a small grid with the lowest cross-fitted loss at the start, and θ is kept
  near its start by an L2 penalty (``l2``·|θ − θ₀|²/2, plus the same on b),
  so a map trained on few prompts stays close to the K-means one.
- L-BFGS (scipy) on the exact gradient. With the same inputs and seed the
  result is the same: no randomness beyond the seeded split and K-means.

Training labels may be scores in [0, 1]; a missing label (a training LLM not
graded on a prompt) is NaN and is left out of both Ψ and the loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ._clustering import (
    Clustering,
    fit_clustering,
    hard_clusters,
    learned_map,
    normalize_rows,
)
from ._errors import InvalidArgument
from ._profiles import LAPLACE_ALPHA

FloatArray = npt.NDArray[np.float64]

#: Temperatures tried for θ₀ = τ·centroids (unit centroids, unit embeddings).
TEMPERATURES = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
DEFAULT_L2 = 1e-4
DEFAULT_MAX_ITER = 150


@dataclass(frozen=True)
class TrainReport:
    """What training did, for the artifact's info and the CLI."""

    temperature: float
    loss_kmeans: float  # cross-fitted log loss of the hard K-means map (τ → ∞)
    loss_start: float  # at θ₀ = τ·centroids, b = 0
    loss_end: float
    iterations: int
    converged: bool
    details: dict[str, object] = field(default_factory=dict)

    def info(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "loss_kmeans": round(self.loss_kmeans, 6),
            "loss_start": round(self.loss_start, 6),
            "loss_end": round(self.loss_end, 6),
            "iterations": self.iterations,
            "converged": self.converged,
            **self.details,
        }


def label_matrix(
    train_ids: Sequence[str], results: Mapping[str, Mapping[str, float]]
) -> tuple[tuple[str, ...], FloatArray]:
    """(LLM names, scores (n, L)) with NaN where an LLM has no label for a prompt.

    ``results`` maps each training LLM to {prompt id: score in [0, 1]}; ids
    that are not training prompts are refused, so a mismatched file is caught.
    """
    if not results:
        raise InvalidArgument("training a LearnedMap needs the results of at least one LLM")
    row_of = {item: row for row, item in enumerate(train_ids)}
    if len(row_of) != len(train_ids):
        raise InvalidArgument("training prompt ids must be unique")
    names = tuple(sorted(results))
    scores = np.full((len(train_ids), len(names)), np.nan)
    for col, name in enumerate(names):
        unknown = [i for i in results[name] if i not in row_of]
        if unknown:
            raise InvalidArgument(
                f"results of {name!r}: {len(unknown)} id(s) are not training prompt ids, "
                f"e.g. {unknown[0]!r}"
            )
        for item, score in results[name].items():
            if not 0.0 <= score <= 1.0:
                raise InvalidArgument(f"results of {name!r}: score {score!r} outside [0, 1]")
            scores[row_of[item], col] = score
    if not np.isfinite(scores).any():
        raise InvalidArgument("no training prompt has a label")
    return names, scores


class _Objective:
    """The cross-fitted log loss of a soft map and its gradient in (θ, b)."""

    def __init__(
        self,
        x: FloatArray,
        scores: FloatArray,
        folds: npt.NDArray[np.bool_],
        theta0: FloatArray,
        l2: float,
    ) -> None:
        self.x = x
        known = np.isfinite(scores)
        self.mask = known.astype(np.float64)
        self.err = np.where(known, 1.0 - np.nan_to_num(scores), 0.0)
        self.folds = (folds, ~folds)
        self.n_labels = float(self.mask.sum())
        self.theta0 = theta0
        self.l2 = l2
        self.k, self.d = theta0.shape

    def split(self, params: FloatArray) -> tuple[FloatArray, FloatArray]:
        theta = params[: self.k * self.d].reshape(self.k, self.d)
        return theta, params[self.k * self.d :]

    def weights(self, theta: FloatArray, bias: FloatArray) -> FloatArray:
        z = self.x @ theta.T + bias
        z -= z.max(axis=1, keepdims=True)
        w = np.exp(z)
        w /= w.sum(axis=1, keepdims=True)
        return w

    def data_loss(self, w: FloatArray) -> tuple[float, FloatArray]:
        """Cross-fitted mean log loss for soft weights w (n, K), and d loss / d w."""
        loss = 0.0
        grad = np.zeros_like(w)
        for profile, target in (self.folds, self.folds[::-1]):
            wp, mp, ep = w[profile], self.mask[profile], self.err[profile]
            numer = wp.T @ (mp * ep) + LAPLACE_ALPHA  # (K, L)
            denom = wp.T @ mp + 2.0 * LAPLACE_ALPHA
            psi = numer / denom
            wt, mt, et = w[target], self.mask[target], self.err[target]
            p = wt @ psi  # predicted error probability, strictly inside (0, 1)
            loss -= float(np.sum(mt * (et * np.log(p) + (1.0 - et) * np.log1p(-p))))
            g = mt * ((1.0 - et) / (1.0 - p) - et / p)  # d loss / d p
            grad[target] += g @ psi.T
            d_psi = wt.T @ g
            grad[profile] += (mp * ep) @ (d_psi / denom).T - mp @ (d_psi * psi / denom).T
        return loss / self.n_labels, grad / self.n_labels

    def __call__(self, params: FloatArray) -> tuple[float, FloatArray]:
        theta, bias = self.split(params)
        w = self.weights(theta, bias)
        loss, d_w = self.data_loss(w)
        d_z = w * (d_w - np.sum(d_w * w, axis=1, keepdims=True))
        d_theta = d_z.T @ self.x + self.l2 * (theta - self.theta0)
        d_bias = d_z.sum(axis=0) + self.l2 * bias
        loss += 0.5 * self.l2 * (float(np.sum((theta - self.theta0) ** 2)) + float(bias @ bias))
        return loss, np.concatenate((d_theta.ravel(), d_bias))


def train_map(
    vectors: npt.ArrayLike,
    scores: npt.ArrayLike,
    centroids: npt.ArrayLike,
    *,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    max_iter: int = DEFAULT_MAX_ITER,
    temperatures: Sequence[float] = TEMPERATURES,
) -> tuple[FloatArray, FloatArray, TrainReport]:
    """θ (K, D) and b (K,) trained from K-means ``centroids``; see the module docstring.

    ``vectors`` are the training prompts' embeddings (normalised here),
    ``scores`` their (n, L) labels with NaN for unknown.
    """
    from scipy.optimize import minimize  # offline only, like scikit-learn

    x = normalize_rows(np.asarray(vectors)).astype(np.float64)
    y = np.asarray(scores, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise InvalidArgument(f"labels must be (n_train, n_llms), got {y.shape} for n={len(x)}")
    if c.ndim != 2 or c.shape[1] != x.shape[1]:
        raise InvalidArgument("centroids must be K x D with the embeddings' D")
    if x.shape[0] < 4:
        raise InvalidArgument("training a LearnedMap needs at least 4 labelled prompts")
    if l2 < 0 or max_iter < 0:
        raise InvalidArgument("l2 and max_iter must be >= 0")
    rng = np.random.default_rng(seed)
    folds = np.zeros(x.shape[0], dtype=np.bool_)
    folds[rng.permutation(x.shape[0])[: x.shape[0] // 2]] = True

    def objective_at(tau: float) -> _Objective:
        return _Objective(x, y, folds, tau * c, l2)

    k, d = c.shape
    hard = np.zeros((x.shape[0], k))
    hard[np.arange(x.shape[0]), np.argmax(x @ c.T, axis=1)] = 1.0
    loss_kmeans = objective_at(1.0).data_loss(hard)[0]
    start_losses = {
        float(t): objective_at(t)(np.zeros(k * d + k) + _flat(t * c, k))[0] for t in temperatures
    }
    tau = min(start_losses, key=lambda t: (start_losses[t], t))
    objective = objective_at(tau)
    start = _flat(tau * c, k)
    loss_start = start_losses[tau]
    if k == 1 or max_iter == 0:  # one cluster: Φ ≡ 1 whatever θ is
        return tau * c, np.zeros(k), TrainReport(tau, loss_kmeans, loss_start, loss_start, 0, True)
    result = minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        # The loss is a mean over every label, so its gradient is small: scipy's
        # default tolerances would stop after a step or two.
        options={"maxiter": max_iter, "ftol": 1e-12, "gtol": 1e-9},
    )
    theta, bias = objective.split(np.asarray(result.x, dtype=np.float64))
    report = TrainReport(
        temperature=tau,
        loss_kmeans=float(loss_kmeans),
        loss_start=float(loss_start),
        loss_end=float(result.fun),
        iterations=int(result.nit),
        converged=bool(result.success),
        details={"l2": l2, "labels": int(np.isfinite(y).sum()), "llms": int(y.shape[1])},
    )
    return theta.copy(), bias.copy(), report


def _flat(theta: FloatArray, k: int) -> FloatArray:
    return np.concatenate((theta.ravel(), np.zeros(k)))


def fit_learned_clustering(
    train_vectors: np.ndarray,
    scores: npt.ArrayLike,
    val_ids: Sequence[str],
    val_vectors: np.ndarray,
    *,
    k: int,
    embedder_fingerprint: str,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    max_iter: int = DEFAULT_MAX_ITER,
    info: dict[str, object] | None = None,
) -> tuple[Clustering, TrainReport]:
    """K-means on the training prompts, then a LearnedMap trained from it; S_val weighted."""
    kmeans = fit_clustering(
        train_vectors,
        val_ids,
        val_vectors,
        k=k,
        embedder_fingerprint=embedder_fingerprint,
        seed=seed,
        info=info,
    )
    theta, bias, report = train_map(
        train_vectors, scores, kmeans.centroids, seed=seed, l2=l2, max_iter=max_iter
    )
    learned = learned_map(theta, bias, val_vectors)
    details = dict(kmeans.info)
    details["map"] = {"kind": "learned", **report.info()}
    clustering = Clustering(
        centroids=kmeans.centroids,
        embedder_fingerprint=embedder_fingerprint,
        item_ids=kmeans.item_ids,
        item_clusters=hard_clusters(learned.item_weights),
        info=details,
        learned=learned,
    )
    return clustering, report
