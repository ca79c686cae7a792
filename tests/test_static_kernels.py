"""The static embedder's kernels against a NumPy statement of the same embedding and rule.

The embedding reference is float64 (weighted sum of table rows, then L2
normalisation), so the kernel's float32 result must agree to float32 rounding.
Decisions must match ``_kernels.route`` on the reference embedding exactly,
since ``route_tokens`` runs that very kernel after embedding.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from sidecar._kernels import route
from sidecar._static_kernels import embed_tokens, route_tokens, warm_up

V, D, K, M = 500, 64, 7, 5
UNK = 3


def _model(dtype: type, seed: int = 0) -> tuple[npt.NDArray, npt.NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    if dtype is np.int8:
        table = rng.integers(-127, 128, (V, D)).astype(np.int8)
    else:
        table = rng.standard_normal((V, D)).astype(np.float32)
    weight = rng.uniform(0.1, 1.0, V).astype(np.float32)
    return table, weight


def ref_embed(ids: npt.NDArray[np.int32], table: npt.NDArray, weight: npt.NDArray) -> npt.NDArray:
    if ids.size == 0:
        return np.full(table.shape[1], np.nan)
    acc = (weight[ids, None].astype(np.float64) * table[ids].astype(np.float64)).sum(axis=0)
    norm = np.linalg.norm(acc)
    return acc / norm if norm > 0 else np.full(table.shape[1], np.nan)


def _routing(rng: np.random.Generator, n: int) -> dict[str, npt.NDArray]:
    centroids = rng.standard_normal((K, D)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return {
        "centroids": centroids,
        "psi": rng.random((M, K)).astype(np.float32),
        "cost": rng.random(M).astype(np.float32),
        "lams": rng.uniform(0, 2, n),
        "masks": rng.random((n, M)) < 0.8,
    }


def _spans(rows: list[npt.NDArray[np.int32]]) -> tuple[npt.NDArray, npt.NDArray]:
    ends = np.cumsum([r.size for r in rows]).astype(np.int64)
    spans = np.stack([ends - [r.size for r in rows], ends], axis=1).astype(np.int64)
    ids = np.concatenate(rows).astype(np.int32) if rows else np.empty(0, np.int32)
    return ids, np.ascontiguousarray(spans)


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
@pytest.mark.parametrize("length", [1, 2, 25, 260, 5_000, 200_000])
def test_embedding_matches_numpy(dtype: type, length: int) -> None:
    table, weight = _model(dtype)
    ids = np.random.default_rng(length).integers(0, V, length).astype(np.int32)
    ids_all, spans = _spans([ids])
    out = np.empty((1, D), np.float32)
    embed_tokens(ids_all, spans, table, weight, out)
    np.testing.assert_allclose(
        out[0], ref_embed(ids, table, weight), atol=2e-5 if length < 10_000 else 1e-4
    )
    assert abs(float(np.linalg.norm(out[0])) - 1.0) < 1e-5


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
def test_empty_and_all_unknown_rows(dtype: type) -> None:
    table, weight = _model(dtype)
    unknown = np.full(40, UNK, dtype=np.int32)
    ids, spans = _spans([np.empty(0, np.int32), unknown])
    out = np.empty((2, D), np.float32)
    embed_tokens(ids, spans, table, weight, out)
    assert np.isnan(out[0]).all()  # no tokens: no direction, routed as "no cluster"
    np.testing.assert_allclose(out[1], ref_embed(unknown[:1], table, weight), atol=2e-6)


def test_a_zero_row_has_no_direction() -> None:
    table, weight = _model(np.float32)
    table = table.copy()
    table[7] = 0.0
    ids, spans = _spans([np.array([7, 7], np.int32)])
    out = np.empty((1, D), np.float32)
    embed_tokens(ids, spans, table, weight, out)
    assert np.isnan(out[0]).all()


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_route_tokens_decides_like_route_on_the_reference_embedding(dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    table, weight = _model(dtype, seed)
    rows = [rng.integers(0, V, rng.integers(1, 400)).astype(np.int32) for _ in range(6)]
    rows[2] = np.empty(0, np.int32)  # an empty prompt among them
    ids, spans = _spans(rows)
    given = rng.standard_normal(D).astype(np.float32)
    spans[4] = (-1, -1)  # row 4 arrives with its own embedding
    n = len(rows)
    p = _routing(rng, n)
    X = np.zeros((n, D), np.float32)
    X[4] = given / np.linalg.norm(given)
    scores, clusters, chosen = (
        np.empty((n, M), np.float32),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
    )
    route_tokens(ids, spans, table, weight, p["centroids"], p["psi"], p["cost"], p["lams"],
                 p["masks"], X, scores, clusters, chosen)  # fmt: skip

    expected = np.empty_like(X)
    embed_tokens(ids, spans, table, weight, expected)
    expected[4] = X[4]
    np.testing.assert_array_equal(X, expected, strict=True)  # the same embedding code
    for i, r in enumerate(rows):
        if i != 4:
            np.testing.assert_allclose(X[i], ref_embed(r, table, weight), atol=2e-5)
    ref_scores, ref_clusters, ref_chosen = (np.empty_like(scores), np.empty_like(clusters),
                                            np.empty_like(chosen))  # fmt: skip
    route(X, p["centroids"], p["psi"], p["cost"], p["lams"], p["masks"], ref_scores, ref_clusters,
          ref_chosen)  # fmt: skip
    np.testing.assert_array_equal(clusters, ref_clusters)
    np.testing.assert_array_equal(chosen, ref_chosen)
    np.testing.assert_array_equal(scores, ref_scores)
    assert clusters[2] == -1 and chosen[2] == -1  # the empty row: no cluster, no choice
    for i in (0, 1, 3, 5):
        dots = p["centroids"].astype(np.float64) @ ref_embed(rows[i], table, weight)
        assert clusters[i] == int(np.argmax(dots)) or np.sort(dots)[-1] - np.sort(dots)[-2] < 1e-5


def test_bad_input_is_refused_not_read_out_of_bounds() -> None:
    table, weight = _model(np.float32)
    out = np.empty((1, D), np.float32)
    with pytest.raises(ValueError, match="token id"):
        embed_tokens(np.array([V], np.int32), np.array([[0, 1]], np.int64), table, weight, out)
    with pytest.raises(ValueError, match="token id"):
        embed_tokens(np.array([-1], np.int32), np.array([[0, 1]], np.int64), table, weight, out)
    with pytest.raises(ValueError, match="span"):
        embed_tokens(np.array([1], np.int32), np.array([[0, 2]], np.int64), table, weight, out)
    with pytest.raises(ValueError, match="dimension"):
        embed_tokens(np.array([1], np.int32), np.array([[0, 1]], np.int64), table, weight,
                     np.empty((1, D + 1), np.float32))  # fmt: skip
    with pytest.raises(ValueError, match="weight"):
        embed_tokens(np.array([1], np.int32), np.array([[0, 1]], np.int64), table, weight[:-1], out)
    with pytest.raises(TypeError):  # explicit signatures: no silent conversion or recompiling
        embed_tokens(np.array([1], np.int64), np.array([[0, 1]], np.int64), table, weight, out)


def test_a_rows_embedding_does_not_depend_on_its_batch() -> None:
    table, weight = _model(np.int8)
    rng = np.random.default_rng(9)
    rows = [rng.integers(0, V, rng.integers(1, 300)).astype(np.int32) for _ in range(8)]
    ids, spans = _spans(rows)
    together = np.empty((8, D), np.float32)
    embed_tokens(ids, spans, table, weight, together)
    for i, r in enumerate(rows):
        alone = np.empty((1, D), np.float32)
        embed_tokens(*_spans([r]), table, weight, alone)
        np.testing.assert_array_equal(alone[0], together[i])


def test_warm_up_runs() -> None:
    for dtype in (np.int8, np.float32):
        warm_up(*_model(dtype))
