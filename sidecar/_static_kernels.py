"""Numba kernels for the static embedder: token ids to embedding, and to a routing decision.

A static embedding is a weighted mean of table rows (one per token id),
L2-normalised: ``x = normalise(sum_t weight[id_t] * table[id_t])``. The table
is int8 with the per-row dequantisation scale folded into ``weight`` (or
float32 with weight = the token weight alone). That is a gather and a sum, a few
microseconds for any prompt length, so the whole prompt is embedded.

``route_tokens`` goes from token ids to the decision in ONE compiled call: it
embeds the rows that need it into ``X`` and then runs ``_kernels.route`` on all
rows, the very kernel Route uses for the ONNX embedder, so both embedders make
their decisions with the same code. ``embed_tokens`` is the same embedding for
``fit`` and ``embed_batch`` (so fitting and routing agree bit for bit).

Contract (as in ``_kernels``: explicit signatures, C-contiguous arrays of
exactly these dtypes, nothing converted or copied, the GIL released):

* ``ids`` int32[T]: every prompt's ids, concatenated; each must be in
  [0, V) or ``ValueError`` is raised.
* ``spans`` int64[N, 2]: row n's ids are ``ids[spans[n, 0]:spans[n, 1]]``; a
  start of -1 means row n of ``X`` is already filled (a given embedding or a
  cache hit) and is left alone.
* ``table`` int8 or float32 [V, D]; ``weight`` float32[V].
* ``X`` float32[N, D], written for every embedded row.
* A row with no ids, or whose weighted sum is zero or not finite, gets a NaN
  vector: ``_kernels.route`` then reports cluster -1 and chosen -1 for it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numba import njit, types

from . import _kernels

__all__ = ["embed_tokens", "route_tokens", "warm_up"]

log = logging.getLogger("sidecar.static_kernels")

F32Array = npt.NDArray[np.float32]

_I32_1D = types.Array(types.int32, 1, "C", readonly=True)
_I64_2D = types.Array(types.int64, 2, "C", readonly=True)
_F32_1D = types.Array(types.float32, 1, "C", readonly=True)
_F32_2D = types.Array(types.float32, 2, "C", readonly=True)
_F64_1D = types.Array(types.float64, 1, "C", readonly=True)
_BOOL_2D = types.Array(types.boolean, 2, "C", readonly=True)
_F32_2D_OUT = types.Array(types.float32, 2, "C")
_I64_1D_OUT = types.Array(types.int64, 1, "C")
_TABLES = (types.Array(types.int8, 2, "C", readonly=True), _F32_2D)

_SIGS_EMBED = [types.void(_I32_1D, _I64_2D, table, _F32_1D, _F32_2D_OUT) for table in _TABLES]
_SIGS_ROUTE = [
    types.void(
        _I32_1D,  # ids
        _I64_2D,  # spans
        table,  # table
        _F32_1D,  # weight
        _F32_2D,  # centroids
        _F32_2D,  # psi
        _F32_1D,  # cost
        _F64_1D,  # lams
        _BOOL_2D,  # masks
        _F32_2D_OUT,  # X (in for given rows, out for embedded ones)
        _F32_2D_OUT,  # out_scores
        _I64_1D_OUT,  # out_clusters
        _I64_1D_OUT,  # out_chosen
    )
    for table in _TABLES
]


@njit(nogil=True, fastmath={"reassoc", "contract"})
def _accumulate(
    ids: npt.NDArray[np.int32], table: F32Array, weight: F32Array, acc: F32Array
) -> None:
    # acc must be zero on entry. reassoc lets LLVM vectorise the row loop; the
    # order over tokens is fixed, so a prompt's vector does not depend on its batch.
    n_vocab = table.shape[0]
    for t in ids:
        if t < 0 or t >= n_vocab:
            raise ValueError("token id out of the table's range")
        w = weight[t]
        row = table[t]
        for j in range(acc.shape[0]):
            acc[j] += w * np.float32(row[j])


@njit(nogil=True)
def _embed_row(
    ids: npt.NDArray[np.int32], table: F32Array, weight: F32Array, out: F32Array
) -> None:
    out[:] = np.float32(0.0)
    _accumulate(ids, table, weight, out)
    norm2 = np.float32(0.0)
    for j in range(out.shape[0]):
        norm2 += out[j] * out[j]
    if not (norm2 > np.float32(0.0) and norm2 < np.float32(np.inf)):
        out[:] = np.float32(np.nan)  # empty, all-zero or overflowed: no direction
        return
    inv = np.float32(1.0) / np.sqrt(norm2)
    for j in range(out.shape[0]):
        out[j] *= inv


@njit(nogil=True)
def _embed_rows(
    ids: npt.NDArray[np.int32],
    spans: npt.NDArray[np.int64],
    table: F32Array,
    weight: F32Array,
    X: F32Array,
) -> None:
    # Both entry points: check the shapes and spans, then embed every row with ids.
    if spans.shape[1] != 2 or spans.shape[0] != X.shape[0]:
        raise ValueError("spans must be N x 2, one row per row of X")
    if X.shape[1] != table.shape[1]:
        raise ValueError("X and the table have different dimensions")
    if weight.shape[0] != table.shape[0]:
        raise ValueError("weight must have one entry per table row")
    for n in range(spans.shape[0]):
        if spans[n, 0] >= 0 and not (spans[n, 0] <= spans[n, 1] <= ids.shape[0]):
            raise ValueError("a span lies outside ids")
    for n in range(spans.shape[0]):
        if spans[n, 0] >= 0:
            _embed_row(ids[spans[n, 0] : spans[n, 1]], table, weight, X[n])


@njit(_SIGS_EMBED, cache=True, nogil=True)
def embed_tokens(
    ids: npt.NDArray[np.int32],
    spans: npt.NDArray[np.int64],
    table: F32Array,
    weight: F32Array,
    X: F32Array,
) -> None:
    """Row n of X = the normalised weighted mean of its ids' rows (start -1: row kept)."""
    _embed_rows(ids, spans, table, weight, X)


@njit(_SIGS_ROUTE, cache=True, nogil=True)
def route_tokens(
    ids: npt.NDArray[np.int32],
    spans: npt.NDArray[np.int64],
    table: F32Array,
    weight: F32Array,
    centroids: F32Array,
    psi: F32Array,
    cost: F32Array,
    lams: npt.NDArray[np.float64],
    masks: npt.NDArray[np.bool_],
    X: F32Array,
    out_scores: F32Array,
    out_clusters: npt.NDArray[np.int64],
    out_chosen: npt.NDArray[np.int64],
) -> None:
    """Embeds the rows of X that have ids, then ``_kernels.route`` over every row."""
    _embed_rows(ids, spans, table, weight, X)
    _kernels.route(X, centroids, psi, cost, lams, masks, out_scores, out_clusters, out_chosen)


def _refresh_if_kernels_changed() -> None:
    """Numba's disk cache notices edits to this file only, not to ``_kernels.py``, whose
    ``route`` is compiled into ``route_tokens``; recompile when that file's source changed."""
    source = Path(_kernels.__file__).read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    cache_path = getattr(getattr(route_tokens, "_cache", None), "_cache_path", None)
    if cache_path is None:
        return
    stamp = Path(cache_path) / "_static_kernels.route_tokens.deps"
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    route_tokens.recompile()
    try:
        stamp.write_text(digest)
    except OSError as exc:  # a read-only install: recompiled in memory, every start
        log.debug("cannot write %s: %s", stamp, exc)


_refresh_if_kernels_changed()


def warm_up(table: F32Array, weight: F32Array) -> None:
    """Runs both kernels once on ``table``'s type, so the first request pays no loading."""
    dim = table.shape[1]
    ids = np.zeros(3, dtype=np.int32)
    spans = np.array([[0, 3], [-1, -1]], dtype=np.int64)
    X = np.zeros((2, dim), dtype=np.float32)
    X[1, 0] = 1.0
    embed_tokens(ids, spans, table, weight, X)
    centroids = np.eye(2, dim, dtype=np.float32)
    psi = np.full((2, 2), 0.5, dtype=np.float32)
    cost = np.ones(2, dtype=np.float32)
    route_tokens(
        ids,
        spans,
        table,
        weight,
        centroids,
        psi,
        cost,
        np.zeros(2),
        np.ones((2, 2), dtype=np.bool_),
        X,
        np.empty((2, 2), dtype=np.float32),
        np.empty(2, dtype=np.int64),
        np.empty(2, dtype=np.int64),
    )
