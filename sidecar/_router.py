"""The Route path: validate, embed, then one Numba kernel call against the current table.

Plain Python with no gRPC and no store in it, so the same logic serves the
servicers, the tests and the benchmarks. Route and RouteBatch take the same
path (a Route is a batch of one): the embedding cache, the micro-batcher, the
metrics and the kernel are the same for both. The only shared state read is
the table reference, taken once per call. Its records (``Query``,
``Decision``) live in ``_route_records``, the kernels in ``_kernels`` and
``_static_kernels``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from . import _kernels
from ._batcher import MicroBatcher
from ._cache import EmbeddingCache, prompt_key
from ._embedder import BatchEmbedding, Embedding, Encoded
from ._errors import EmbeddingFailed, FailedPrecondition, InvalidArgument
from ._metrics import Metrics, StageTimes
from ._route_records import Decision, Query
from ._table import RoutingTable, TableHolder

MAX_REQUEST_ID_BYTES = 128
DEFAULT_MAX_PROMPT_BYTES = 256 * 1024  # bounds tokenising work; truncation keeps 256 tokens
DEFAULT_MAX_BATCH_REQUESTS = 1024


class EmbedderLike(Protocol):
    """What the router needs from an embedder (tests substitute one with another fingerprint)."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, text: str) -> Encoded: ...

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def embed(self, text: str) -> Embedding: ...

    def embed_batch(self, texts: Sequence[str]) -> BatchEmbedding: ...


class Router:
    """Answers Route and RouteBatch from whatever table is current."""

    def __init__(
        self,
        tables: TableHolder,
        embedder: EmbedderLike,
        *,
        default_cost_weight: float = 0.0,
        cache: EmbeddingCache[Embedding] | None = None,
        batcher: MicroBatcher | None = None,
        metrics: Metrics | None = None,
        max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES,
        max_batch_requests: int = DEFAULT_MAX_BATCH_REQUESTS,
    ) -> None:
        _check_cost_weight(default_cost_weight)
        self.max_prompt_bytes = max_prompt_bytes
        self.max_batch_requests = max_batch_requests
        self.tables = tables
        self.embedder = embedder
        self.default_cost_weight = float(default_cost_weight)
        self.cache = cache
        self.batcher = batcher
        self.metrics = metrics

    def route(self, query: Query, *, path: str = "route") -> Decision:
        """``path`` labels the routes metric: "route" for the RPCs, "extproc" for Envoy's."""
        return self._route([query], batch=False, path=path)[0]

    def route_batch(self, queries: Sequence[Query]) -> list[Decision]:
        """Validates every query before computing any, then decides all from one table."""
        if not queries:
            raise InvalidArgument("RouteBatch needs at least one request")
        if len(queries) > self.max_batch_requests:
            raise InvalidArgument(
                f"RouteBatch takes at most {self.max_batch_requests} requests, got {len(queries)}; "
                "split the batch"
            )
        return self._route(queries, batch=True)

    def _route(
        self, queries: Sequence[Query], *, batch: bool, path: str = "route"
    ) -> list[Decision]:
        started = time.perf_counter()
        table = self._table()  # one read; these requests use this table throughout
        n = len(queries)
        vectors = np.empty((n, table.dim), dtype=np.float32)
        masks = np.empty((n, table.size), dtype=np.bool_)
        lams = np.empty(n, dtype=np.float64)
        to_embed: list[int] = []
        for i, query in enumerate(queries):
            try:
                lams[i] = self._prepare(table, query, vectors[i], masks[i])
            except InvalidArgument as exc:
                if not batch:
                    raise
                raise InvalidArgument(f"requests[{i}]: {exc}") from exc
            if not len(query.embedding):
                to_embed.append(i)

        times = [StageTimes() for _ in range(n)]
        tokens = [0] * n  # lists: a Route is usually one row, and numpy's fixed cost is not free
        truncated = [False] * n
        pending = self._embed(
            [queries[i].prompt for i in to_embed],
            to_embed,
            vectors,
            tokens,
            truncated,
            times,
            batch=batch,
        )

        kernel_start = time.perf_counter()
        scores = np.empty((n, table.size), dtype=np.float32)
        clusters = np.empty(n, dtype=np.int64)
        chosen = np.empty(n, dtype=np.int64)
        weights = None
        if not self._route_tokens(pending, table, lams, masks, vectors, scores, clusters, chosen):
            weights = _decide(table, vectors, lams, masks, scores, clusters, chosen)
        done = time.perf_counter()
        decisions = []
        cluster_of, chosen_of, lam_of = clusters.tolist(), chosen.tolist(), lams.tolist()
        for i in range(n):
            if cluster_of[i] < 0:
                where = f" for requests[{i}]" if batch else ""
                raise EmbeddingFailed(
                    f"the embedder returned a non-finite vector{where}; the model file may be "
                    "broken. Re-export it with `sidecar export-embedder`"
                )
            if chosen_of[i] < 0:  # unreachable through the API: empty candidate lists mean "all"
                raise InvalidArgument("no candidate models to choose from")
            decisions.append(
                Decision(
                    table=table,
                    cluster=cluster_of[i],
                    chosen=chosen_of[i],
                    scores=scores[i],
                    mask=masks[i],
                    cost_weight=lam_of[i],
                    truncated=bool(truncated[i]),
                    prompt_tokens=int(tokens[i]),
                    request_id=queries[i].request_id,
                    weights=None if weights is None else weights[i],
                )
            )
        if self.metrics is not None:
            for decision, stage in zip(decisions, times, strict=True):
                stage.kernel, stage.total = (done - kernel_start) / n, done - started
                self.metrics.observe_route(stage, decision.model, decision.cluster, path)
        return decisions

    def _embed(
        self,
        prompts: Sequence[str],
        rows: Sequence[int],
        vectors: np.ndarray,
        tokens: list[int],
        truncated: list[bool],
        times: Sequence[StageTimes],
        *,
        batch: bool = False,
    ) -> _TokenRows | None:
        """Fills rows of ``vectors``: cache first, then one prompt or one batch for the misses.

        A static embedder only tokenises the misses here and returns their ids:
        ``_route_tokens`` embeds them inside the routing kernel.
        """
        missing: list[tuple[int, str, bytes]] = []
        for row, prompt in zip(rows, prompts, strict=True):
            key = b""
            if self.cache is not None:
                key = prompt_key(prompt)
                hit = self.cache.get(key)
                if hit is not None:
                    vectors[row], tokens[row], truncated[row] = (
                        hit.vector,
                        hit.n_tokens,
                        hit.truncated,
                    )
                    continue
            missing.append((row, prompt, key))
        if not missing:
            return None
        if hasattr(self.embedder, "route_tokens"):
            return self._tokenise(missing, tokens, times, len(vectors), batch)
        if len(missing) == 1 or self.batcher is not None:
            embedded = [self._embed_one(prompt, times[row]) for row, prompt, _ in missing]
        else:
            t0 = time.perf_counter()
            result = self.embedder.embed_batch([prompt for _, prompt, _ in missing])
            each = (time.perf_counter() - t0) / len(missing)
            embedded = [
                Embedding(result.vectors[i], int(result.n_tokens[i]), bool(result.truncated[i]))
                for i in range(len(missing))
            ]
            for row, _, _ in missing:
                times[row].embed = each
        for (row, _, key), embedding in zip(missing, embedded, strict=True):
            vectors[row] = embedding.vector
            tokens[row], truncated[row] = embedding.n_tokens, embedding.truncated
            if self.cache is not None:
                self.cache.put(key, embedding)
        return None

    def _tokenise(
        self,
        missing: Sequence[tuple[int, str, bytes]],
        tokens: list[int],
        times: Sequence[StageTimes],
        n_rows: int,
        batch: bool,
    ) -> _TokenRows:
        """The misses' token ids, concatenated, with each row's span (-1: row already filled)."""
        static: Any = self.embedder  # a StaticEmbedder (see _embed)
        spans = np.empty((n_rows, 2), dtype=np.int64)
        if len(missing) < n_rows:
            spans.fill(-1)
        pieces = []
        start = 0
        for row, prompt, _ in missing:
            t0 = time.perf_counter()
            ids = static.tokens(prompt)
            times[row].tokenise = time.perf_counter() - t0
            size = ids.size
            if not size:
                where = f"requests[{row}]: " if batch else ""
                raise InvalidArgument(
                    f"{where}prompt has no tokens to embed (only control characters?); "
                    "send the prompt text, or an embedding"
                )
            tokens[row] = size
            spans[row, 0], spans[row, 1] = start, start + size
            start += size
            pieces.append(ids)
        joined = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return _TokenRows(joined, spans, missing)

    def _route_tokens(
        self,
        pending: _TokenRows | None,
        table: RoutingTable,
        lams: np.ndarray,
        masks: np.ndarray,
        vectors: np.ndarray,
        scores: np.ndarray,
        clusters: np.ndarray,
        chosen: np.ndarray,
    ) -> bool:
        """Static embedder: embeds the pending rows into ``vectors`` and, for a K-means
        table, decides every row in the same kernel call (True). False: decide as usual."""
        if pending is None:
            return False
        static: Any = self.embedder
        decided = getattr(table, "theta", None) is None
        if decided:
            static.route_tokens(
                pending.ids, pending.spans, table, lams, masks, vectors, scores, clusters, chosen
            )
        else:  # a soft (LearnedMap) table has its own kernel; embed for it
            static.embed_spans(pending.ids, pending.spans, vectors)
        if self.cache is not None:
            for row, _, key in pending.missing:
                if np.isfinite(vectors[row, 0]):
                    self.cache.put(
                        key, Embedding(vectors[row].copy(), int(pending.size(row)), False)
                    )
        return decided

    def _embed_one(self, prompt: str, times: StageTimes) -> Embedding:
        """The micro-batcher if on, else tokenise and run (timed by stage)."""
        t0 = time.perf_counter()
        if self.batcher is not None:
            embedded = self.batcher.embed(prompt)  # tokenises and waits for its batch
        else:
            encoded = self.embedder.encode(prompt)
            times.tokenise = time.perf_counter() - t0
            vector = self.embedder.run(encoded.ids, encoded.mask)[0]
            embedded = Embedding(vector, encoded.n_tokens, encoded.truncated)
        times.embed = time.perf_counter() - t0 - times.tokenise
        return embedded

    def _table(self) -> RoutingTable:
        table = self.tables.current
        if table is None:
            raise FailedPrecondition("no clustering is loaded yet; the sidecar is not ready")
        if table.size == 0:
            raise FailedPrecondition(
                "no models are registered yet; register one with `sidecar register` "
                "(RegisterModel) before routing"
            )
        return table

    def _prepare(
        self, table: RoutingTable, query: Query, vector: np.ndarray, mask: np.ndarray
    ) -> float:
        """Checks one query against the table, fills its mask (and given embedding); returns λ."""
        request_id = query.request_id  # UTF-8 takes at most 4 bytes a character
        if len(request_id) * 4 > MAX_REQUEST_ID_BYTES and (
            len(request_id.encode()) > MAX_REQUEST_ID_BYTES
        ):
            raise InvalidArgument(f"request_id is longer than {MAX_REQUEST_ID_BYTES} bytes")
        cost_weight = self.default_cost_weight if query.cost_weight is None else query.cost_weight
        _check_cost_weight(cost_weight)
        if len(query.prompt) > self.max_prompt_bytes // 4:  # cheap bound before encoding
            size = len(query.prompt.encode())
            if size > self.max_prompt_bytes:
                raise InvalidArgument(
                    f"prompt is {size} bytes, over the limit of {self.max_prompt_bytes} bytes; "
                    "only the first tokens are embedded anyway, so send a shorter prompt"
                )
        if len(query.embedding):
            vector[:] = _normalised_embedding(query.embedding, table.dim)
        elif not query.prompt.strip():
            raise InvalidArgument("prompt is empty: send the prompt text, or an embedding")
        mask[:] = table.candidate_mask(query.candidates) if query.candidates else True
        return float(cost_weight)

    def warm_up(self) -> None:
        """Compiles or loads the kernels and runs the embedder once, before SERVING."""
        _kernels.warm_up()
        warm_up: Any = getattr(self.embedder, "warm_up", None)
        if warm_up is not None:
            warm_up()  # the static embedder's own kernels
        self.embedder.embed("warm-up: route this prompt to the best model")
        self.embedder.embed_batch(["warm-up one", "warm-up two, a little longer"])


def _decide(
    table: RoutingTable,
    vectors: np.ndarray,
    lams: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray,
    chosen: np.ndarray,
) -> np.ndarray | None:
    """One kernel call, chosen by the table's map kind; returns Φ per row when soft."""
    if table.theta is None or table.bias is None:
        _kernels.route(
            vectors, table.centroids, table.psi, table.costs, lams, masks, scores, clusters, chosen
        )
        return None
    weights = np.empty((vectors.shape[0], table.k), dtype=np.float64)
    _kernels.route_soft(
        vectors,
        table.theta,
        table.bias,
        table.psi,
        table.costs,
        lams,
        masks,
        weights,
        scores,
        clusters,
        chosen,
    )
    return weights


class _TokenRows(NamedTuple):
    """Prompts tokenised for the static embedder's kernel: ids and (start, end) per row."""

    ids: np.ndarray  # int32, every pending row's ids concatenated
    spans: np.ndarray  # int64 (N, 2); -1 for rows filled already
    missing: Sequence[tuple[int, str, bytes]]  # (row, prompt, cache key)

    def size(self, row: int) -> int:
        return int(self.spans[row, 1] - self.spans[row, 0])


def _check_cost_weight(cost_weight: float) -> None:
    if not (math.isfinite(cost_weight) and cost_weight >= 0.0):
        raise InvalidArgument(f"cost_weight must be a finite number >= 0, got {cost_weight!r}")


def _normalised_embedding(values: Sequence[float], dim: int) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (dim,):
        raise InvalidArgument(
            f"embedding has dimension {vector.shape[0]} but the clustering expects {dim}"
        )
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        raise InvalidArgument("embedding must be finite and non-zero")
    return vector / norm
