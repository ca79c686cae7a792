"""The routing table: an immutable snapshot of Ψ, costs and centroids, swapped as a whole.

Writers build a complete new table and publish it with one reference
assignment (read-copy-update). A Route reads ``holder.current`` once and uses
that table for the whole request, so it never locks and never sees a
half-applied change.

Immutable means it: every array is a read-only view of the table's own
read-only copy (a write raises ValueError, and so does setting the view's
``writeable`` flag back on), and ``index`` is a read-only mapping. So anything
handed out from a table, e.g. ``all_candidates`` as a Route's mask, cannot be
changed by one request under another, and nothing the caller passed in is
shared with the table.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ._errors import InvalidArgument, NotFound
from ._records import ModelRecord, Snapshot


@dataclass(frozen=True, eq=False)
class RoutingTable:
    """Everything one routing decision needs, as contiguous arrays the kernels accept."""

    revision: int
    clustering_version: str
    embedder_fingerprint: str
    centroids: np.ndarray  # float32 (K, D), unit rows
    psi: np.ndarray  # float32 (M, K)
    costs: np.ndarray  # float32 (M,)
    names: tuple[str, ...]  # registration order; index i is row i of psi
    index: Mapping[str, int] = field(repr=False)  # read-only name -> row
    all_candidates: np.ndarray = field(repr=False)  # bool (M,), all True
    # Each model's registered labels, row by row (read-only); the data plane reads
    # e.g. the upstream model id from them. Empty mappings when not given.
    labels: tuple[Mapping[str, str], ...] = field(default=(), repr=False)
    # A LearnedMap's θ float32 (K, D) and b float32 (K,); None for K-means. With
    # them the router uses the soft kernel (``soft``), else the nearest centroid.
    theta: np.ndarray | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Whatever the caller passed (build() or direct construction), the table
        # keeps frozen copies of its own; a few KB per table build.
        for name in ("centroids", "psi", "costs", "all_candidates"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if (self.theta is None) != (self.bias is None):
            raise InvalidArgument("a learned map needs both theta and bias")
        if self.theta is not None and self.bias is not None:
            theta = np.asarray(self.theta, dtype=np.float32)
            bias = np.asarray(self.bias, dtype=np.float32)
            if theta.shape != self.centroids.shape or bias.shape != (self.k,):
                raise InvalidArgument("theta must be K x D and bias of length K")
            object.__setattr__(self, "theta", _frozen(theta))
            object.__setattr__(self, "bias", _frozen(bias))
        object.__setattr__(self, "index", types.MappingProxyType(dict(self.index)))
        labels = self.labels or tuple({} for _ in self.names)
        if len(labels) != len(self.names):
            raise InvalidArgument(f"{len(labels)} label maps for {len(self.names)} models")
        object.__setattr__(self, "labels", tuple(types.MappingProxyType(dict(m)) for m in labels))

    @classmethod
    def build(
        cls,
        *,
        revision: int,
        clustering_version: str,
        embedder_fingerprint: str,
        centroids: np.ndarray,
        models: Iterable[ModelRecord],
        theta: np.ndarray | None = None,
        bias: np.ndarray | None = None,
    ) -> RoutingTable:
        models = [m for m in models if m.clustering_version == clustering_version]
        k = int(centroids.shape[0])
        psi = np.zeros((len(models), k), dtype=np.float32)
        for row, model in enumerate(models):
            psi[row] = model.error_rates
        names = tuple(m.name for m in models)
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            costs = np.asarray([m.cost for m in models], dtype=np.float64).astype(np.float32)
        bad = ~np.isfinite(costs)
        if bad.any():
            # inf/inf would make a NaN score; the registry bounds costs, this is the backstop.
            row = int(np.flatnonzero(bad)[0])
            raise InvalidArgument(
                f"model {names[row]!r}: cost {models[row].cost!r} is not a finite float32 "
                f"(at most {float(np.finfo(np.float32).max):.4g})"
            )
        return cls(
            revision=revision,
            clustering_version=clustering_version,
            embedder_fingerprint=embedder_fingerprint,
            centroids=np.asarray(centroids, dtype=np.float32),
            psi=psi,
            costs=costs,
            names=names,
            index={name: i for i, name in enumerate(names)},
            all_candidates=np.ones(len(models), dtype=np.bool_),
            labels=tuple(m.labels for m in models),
            theta=theta,
            bias=bias,
        )

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> RoutingTable | None:
        """The table for a registry snapshot, or None when no clustering is loaded."""
        if snapshot.clustering is None:
            return None
        clustering = snapshot.clustering.clustering
        learned = clustering.learned
        return cls.build(
            revision=snapshot.revision,
            clustering_version=clustering.version,
            embedder_fingerprint=clustering.embedder_fingerprint,
            centroids=clustering.centroids,
            models=snapshot.models,
            theta=None if learned is None else learned.theta,
            bias=None if learned is None else learned.bias,
        )

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def soft(self) -> bool:
        """True under a LearnedMap: Φ is a softmax over θ, not the nearest centroid."""
        return self.theta is not None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def candidate_mask(self, names: Iterable[str]) -> np.ndarray:
        """A boolean mask over the table's models; unknown names are NOT_FOUND."""
        mask = np.zeros(self.size, dtype=np.bool_)
        unknown = []
        for name in names:
            i = self.index.get(name)
            if i is None:
                unknown.append(name)
            else:
                mask[i] = True
        if unknown:
            raise NotFound(
                f"unknown candidate model(s): {', '.join(repr(n) for n in sorted(set(unknown)))}; "
                f"registered: {', '.join(self.names) or 'none'}"
            )
        return mask


def _frozen(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy, read-only, seen through a view so the flag cannot be turned back on."""
    own = np.array(array, order="C", copy=True)
    own.flags.writeable = False
    return own.view()


class TableHolder:
    """Holds the current table; readers take ``current`` without locking.

    ``publish`` is serialised and refuses to go back in revision, so a slow
    writer can never replace a newer table with an older one. A follower that
    installs a snapshot from a replaced leader store passes ``allow_older``.
    """

    def __init__(self, table: RoutingTable | None = None) -> None:
        self.current: RoutingTable | None = table
        self._publish_lock = threading.Lock()

    def publish(self, table: RoutingTable, *, allow_older: bool = False) -> bool:
        with self._publish_lock:
            old = self.current
            if old is not None and table.revision < old.revision and not allow_older:
                return False
            self.current = table  # the single reference swap readers rely on
            return True
