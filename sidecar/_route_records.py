"""The routing question and its answer: the records the Route path passes around.

Plain immutable records with no gRPC, no kernels and no embedder in them, so
the wire conversions (``_wire``) and the HTTP path can build and read them
without importing the routing core. NamedTuples rather than frozen dataclasses:
one of each is built per Route, and a frozen dataclass's ``__init__`` costs
about 1.5 µs more for ten fields, a visible share of a static Route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._table import RoutingTable


class Query(NamedTuple):
    """One routing question, already decoded from the wire."""

    prompt: str = ""
    candidates: Sequence[str] = ()
    cost_weight: float | None = None
    embedding: Sequence[float] = ()
    request_id: str = ""


class Decision(NamedTuple):
    """A routing decision and everything needed to explain it."""

    table: RoutingTable
    cluster: int
    chosen: int
    scores: np.ndarray  # float32 (M,), +inf where not a candidate
    mask: np.ndarray  # bool (M,), this request's own
    cost_weight: float
    truncated: bool = False
    prompt_tokens: int = 0
    request_id: str = ""
    weights: np.ndarray | None = None  # float64 (K,): Φ under a LearnedMap, else None

    @property
    def model(self) -> str:
        return self.table.names[self.chosen]

    def expected_error(self, row: int) -> float:
        """Ψ of the model at ``row`` for this prompt: Ψ[cluster], or Σ_k Φ_k Ψ_k if soft."""
        psi = self.table.psi[row]
        if self.weights is None:
            return float(psi[self.cluster])
        return float(np.float32(np.dot(self.weights, psi.astype(np.float64))))

    def candidates(self) -> list[tuple[str, float, float, float]]:
        """(model, expected_error, cost, score) per candidate, in registration order."""
        table = self.table
        return [
            (
                table.names[i],
                self.expected_error(int(i)),
                float(table.costs[i]),
                float(self.scores[i]),
            )
            for i in np.flatnonzero(self.mask)
        ]
