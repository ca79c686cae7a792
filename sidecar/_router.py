"""The Route path: validate, embed, then one Numba kernel call against the current table.

Plain Python with no gRPC in it, so the same logic serves the servicer, the
CLI's tests and the benchmarks. The only shared state it reads is the table
reference, taken once per request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import _kernels
from ._cache import EmbeddingCache, prompt_key
from ._errors import FailedPrecondition, InvalidArgument
from ._metrics import Metrics, StageTimes
from ._table import RoutingTable, TableHolder

MAX_REQUEST_ID_BYTES = 128
DEFAULT_MAX_PROMPT_BYTES = 256 * 1024  # far beyond 256 tokens; bounds tokenising work
DEFAULT_MAX_BATCH_REQUESTS = 1024


class EmbeddingLike(Protocol):
    @property
    def vector(self) -> np.ndarray: ...

    @property
    def n_tokens(self) -> int: ...

    @property
    def truncated(self) -> bool: ...


class BatchEmbeddingLike(Protocol):
    @property
    def vectors(self) -> np.ndarray: ...

    @property
    def n_tokens(self) -> np.ndarray: ...

    @property
    def truncated(self) -> np.ndarray: ...


class BatcherLike(Protocol):
    def embed(self, text: str) -> EmbeddingLike: ...


class EncodedLike(Protocol):
    @property
    def ids(self) -> np.ndarray: ...

    @property
    def mask(self) -> np.ndarray: ...

    @property
    def n_tokens(self) -> int: ...

    @property
    def truncated(self) -> bool: ...


class EmbedderLike(Protocol):
    """What the router needs from an embedder; tests can pass any object with these."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed(self, text: str) -> EmbeddingLike: ...

    def encode(self, text: str) -> EncodedLike: ...

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def embed_batch(self, texts: Sequence[str]) -> BatchEmbeddingLike: ...


@dataclass(frozen=True, slots=True)
class _Embedded:
    vector: np.ndarray
    n_tokens: int
    truncated: bool


@dataclass(frozen=True)
class Query:
    """One routing question, already decoded from the wire."""

    prompt: str = ""
    candidates: Sequence[str] = ()
    cost_weight: float | None = None
    embedding: Sequence[float] = ()
    request_id: str = ""


@dataclass(frozen=True)
class Decision:
    """A routing decision and everything needed to explain it."""

    table: RoutingTable
    cluster: int
    chosen: int
    scores: np.ndarray  # float32 (M,), +inf where not a candidate
    mask: np.ndarray  # bool (M,)
    cost_weight: float
    truncated: bool = False
    prompt_tokens: int = 0
    request_id: str = ""

    @property
    def model(self) -> str:
        return self.table.names[self.chosen]

    def candidates(self) -> list[tuple[str, float, float, float]]:
        """(model, expected_error, cost, score) per candidate, in registration order."""
        table, c = self.table, self.cluster
        return [
            (table.names[i], float(table.psi[i, c]), float(table.costs[i]), float(self.scores[i]))
            for i in np.flatnonzero(self.mask)
        ]


class Router:
    """Answers Route and RouteBatch from whatever table is current."""

    def __init__(
        self,
        tables: TableHolder,
        embedder: EmbedderLike,
        *,
        default_cost_weight: float = 0.0,
        cache: EmbeddingCache[EmbeddingLike] | None = None,
        batcher: BatcherLike | None = None,
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

    def _embed(self, prompt: str, times: StageTimes) -> EmbeddingLike:
        """Cache, then the micro-batcher if on, then the embedder itself (timed by stage)."""
        key = b""
        if self.cache is not None:
            key = prompt_key(prompt)
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        t0 = time.perf_counter()
        embedded: EmbeddingLike
        if self.batcher is not None:
            embedded = self.batcher.embed(prompt)  # tokenises and waits for its batch
        else:
            encoded = self.embedder.encode(prompt)
            t1 = time.perf_counter()
            times.tokenise = t1 - t0
            vector = self.embedder.run(encoded.ids, encoded.mask)[0]
            embedded = _Embedded(vector, encoded.n_tokens, encoded.truncated)
        times.embed = time.perf_counter() - t0 - times.tokenise
        if self.cache is not None:
            self.cache.put(key, embedded)
        return embedded

    def route(self, query: Query) -> Decision:
        started = time.perf_counter()
        times = StageTimes()
        table = self._table()
        mask, cost_weight, vector = self._prepare(table, query)
        truncated, n_tokens = False, 0
        if vector is None:
            embedded = self._embed(query.prompt, times)
            vector, truncated, n_tokens = embedded.vector, embedded.truncated, embedded.n_tokens
        kernel_start = time.perf_counter()
        decision = _decide(table, vector, mask, cost_weight, truncated, n_tokens, query.request_id)
        if self.metrics is not None:
            done = time.perf_counter()
            times.kernel, times.total = done - kernel_start, done - started
            self.metrics.observe_route(times, decision.model, decision.cluster)
        return decision

    def route_batch(self, queries: Sequence[Query]) -> list[Decision]:
        """Validates every query, embeds all prompts as one batch, then decides each."""
        if not queries:
            raise InvalidArgument("RouteBatch needs at least one request")
        if len(queries) > self.max_batch_requests:
            raise InvalidArgument(
                f"RouteBatch takes at most {self.max_batch_requests} requests, got {len(queries)}; "
                "split the batch"
            )
        table = self._table()
        prepared = []
        for i, query in enumerate(queries):
            try:
                prepared.append(self._prepare(table, query))
            except InvalidArgument as exc:
                raise InvalidArgument(f"requests[{i}]: {exc}") from exc
        to_embed = [i for i, (_, _, vector) in enumerate(prepared) if vector is None]
        batch = (
            self.embedder.embed_batch([queries[i].prompt for i in to_embed]) if to_embed else None
        )
        row_of = {i: row for row, i in enumerate(to_embed)}
        decisions = []
        for i, (mask, cost_weight, vector) in enumerate(prepared):
            truncated, n_tokens = False, 0
            if vector is None:
                assert batch is not None
                row = row_of[i]
                vector = batch.vectors[row]
                truncated, n_tokens = bool(batch.truncated[row]), int(batch.n_tokens[row])
            decisions.append(
                _decide(
                    table, vector, mask, cost_weight, truncated, n_tokens, queries[i].request_id
                )
            )
        return decisions

    def _table(self) -> RoutingTable:
        table = self.tables.current  # one read; this request uses this table throughout
        if table is None:
            raise FailedPrecondition("no clustering is loaded yet; the sidecar is not ready")
        if table.size == 0:
            raise FailedPrecondition(
                "no models are registered yet; register one with `sidecar register` "
                "(RegisterModel) before routing"
            )
        return table

    def _prepare(
        self, table: RoutingTable, query: Query
    ) -> tuple[np.ndarray, float, np.ndarray | None]:
        """Checks one query against the table: (candidate mask, λ, given embedding or None)."""
        if len(query.request_id.encode()) > MAX_REQUEST_ID_BYTES:
            raise InvalidArgument(f"request_id is longer than {MAX_REQUEST_ID_BYTES} bytes")
        cost_weight = self.default_cost_weight if query.cost_weight is None else query.cost_weight
        _check_cost_weight(cost_weight)
        vector = None
        if len(query.prompt) > self.max_prompt_bytes // 4:  # cheap bound before encoding
            size = len(query.prompt.encode())
            if size > self.max_prompt_bytes:
                raise InvalidArgument(
                    f"prompt is {size} bytes, over the limit of {self.max_prompt_bytes} bytes; "
                    "only the first tokens are embedded anyway, so send a shorter prompt"
                )
        if len(query.embedding):
            vector = _normalised_embedding(query.embedding, table.dim)
        elif not query.prompt.strip():
            raise InvalidArgument("prompt is empty: send the prompt text, or an embedding")
        mask = table.candidate_mask(query.candidates) if query.candidates else table.all_candidates
        return mask, float(cost_weight), vector

    def warm_up(self) -> None:
        """Compiles or loads the kernels and runs the embedder once, before SERVING."""
        _kernels.warm_up()
        self.embedder.embed("warm-up: route this prompt to the best model")
        self.embedder.embed_batch(["warm-up one", "warm-up two, a little longer"])


def _decide(
    table: RoutingTable,
    vector: np.ndarray,
    mask: np.ndarray,
    cost_weight: float,
    truncated: bool,
    n_tokens: int,
    request_id: str,
) -> Decision:
    scores = np.empty(table.size, dtype=np.float32)
    cluster, chosen = _kernels.route_one(
        vector, table.centroids, table.psi, table.costs, cost_weight, mask, scores
    )
    if chosen < 0:  # unreachable through the API: empty candidate lists mean "all"
        raise InvalidArgument("no candidate models to choose from")
    return Decision(
        table=table,
        cluster=int(cluster),
        chosen=int(chosen),
        scores=scores,
        mask=mask,
        cost_weight=cost_weight,
        truncated=truncated,
        prompt_tokens=n_tokens,
        request_id=request_id,
    )


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
    return np.ascontiguousarray(vector / norm, dtype=np.float32)
