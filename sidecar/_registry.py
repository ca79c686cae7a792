"""The registry: the control plane's rules over a durable store.

Every write is one store transaction that takes one new revision and appends
its changes to the event log, which is what Watch replays to followers. The
rules (what a registration must carry, how Ψ is computed, what a
re-clustering does to each model, how much history is kept) live here or in
``_profiles``; the store (``_store``) only keeps rows, so a second backend
changes nothing above it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ._clustering import Clustering
from ._errors import AlreadyExists, Compacted, FailedPrecondition, InvalidArgument, NotFound
from ._profiles import Evidence, validate_model_fields
from ._records import (
    SOURCE_EXPLICIT,
    SOURCE_RESULTS,
    ActiveClustering,
    Change,
    ChangeSet,
    ModelRecord,
    Snapshot,
)
from ._store import ChangeListener, Store, Transaction, open_store

DEFAULT_HISTORY = 10_000


class Registry:
    """Registration, re-clustering, reads and replication over one Store. Thread-safe."""

    def __init__(self, store: Store, *, history: int = DEFAULT_HISTORY) -> None:
        """``history`` is how many recent revisions of change events are kept for Watch."""
        if history < 1:
            raise InvalidArgument(f"history must be at least 1 revision, got {history}")
        self.store = store
        self.history = history

    @classmethod
    def open(
        cls, db: str | Path, *, history: int = DEFAULT_HISTORY, durable: bool = True
    ) -> Registry:
        """The registry over the store that a ``--db`` value names (see ``open_store``)."""
        if history < 1:  # checked before anything is created on disk
            raise InvalidArgument(f"history must be at least 1 revision, got {history}")
        return cls(open_store(db, durable=durable), history=history)

    def close(self) -> None:
        self.store.close()

    def add_listener(self, listener: ChangeListener) -> None:
        """Calls ``listener(revision)`` after each committed change, in revision order."""
        self.store.add_listener(listener)

    @contextmanager
    def _write(self) -> Iterator[Transaction]:
        """One store transaction; history beyond ``self.history`` revisions is compacted in it."""
        with self.store.write() as txn:
            yield txn
            if txn.pending_revision:
                up_to = txn.pending_revision - self.history
                if up_to > txn.compact_revision():
                    txn.compact(up_to)

    def _meta(self, key: str) -> str:
        with self.store.read() as txn:
            return txn.meta(key)

    @property
    def store_id(self) -> str:
        """Fixed when the store is created: revisions only compare within one store."""
        return self._meta("store_id")

    @property
    def upstream_store_id(self) -> str:
        """Replicas: the store_id of the leader whose snapshot this copy holds ("" if none)."""
        return self._meta("upstream_store_id")

    @property
    def revision(self) -> int:
        with self.store.read() as txn:
            return txn.revision()

    @property
    def compact_revision(self) -> int:
        """Events at or below this revision are gone; resuming from there needs a snapshot."""
        with self.store.read() as txn:
            return txn.compact_revision()

    # ------------------------------------------------------------------- writes

    def register_model(
        self,
        name: str,
        cost: float,
        *,
        results: Sequence[tuple[str, float]] | None = None,
        error_rates: Sequence[float] | None = None,
        description: str = "",
        labels: Mapping[str, str] | None = None,
        allow_update: bool = False,
    ) -> ModelRecord:
        """Validates everything, then writes the model and its results in one revision.

        Ψ is computed inside the transaction against the clustering active in
        it, so a concurrent re-clustering can never leave a stale profile.
        """
        labels = dict(labels or {})
        validate_model_fields(name, cost, description, labels)
        evidence = Evidence(
            results=None if results is None else tuple(results),
            error_rates=None if error_rates is None else tuple(error_rates),
        )
        with self._write() as txn:
            active = txn.active_clustering()
            if active is None:
                raise FailedPrecondition(
                    "no clustering is loaded; start the server with --artifact DIR"
                )
            clustering = active.clustering
            profile, scores = evidence.profile(clustering.assignment())
            existing = txn.model(name)
            if existing is not None and not allow_update:
                raise AlreadyExists(
                    f"model {name!r} is already registered; set allow_update to replace it"
                )
            revision = txn.next_revision()
            now = time.time()
            record = ModelRecord(
                name=name,
                cost=float(cost),
                error_rates=profile.error_rates,
                validation_counts=profile.validation_counts,
                overall_error=profile.overall_error,
                result_count=profile.result_count,
                profile_source=SOURCE_RESULTS if evidence.results is not None else SOURCE_EXPLICIT,
                clustering_version=clustering.version,
                description=description,
                labels=labels,
                create_revision=existing.create_revision if existing else revision,
                revision=revision,
                create_time=existing.create_time if existing else now,
                update_time=now,
            )
            txn.put_model(record)
            txn.replace_results(name, scores)
            txn.append_event(revision, 0, "put", "model", name, record)
        return record

    def deregister_model(self, name: str) -> int:
        with self._write() as txn:
            if txn.model(name) is None:
                raise NotFound(f"model {name!r} is not registered")
            revision = txn.next_revision()
            txn.delete_model(name)
            txn.append_event(revision, 0, "delete", "model", name, None)
        return revision

    def activate_clustering(self, clustering: Clustering) -> int:
        """Makes ``clustering`` active; recomputes every results-based Ψ in the same revision.

        Explicit profiles belong to the clustering they were measured against, so
        they are removed (with delete events) when the clustering changes.
        Activating the already-active version changes nothing.
        """
        with self._write() as txn:
            current = txn.active_clustering()
            if current is not None and current.clustering.version == clustering.version:
                return txn.revision()
            revision = txn.next_revision()
            now = time.time()
            txn.put_clustering(clustering, revision, now)
            txn.append_event(revision, 0, "put", "clustering", clustering.version, None)
            assignment = clustering.assignment()
            seq = 1
            for model in txn.models():
                if model.profile_source == SOURCE_EXPLICIT:
                    txn.delete_model(model.name)
                    txn.append_event(revision, seq, "delete", "model", model.name, None)
                else:
                    # Items the new validation set dropped are ignored, not refused.
                    profile = assignment.profile(txn.results(model.name))
                    record = replace(
                        model,
                        error_rates=profile.error_rates,
                        validation_counts=profile.validation_counts,
                        overall_error=profile.overall_error,
                        result_count=profile.result_count,
                        clustering_version=clustering.version,
                        revision=revision,
                        update_time=now,
                    )
                    txn.put_model(record)
                    txn.append_event(revision, seq, "put", "model", model.name, record)
                seq += 1
        return revision

    # -------------------------------------------------------------------- reads

    def active_clustering(self) -> ActiveClustering | None:
        with self.store.read() as txn:
            return txn.active_clustering()

    def get_model(self, name: str) -> ModelRecord:
        with self.store.read() as txn:
            model = txn.model(name)
        if model is None:
            raise NotFound(f"model {name!r} is not registered")
        return model

    def list_models(self, *, after: str = "", limit: int = 1000) -> tuple[list[ModelRecord], int]:
        """Models with name > ``after`` in name order, and the revision they were read at."""
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        with self.store.read() as txn:
            return txn.models_after(after, limit), txn.revision()

    def snapshot(self) -> Snapshot:
        """The clustering and every model at one revision, models in registration order."""
        with self.store.read() as txn:
            return Snapshot(txn.revision(), txn.active_clustering(), tuple(txn.models()))

    def results_of(self, name: str) -> dict[str, float]:
        """The stored per-item scores of a model, so Ψ can be recomputed without the LLM."""
        with self.store.read() as txn:
            if txn.model(name) is None:
                raise NotFound(f"model {name!r} is not registered")
            return txn.results(name)

    def changes_after(self, revision: int) -> list[ChangeSet]:
        """Every change set after ``revision`` with payloads, in order; the Watch replay.

        Raises Compacted when events after ``revision`` have been dropped.
        """
        with self.store.read() as txn:
            compacted = txn.compact_revision()
            if revision < compacted:
                raise Compacted(
                    f"revision {revision + 1} has been compacted (history starts after "
                    f"{compacted}); resync from a snapshot"
                )
            sets: list[ChangeSet] = []
            pending: list[Change] = []
            rows = txn.events_after(revision)
            for i, (rev, type_, kind, key, model) in enumerate(rows):
                clustering = txn.clustering(key) if kind == "clustering" else None
                pending.append(Change(type_, kind, key, model, clustering))
                if i + 1 == len(rows) or rows[i + 1][0] != rev:
                    sets.append(ChangeSet(rev, tuple(pending)))
                    pending = []
            return sets

    # ------------------------------------------------------------- replication

    def replace_all(
        self,
        revision: int,
        clustering: Clustering | None,
        models: Sequence[ModelRecord],
        *,
        clustering_revision: int = 0,
        upstream_store_id: str = "",
    ) -> None:
        """Installs a leader's snapshot as one revision (replicas only).

        Models keep the leader's revisions and times; per-item results stay on
        the leader, which is the only place Ψ is recomputed. The revision may
        move backwards (the leader's store was replaced).
        """
        if revision < 0:
            raise FailedPrecondition(f"snapshot revision {revision} is negative")
        with self._write() as txn:
            # The old history may hold this very revision (a replaced leader store
            # counts again from 1); what came before the snapshot is not replayable.
            txn.reset_events(max(revision - 1, 0))
            txn.adopt_revision(revision)
            txn.set_meta("upstream_store_id", upstream_store_id)
            now = time.time()
            if clustering is not None:
                txn.put_clustering(clustering, clustering_revision or revision, now)
                txn.append_event(revision, 0, "put", "clustering", clustering.version, None)
            txn.delete_all_models()
            for seq, model in enumerate(models, start=1):
                txn.put_model(model)
                txn.append_event(revision, seq, "put", "model", model.name, model)

    def apply_changes(self, change_set: ChangeSet) -> None:
        """Applies one leader revision's changes atomically (replicas only)."""
        with self._write() as txn:
            current = txn.revision()
            if change_set.revision <= current:
                raise FailedPrecondition(
                    f"revision {change_set.revision} is not after the current {current}"
                )
            txn.adopt_revision(change_set.revision)
            now = time.time()
            for seq, change in enumerate(change_set.changes):
                if change.kind == "clustering" and change.clustering is not None:
                    txn.put_clustering(change.clustering, change_set.revision, now)
                elif change.kind == "model" and change.type == "put" and change.model is not None:
                    txn.put_model(change.model)
                elif change.kind == "model" and change.type == "delete":
                    txn.delete_model(change.key)
                else:
                    raise InvalidArgument(f"malformed change {change.type} {change.kind}")
                txn.append_event(
                    change_set.revision, seq, change.type, change.kind, change.key, change.model
                )
