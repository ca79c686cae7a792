"""`fit -k auto`: cross-validation over K on synthetic data whose best K is known, and the rule."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar._choose_k import K_GRID, choose_k, k_grid, llm_pools, rule_k
from sidecar._errors import InvalidArgument

N_TOPICS = 3


def topics(n_per_topic: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tight topics; LLM j is right 95% of the time on topic j % 3 and 20% elsewhere.

    One ranking (K = 1) or two clusters (K = 2, two topics merged) must lose
    routing quality; K = 3 has it all, and more clusters only split topics.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((8, 8)))[0][:N_TOPICS]
    topic = np.repeat(np.arange(N_TOPICS), n_per_topic)
    x = basis[topic] + 0.05 * rng.standard_normal((topic.size, 8))
    n_llms = 6
    p_right = np.where(topic[:, None] == np.arange(n_llms)[None, :] % N_TOPICS, 0.95, 0.2)
    scores = (rng.random(p_right.shape) < p_right).astype(np.float64)
    costs = np.array([1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    return x, scores, costs


def test_cross_validation_finds_the_number_of_topics() -> None:
    x, scores, costs = topics()
    choice = choose_k(x, scores, costs, n_val=60, seed=0, reps=2)
    assert choice.k == N_TOPICS
    assert choice.method == "cv-held-out-llms"
    assert choice.grid == (1, 2, 3, 5, 8, 12)  # K <= n_val / 4 = 15
    area = dict(zip(choice.grid, choice.area_mean, strict=True))
    assert area[3] > area[2] + 0.01 > area[1] + 0.01
    info = choice.info()
    assert info["k"] == 3 and len(info["curve"]) == len(choice.grid)  # type: ignore[arg-type]
    assert "<- chosen" in choice.table().splitlines()[3]


def test_cross_validation_of_a_learned_map_holds_llms_out() -> None:
    x, scores, costs = topics(60, seed=1)
    lines: list[str] = []
    choice = choose_k(
        x,
        scores,
        costs,
        n_val=40,
        map_kind="learned",
        seed=0,
        reps=1,
        grid=(1, 2, 3, 5),
        progress=lines.append,
    )
    assert choice.details["llm_pools"] == [2, 2, 2]  # six LLMs, three held-out folds
    assert choice.k >= 3
    assert len(lines) == 4 and lines[0].startswith("K=  1")


def test_choice_is_deterministic_for_a_seed() -> None:
    x, scores, costs = topics(40, seed=2)
    a = choose_k(x, scores, costs, n_val=40, seed=3, reps=1, grid=(1, 2, 3))
    b = choose_k(x, scores, costs, n_val=40, seed=3, reps=1, grid=(1, 2, 3))
    assert a == b


def test_missing_labels_are_tolerated() -> None:
    x, scores, costs = topics(40, seed=3)
    scores[::7, 2] = np.nan
    choice = choose_k(x, scores, costs, n_val=40, seed=0, reps=1, grid=(1, 3))
    assert all(np.isfinite(choice.area_mean))


@pytest.mark.parametrize(
    ("n_val", "k"), [(0, 1), (10, 1), (100, 3), (300, 5), (1000, 10), (2205, 15), (10**6, 40)]
)
def test_the_rule_without_labels(n_val: int, k: int) -> None:
    choice = rule_k(n_val, n_distinct_train=10_000)
    assert (choice.k, choice.method) == (k, "rule")
    assert "sqrt" in choice.table()


def test_the_rule_never_exceeds_the_distinct_training_prompts() -> None:
    assert rule_k(1000, n_distinct_train=4).k == 4


def test_the_grid_is_bounded_by_the_data() -> None:
    assert k_grid(100, 1000) == (1, 2, 3, 5, 8, 12, 16, 25)
    assert k_grid(20, 1000) == (1, 2, 3, 5)
    assert k_grid(1000, 7) == (1, 2, 3, 5)
    assert k_grid(3, 1000) == (1,)
    assert k_grid(10_000, 10_000) == K_GRID


def test_pools_hold_llms_out_only_for_a_learned_map() -> None:
    rng = np.random.default_rng(0)
    assert [p.tolist() for p in llm_pools(11, "kmeans", rng)] == [list(range(11))]
    pools = llm_pools(11, "learned", rng)
    assert sorted(len(p) for p in pools) == [3, 4, 4]
    assert sorted(np.concatenate(pools).tolist()) == list(range(11))


def test_too_little_to_cross_validate_is_a_clear_error() -> None:
    x, scores, costs = topics(10)
    with pytest.raises(InvalidArgument, match="at least 2 training LLMs and 40"):
        choose_k(x[:20], scores[:20], costs, n_val=10)
    with pytest.raises(InvalidArgument, match="disagree"):
        choose_k(x, scores, costs[:-1], n_val=10)
