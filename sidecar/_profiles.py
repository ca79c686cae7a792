"""Profiles Ψ: a model's per-cluster error rates, computed from graded validation items.

This is the whole "training" a new model needs under UniRoute, so it lives in
one small pure module that the registry calls both at registration and when a
new clustering re-assigns the validation items.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._errors import InvalidArgument

#: Laplace smoothing pseudo-count: one pseudo-error and one pseudo-success per cluster.
LAPLACE_ALPHA = 1.0


@dataclass(frozen=True)
class Profile:
    """Ψ plus the counts behind it, ready to store and publish."""

    error_rates: np.ndarray  # float64 (K,), each in (0, 1) or [0, 1] if explicit
    validation_counts: np.ndarray  # int64 (K,)
    overall_error: float
    result_count: int


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
