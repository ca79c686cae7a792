"""Ψ from graded validation items: Laplace smoothing, empty clusters, and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sidecar._errors import InvalidArgument
from sidecar._profiles import (
    LAPLACE_ALPHA,
    Profile,
    profile_from_rates,
    profile_from_results,
    validate_results,
)

# Three clusters; cluster 2 has no validation items at all.
CLUSTERS = {"a": 0, "b": 0, "c": 0, "d": 1, "e": 1}


def test_alpha_is_one() -> None:
    assert LAPLACE_ALPHA == 1.0


def test_laplace_smoothing_by_hand() -> None:
    # cluster 0: a right, b wrong, c wrong -> err 2 of 3 -> (2+1)/(3+2) = 0.6
    # cluster 1: d right, e right         -> err 0 of 2 -> (0+1)/(2+2) = 0.25
    # cluster 2: empty -> overall (2+1)/(5+2) = 3/7
    scores = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 1.0, "e": 1.0}
    p = profile_from_results(scores, CLUSTERS, 3)
    assert isinstance(p, Profile)
    np.testing.assert_allclose(p.error_rates, [0.6, 0.25, 3 / 7], rtol=0, atol=1e-12)
    assert p.error_rates.dtype == np.float64
    assert p.validation_counts.dtype == np.int64
    assert p.validation_counts.tolist() == [3, 2, 0]
    assert p.overall_error == pytest.approx(3 / 7, abs=1e-12)
    assert p.result_count == 5


def test_all_wrong_and_all_right_stay_strictly_inside_unit_interval() -> None:
    all_wrong = profile_from_results({k: 0.0 for k in CLUSTERS}, CLUSTERS, 2)
    all_right = profile_from_results({k: 1.0 for k in CLUSTERS}, CLUSTERS, 2)
    # cluster 0 has 3 items, cluster 1 has 2.
    np.testing.assert_allclose(all_wrong.error_rates, [4 / 5, 3 / 4], atol=1e-12)
    np.testing.assert_allclose(all_right.error_rates, [1 / 5, 1 / 4], atol=1e-12)
    assert all_wrong.overall_error == pytest.approx(6 / 7)
    assert all_right.overall_error == pytest.approx(1 / 7)


def test_empty_cluster_gets_overall_error_not_one_half() -> None:
    # Overall: 4 errors of 5 -> (4+1)/(5+2) = 5/7, clearly different from the 0.5 prior.
    scores = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0, "e": 1.0}
    p = profile_from_results(scores, CLUSTERS, 4)
    assert p.validation_counts.tolist() == [3, 2, 0, 0]
    assert p.error_rates[2] == pytest.approx(5 / 7)
    assert p.error_rates[3] == pytest.approx(5 / 7)
    assert p.error_rates[0] == pytest.approx(4 / 5)
    assert p.error_rates[1] == pytest.approx(2 / 4)


def test_no_items_at_all_gives_one_half_everywhere() -> None:
    p = profile_from_results({}, CLUSTERS, 3)
    np.testing.assert_allclose(p.error_rates, [0.5, 0.5, 0.5])
    assert p.result_count == 0
    assert p.validation_counts.tolist() == [0, 0, 0]


def test_partial_credit_scores() -> None:
    # Error of an item is 1 - score.
    # cluster 0: errors 0.75 + 0.5 + 0.0 = 1.25 over 3 -> 2.25/5 = 0.45
    # cluster 1: errors 0.9 + 0.1 = 1.0 over 2 -> 2/4 = 0.5
    scores = {"a": 0.25, "b": 0.5, "c": 1.0, "d": 0.1, "e": 0.9}
    p = profile_from_results(scores, CLUSTERS, 3)
    np.testing.assert_allclose(p.error_rates[:2], [0.45, 0.5], atol=1e-12)
    # overall: 2.25 errors over 5 -> 3.25/7
    assert p.overall_error == pytest.approx(3.25 / 7)
    assert p.error_rates[2] == pytest.approx(3.25 / 7)


def test_items_missing_from_cluster_map_are_ignored() -> None:
    scores = {"a": 0.0, "d": 1.0, "gone-1": 0.0, "gone-2": 0.0}
    p = profile_from_results(scores, CLUSTERS, 2)
    assert p.result_count == 2
    assert p.validation_counts.tolist() == [1, 1]
    np.testing.assert_allclose(p.error_rates, [2 / 3, 1 / 3], atol=1e-12)
    assert p.overall_error == pytest.approx(2 / 4)


def test_k_one_is_a_single_smoothed_rate() -> None:
    clusters = {"x": 0, "y": 0, "z": 0, "w": 0}
    p = profile_from_results({"x": 1.0, "y": 0.0, "z": 0.0, "w": 0.0}, clusters, 1)
    np.testing.assert_allclose(p.error_rates, [4 / 6])
    assert p.overall_error == pytest.approx(4 / 6)


# ----------------------------------------------------------------------- validate_results


def test_validate_results_happy_path() -> None:
    out = validate_results([("a", 1.0), ("d", 0), ("e", 0.25)], CLUSTERS)
    assert out == {"a": 1.0, "d": 0.0, "e": 0.25}
    assert all(type(v) is float for v in out.values())


def test_validate_results_accepts_bounds() -> None:
    assert validate_results([("a", 0.0), ("b", 1.0)], CLUSTERS) == {"a": 0.0, "b": 1.0}


def test_validate_results_unknown_ids() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_results([("a", 1.0), ("zzz", 1.0), ("yyy", 0.0)], CLUSTERS)
    msg = str(info.value)
    assert "2 unknown" in msg
    assert "'zzz'" in msg and "'yyy'" in msg


def test_validate_results_duplicates() -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_results([("a", 1.0), ("b", 0.0), ("a", 0.0)], CLUSTERS)
    msg = str(info.value)
    assert "1 duplicate" in msg
    assert "'a'" in msg


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf, -math.inf])
def test_validate_results_bad_scores(bad: float) -> None:
    with pytest.raises(InvalidArgument, match=r"outside \[0, 1\]"):
        validate_results([("a", 1.0), ("b", bad)], CLUSTERS)


def test_validate_results_reports_every_problem_in_one_message() -> None:
    results = [
        ("a", 1.0),
        ("nope", 1.0),
        ("a", 0.0),
        ("b", math.nan),
        ("c", 2.0),
    ]
    with pytest.raises(InvalidArgument) as info:
        validate_results(results, CLUSTERS)
    msg = str(info.value)
    assert "1 unknown" in msg and "'nope'" in msg
    assert "1 duplicate" in msg
    assert "2 score(s) outside [0, 1]" in msg
    assert "b=nan" in msg and "c=2.0" in msg


def test_validate_results_preview_is_truncated() -> None:
    results = [(f"u{i}", 1.0) for i in range(8)]
    with pytest.raises(InvalidArgument) as info:
        validate_results(results, CLUSTERS)
    msg = str(info.value)
    assert "8 unknown" in msg
    assert "(and 3 more)" in msg
    assert "'u4'" in msg and "'u5'" not in msg


def test_validate_results_empty() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        validate_results([], CLUSTERS)


def test_validate_results_accepts_a_generator() -> None:
    out = validate_results(((k, 1.0) for k in ("a", "b")), CLUSTERS)
    assert out == {"a": 1.0, "b": 1.0}


# ---------------------------------------------------------------------- profile_from_rates


def test_profile_from_rates_happy_path() -> None:
    p = profile_from_rates([0.1, 0.2, 0.6], 3)
    np.testing.assert_allclose(p.error_rates, [0.1, 0.2, 0.6])
    assert p.error_rates.dtype == np.float64
    assert p.validation_counts.tolist() == [0, 0, 0]
    assert p.validation_counts.dtype == np.int64
    assert p.overall_error == pytest.approx(0.3)
    assert p.result_count == 0


def test_profile_from_rates_accepts_closed_interval_and_arrays() -> None:
    p = profile_from_rates(np.array([0.0, 1.0]), 2)  # type: ignore[arg-type]
    np.testing.assert_array_equal(p.error_rates, [0.0, 1.0])


@pytest.mark.parametrize("rates", [[0.1, 0.2], [0.1, 0.2, 0.3, 0.4], []])
def test_profile_from_rates_wrong_length(rates: list[float]) -> None:
    with pytest.raises(InvalidArgument, match="K=3"):
        profile_from_rates(rates, 3)


@pytest.mark.parametrize(
    "rates",
    [[0.1, -0.001, 0.2], [0.1, 1.5, 0.2], [0.1, math.nan, 0.2], [math.inf, 0.1, 0.2]],
)
def test_profile_from_rates_out_of_range(rates: list[float]) -> None:
    with pytest.raises(InvalidArgument, match=r"within \[0, 1\]"):
        profile_from_rates(rates, 3)
