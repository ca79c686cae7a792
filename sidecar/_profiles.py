"""Profiles Ψ: a model's per-cluster error rates, computed from graded validation items.

This is the whole "training" a new model needs under UniRoute, so it lives in
one small pure module, together with the checks on what a registration
carries. The registry calls it at registration and when a new clustering
re-assigns the validation items; stores never compute anything.

Under a K-means map each item counts once, in its cluster. Under a LearnedMap
each item counts in every cluster with its weight Φ_k(item) (soft counts), and
the same Laplace smoothing applies to the soft counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._errors import InvalidArgument

#: Laplace smoothing pseudo-count: one pseudo-error and one pseudo-success per cluster.
LAPLACE_ALPHA = 1.0

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:/@+-]{1,128}$")
MAX_DESCRIPTION = 1024
MAX_RESULTS = 100_000  # graded items per registration; S_val is 10^2 to 10^3 in the method
MAX_LABELS = 64
MAX_LABEL_TEXT = 128
#: Costs are served as float32; anything larger would become inf and poison every score.
MAX_COST = 1e30
#: Under a LearnedMap, a cluster whose items carry less soft mass than this (a
#: thousandth of an item) has no evidence: it gets the overall error, like an
#: empty K-means cluster.
MIN_SOFT_MASS = 1e-3


@dataclass(frozen=True)
class Profile:
    """Ψ plus the counts behind it, ready to store and publish.

    ``validation_counts`` counts each graded item in its hard cluster (under a
    LearnedMap: its most likely one), so they always sum to ``result_count``.
    """

    error_rates: np.ndarray  # float64 (K,), each in (0, 1) or [0, 1] if explicit
    validation_counts: np.ndarray  # int64 (K,)
    overall_error: float
    result_count: int


@dataclass(frozen=True, eq=False)
class Assignment:
    """Where the S_val items fall: one cluster each, plus soft weights under a LearnedMap.

    ``weights`` is (n_val, K) with ``rows`` mapping an item id to its row;
    both None for K-means. Built by ``Clustering.assignment()``.
    """

    k: int
    clusters: Mapping[str, int]
    weights: np.ndarray | None = None
    rows: Mapping[str, int] | None = None

    def profile(self, scores: Mapping[str, float]) -> Profile:
        """Ψ of graded scores under this assignment; unknown items are ignored."""
        if self.weights is None or self.rows is None:
            return profile_from_results(scores, self.clusters, self.k)
        return profile_from_soft_results(scores, self.rows, self.weights, self.clusters, self.k)


def validate_model_fields(
    name: str, cost: float, description: str, labels: Mapping[str, str]
) -> None:
    """Checks what a registration says about the model itself; one clear message per problem."""
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"model name {name!r} is invalid: use 1 to 128 characters from [A-Za-z0-9._:/@+-]"
        )
    if not (math.isfinite(cost) and 0.0 <= cost <= MAX_COST):
        raise InvalidArgument(f"cost must be a finite number in [0, {MAX_COST:g}], got {cost!r}")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION} characters")
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels are allowed, got {len(labels)}")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_TEXT or len(value) > MAX_LABEL_TEXT:
            raise InvalidArgument(
                f"label {key!r}: keys must be 1 to {MAX_LABEL_TEXT} characters and values at "
                f"most {MAX_LABEL_TEXT}"
            )


@dataclass(frozen=True)
class Evidence:
    """What a registration brings to compute Ψ: graded results, or explicit error rates."""

    results: tuple[tuple[str, float], ...] | None = None
    error_rates: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.results is None) == (self.error_rates is None):
            raise InvalidArgument("give exactly one of results or an explicit profile")
        if self.results is not None and len(self.results) > MAX_RESULTS:
            raise InvalidArgument(
                f"{len(self.results)} results is over the limit of {MAX_RESULTS} per registration"
            )

    def profile(self, assignment: Assignment) -> tuple[Profile, dict[str, float]]:
        """Ψ against a clustering, and the validated per-item scores to keep (none if explicit)."""
        if self.results is None:
            assert self.error_rates is not None
            return profile_from_rates(self.error_rates, assignment.k), {}
        scores = validate_results(self.results, assignment.clusters)
        return assignment.profile(scores), scores


def validate_results(
    results: Iterable[tuple[str, float]], known_items: Mapping[str, int]
) -> dict[str, float]:
    """Checks graded results against the validation set and returns {item_id: score}.

    Every problem is collected into one message so CI can fix its file in one go.
    """
    scores: dict[str, float] = {}
    seen: set[str] = set()
    unknown: list[str] = []
    duplicate: list[str] = []
    bad_score: list[str] = []
    for item_id, score in results:
        if item_id in seen:
            duplicate.append(item_id)
            continue
        seen.add(item_id)
        if item_id not in known_items:
            unknown.append(item_id)
            continue
        if not (isinstance(score, int | float) and math.isfinite(score) and 0.0 <= score <= 1.0):
            bad_score.append(f"{item_id}={score!r}")
            continue
        scores[item_id] = float(score)
    problems = []
    if unknown:
        problems.append(
            f"{len(unknown)} unknown item id(s) not in the validation set: {_preview(unknown)}"
        )
    if duplicate:
        problems.append(f"{len(duplicate)} duplicate item id(s): {_preview(duplicate)}")
    if bad_score:
        problems.append(f"{len(bad_score)} score(s) outside [0, 1]: {_preview(bad_score)}")
    if problems:
        raise InvalidArgument("invalid results: " + "; ".join(problems))
    if not scores:
        raise InvalidArgument("results are empty: register at least one graded validation item")
    return scores


def profile_from_results(
    scores: Mapping[str, float], item_clusters: Mapping[str, int], k: int
) -> Profile:
    """Ψ_k = (err_k + α) / (n_k + 2α); a cluster without items gets the overall error.

    Items absent from ``item_clusters`` are ignored, which is what a re-clustering
    with a changed validation set needs.
    """
    errors = np.zeros(k, dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    for item_id, score in scores.items():
        cluster = item_clusters.get(item_id)
        if cluster is None:
            continue
        errors[cluster] += 1.0 - score
        counts[cluster] += 1
    n = int(counts.sum())
    overall = (float(errors.sum()) + LAPLACE_ALPHA) / (n + 2.0 * LAPLACE_ALPHA)
    rates = np.full(k, overall, dtype=np.float64)
    seen = counts > 0
    rates[seen] = (errors[seen] + LAPLACE_ALPHA) / (counts[seen] + 2.0 * LAPLACE_ALPHA)
    return Profile(rates, counts, overall, n)


def profile_from_soft_results(
    scores: Mapping[str, float],
    item_rows: Mapping[str, int],
    weights: np.ndarray,
    item_clusters: Mapping[str, int],
    k: int,
) -> Profile:
    """Ψ_k = (Σ_i w_ik·err_i + α) / (Σ_i w_ik + 2α) with soft weights w = Φ(item).

    A cluster with less than ``MIN_SOFT_MASS`` of soft count gets the overall
    error. Counts are the hard ones (each item in its ``item_clusters`` entry).
    Items absent from ``item_rows`` are ignored, as in ``profile_from_results``.
    """
    known = [(item_rows[i], 1.0 - s) for i, s in scores.items() if i in item_rows]
    rows = np.asarray([r for r, _ in known], dtype=np.int64)
    errors = np.asarray([e for _, e in known], dtype=np.float64).reshape(-1, 1)
    w = np.asarray(weights, dtype=np.float64)[rows].reshape(len(known), k)
    rates, overall = soft_error_rates(w, errors)
    counts = np.zeros(k, dtype=np.int64)
    for item_id in scores:
        if item_id in item_rows:
            counts[item_clusters[item_id]] += 1
    return Profile(rates[:, 0], counts, float(overall[0]), len(known))


def soft_error_rates(
    weights: np.ndarray, errors: np.ndarray, known: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ψ (K, L) and the overall errors (L,) of L models at once, from soft counts.

    ``weights`` (n, K) are the items' Φ (one-hot for K-means), ``errors`` (n, L)
    each model's error per item, ``known`` (n, L) which of those exist (all if
    None). The one statement of the formula: registration, ``fit -k auto`` and
    the bench all use it.
    """
    w = np.asarray(weights, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    m = np.ones_like(e) if known is None else np.asarray(known, dtype=np.float64)
    e = np.where(m > 0, e, 0.0)
    overall = (e.sum(axis=0) + LAPLACE_ALPHA) / (m.sum(axis=0) + 2.0 * LAPLACE_ALPHA)
    mass = w.T @ m  # (K, L)
    rates = (w.T @ e + LAPLACE_ALPHA) / (mass + 2.0 * LAPLACE_ALPHA)
    return np.where(mass >= MIN_SOFT_MASS, rates, overall[None, :]), overall


def profile_from_rates(error_rates: Sequence[float], k: int) -> Profile:
    """Accepts an explicit Ψ for models graded elsewhere, after checking its shape and range."""
    rates = np.asarray(list(error_rates), dtype=np.float64)
    if rates.shape != (k,):
        raise InvalidArgument(
            f"profile has {rates.shape[0]} error rate(s) but the active clustering has K={k}"
        )
    if not np.all(np.isfinite(rates)) or np.any(rates < 0.0) or np.any(rates > 1.0):
        raise InvalidArgument("profile error rates must all be finite and within [0, 1]")
    return Profile(rates, np.zeros(k, dtype=np.int64), float(rates.mean()), 0)


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")
