"""The rows of a registry transaction, written once for both SQL stores.

SQLite and PostgreSQL hold the same tables and agree on almost all of the SQL
(``ON CONFLICT ... DO UPDATE`` included), so the Transaction protocol's row
logic lives here: meta, compaction, clusterings, models, results and events.
A store's transaction subclasses ``SqlRows`` and supplies only what differs:
running a statement (SQL here uses ``?`` placeholders; PostgreSQL's subclass
turns them into ``%s``), where the revision counter lives, and the bulk
inserts, which each database does its own fast way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._clustering import Clustering, map_from_text, map_to_text
from ._records import (
    MODEL_COLUMNS,
    MODEL_FIELDS,
    ActiveClustering,
    ModelRecord,
    model_from_json,
    model_from_row,
    model_to_json,
    model_to_row,
)
from ._store import EventRow

# An upsert, not INSERT OR REPLACE: REPLACE deletes the old row first, and with
# foreign keys on that would cascade to the model's stored results.
UPSERT_MODEL = (
    f"INSERT INTO models ({MODEL_COLUMNS}) VALUES ({','.join('?' for _ in MODEL_FIELDS)}) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{name}=excluded.{name}" for name, _, key in MODEL_FIELDS if not key)
)


class SqlRows:
    """The Transaction protocol's rows over one connection in an open transaction."""

    pending_revision: int

    # -- what a store's transaction supplies --

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Runs one statement (``?`` placeholders) and returns its cursor."""
        raise NotImplementedError

    def _insert_items(self, rows: list[tuple[str, str, int, int]]) -> None:
        """validation_items rows: (clustering_version, item_id, position, cluster)."""
        raise NotImplementedError

    def _insert_results(self, name: str, scores: Mapping[str, float]) -> None:
        """model_results rows for ``name``, whose old rows are already deleted."""
        raise NotImplementedError

    # -- shared --

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self._execute(sql, params).fetchall())

    def meta(self, key: str) -> str:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0]) if row else ""

    def set_meta(self, key: str, value: str) -> None:
        self._execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def compact_revision(self) -> int:
        return int(self.meta("compact_revision") or 0)

    def compact(self, up_to: int) -> None:
        self._execute("DELETE FROM events WHERE revision <= ?", (up_to,))
        self.set_meta("compact_revision", str(up_to))

    def reset_events(self, compact_revision: int) -> None:
        self._execute("DELETE FROM events")
        self.set_meta("compact_revision", str(compact_revision))

    # ----------------------------------------------------------------- clusterings

    def active_clustering(self) -> ActiveClustering | None:
        row = self._one(
            "SELECT c.version, c.revision, c.create_time FROM meta m "
            "JOIN clusterings c ON c.version = m.value WHERE m.key = 'active_clustering'"
        )
        if row is None:
            return None
        version, revision, created = row
        return ActiveClustering(self.clustering(version), int(revision), float(created))

    def clustering(self, version: str) -> Clustering:
        k, dim, fingerprint, blob, info, learned = self._one(
            "SELECT k, dim, embedder_fingerprint, centroids, info, learned_map FROM clusterings "
            "WHERE version = ?",
            (version,),
        )
        items = self._all(
            "SELECT item_id, cluster FROM validation_items WHERE clustering_version = ? "
            "ORDER BY position",
            (version,),
        )
        centroids = np.frombuffer(bytes(blob), dtype="<f4").reshape(k, dim).astype(np.float32)
        return Clustering(
            centroids=np.ascontiguousarray(centroids),
            embedder_fingerprint=fingerprint,
            item_ids=tuple(i for i, _ in items),
            item_clusters=np.asarray([c for _, c in items], dtype=np.int64),
            info=json.loads(info),
            version=version,
            learned=map_from_text(learned),
        )

    def put_clustering(self, clustering: Clustering, revision: int, now: float) -> None:
        if self._one("SELECT 1 FROM clusterings WHERE version = ?", (clustering.version,)):
            self._execute(
                "UPDATE clusterings SET revision = ?, create_time = ? WHERE version = ?",
                (revision, now, clustering.version),
            )
        else:
            self._execute(
                "INSERT INTO clusterings (version, k, dim, embedder_fingerprint, centroids, info, "
                "revision, create_time, learned_map) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    clustering.version,
                    clustering.k,
                    clustering.dim,
                    clustering.embedder_fingerprint,
                    np.ascontiguousarray(clustering.centroids, dtype="<f4").tobytes(),
                    json.dumps(clustering.info, sort_keys=True),
                    revision,
                    now,
                    map_to_text(clustering),
                ),
            )
            self._insert_items(
                [
                    (clustering.version, item, position, int(cluster))
                    for position, (item, cluster) in enumerate(
                        zip(clustering.item_ids, clustering.item_clusters, strict=True)
                    )
                ]
            )
        self.set_meta("active_clustering", clustering.version)

    # ---------------------------------------------------------------------- models

    def model(self, name: str) -> ModelRecord | None:
        row = self._one(f"SELECT {MODEL_COLUMNS} FROM models WHERE name = ?", (name,))
        return None if row is None else model_from_row(row)

    def models(self) -> list[ModelRecord]:
        rows = self._all(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY create_revision, name")
        return [model_from_row(r) for r in rows]

    def models_after(self, after: str, limit: int) -> list[ModelRecord]:
        rows = self._all(
            f"SELECT {MODEL_COLUMNS} FROM models WHERE name > ? ORDER BY name LIMIT ?",
            (after, limit),
        )
        return [model_from_row(r) for r in rows]

    def put_model(self, record: ModelRecord) -> None:
        self._execute(UPSERT_MODEL, model_to_row(record))

    def delete_model(self, name: str) -> bool:
        return bool(self._execute("DELETE FROM models WHERE name = ?", (name,)).rowcount > 0)

    def delete_all_models(self) -> None:
        self._execute("DELETE FROM model_results")
        self._execute("DELETE FROM models")

    def results(self, name: str) -> dict[str, float]:
        rows = self._all("SELECT item_id, score FROM model_results WHERE model = ?", (name,))
        return {str(item): float(score) for item, score in rows}

    def replace_results(self, name: str, scores: Mapping[str, float]) -> None:
        self._execute("DELETE FROM model_results WHERE model = ?", (name,))
        if scores:
            self._insert_results(name, scores)

    # ---------------------------------------------------------------------- events

    def append_event(
        self, revision: int, seq: int, type_: str, kind: str, key: str, model: ModelRecord | None
    ) -> None:
        payload = model_to_json(model) if model is not None else ""
        self._execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
            (revision, seq, type_, kind, key, payload),
        )

    def events_after(self, revision: int) -> list[EventRow]:
        rows = self._all(
            "SELECT revision, type, kind, key, payload FROM events WHERE revision > ? "
            "ORDER BY revision, seq",
            (revision,),
        )
        return [
            (int(rev), type_, kind, key, model_from_json(payload) if payload else None)
            for rev, type_, kind, key, payload in rows
        ]
