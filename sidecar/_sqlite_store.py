"""The embedded store: one SQLite file in WAL mode, one writer at a time.

Rows only; the rules live in the registry. Writes are IMMEDIATE
transactions behind a process-wide lock, so listeners hear of revisions
strictly in order, and reads share that lock so they see whole revisions.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._clustering import Clustering, map_from_text, map_to_text
from ._errors import ArtifactError
from ._records import (
    MODEL_COLUMNS,
    MODEL_FIELDS,
    ActiveClustering,
    ModelRecord,
    model_from_json,
    model_from_row,
    model_table_sql,
    model_to_json,
    model_to_row,
)
from ._store import ChangeListener, EventRow

log = logging.getLogger("sidecar.store")

SCHEMA_VERSION = 2  # 2: clusterings.learned_map (a LearnedMap's θ, b and item weights)

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS clusterings (
        version TEXT PRIMARY KEY,
        k INTEGER NOT NULL,
        dim INTEGER NOT NULL,
        embedder_fingerprint TEXT NOT NULL,
        centroids BLOB NOT NULL,
        info TEXT NOT NULL,
        revision INTEGER NOT NULL,
        create_time REAL NOT NULL,
        learned_map TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS validation_items (
        clustering_version TEXT NOT NULL REFERENCES clusterings(version),
        item_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        cluster INTEGER NOT NULL,
        PRIMARY KEY (clustering_version, item_id)
    ) WITHOUT ROWID""",
    model_table_sql("models"),
    """CREATE TABLE IF NOT EXISTS model_results (
        model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
        item_id TEXT NOT NULL,
        score REAL NOT NULL,
        PRIMARY KEY (model, item_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS events (
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (revision, seq)
    ) WITHOUT ROWID""",
]
#: Statements that bring an existing file from schema version N-1 to N.
_MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE clusterings ADD COLUMN learned_map TEXT NOT NULL DEFAULT ''"],
}
_PLACEHOLDERS = ",".join("?" for _ in MODEL_FIELDS)
# An upsert, not INSERT OR REPLACE: REPLACE deletes the old row first, and with
# foreign keys on that would cascade to the model's stored results.
_UPSERT_MODEL = (
    f"INSERT INTO models ({MODEL_COLUMNS}) VALUES ({_PLACEHOLDERS}) ON CONFLICT(name) DO UPDATE "
    "SET " + ", ".join(f"{name}=excluded.{name}" for name, _, key in MODEL_FIELDS if not key)
)


class SqliteStore:
    """Owns one SQLite file; thread-safe."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        """``durable=False`` (followers) skips the fsync per commit.

        WAL keeps the file consistent either way; a follower that loses its
        last commits to a power cut just resumes from an earlier revision.
        """
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = threading.RLock()
        self._listeners: list[ChangeListener] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
        except (OSError, sqlite3.DatabaseError) as exc:
            raise self._unusable(exc) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._init_schema()
        except (sqlite3.DatabaseError, ArtifactError) as exc:
            self._db.close()
            if isinstance(exc, ArtifactError):
                raise
            raise self._unusable(exc) from exc

    def _unusable(self, exc: Exception) -> ArtifactError:
        return ArtifactError(
            f"cannot open registry database {self.path}: {exc}. "
            "Restore it from a backup or point --db at a new file."
        )

    def _init_schema(self) -> None:
        with self.write() as txn:
            for statement in _SCHEMA:
                self._db.execute(statement)
            version = txn.meta("schema_version")
            if not version:
                txn.set_meta("schema_version", str(SCHEMA_VERSION))
                txn.set_meta("revision", "0")
                txn.set_meta("store_id", uuid.uuid4().hex)
            elif int(version) > SCHEMA_VERSION:
                raise ArtifactError(
                    f"registry database {self.path} has schema version {version}, newer than "
                    f"this sidecar supports ({SCHEMA_VERSION}); upgrade the sidecar"
                )
            elif int(version) < SCHEMA_VERSION:
                for step in range(int(version) + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        self._db.execute(statement)
                txn.set_meta("schema_version", str(SCHEMA_VERSION))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_listener(self, listener: ChangeListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    @contextmanager
    def read(self) -> Iterator[_SqliteTransaction]:
        with self._lock:
            yield _SqliteTransaction(self._db)

    @contextmanager
    def write(self) -> Iterator[_SqliteTransaction]:
        """One IMMEDIATE transaction; listeners run after COMMIT, still under the lock."""
        with self._lock:
            txn = _SqliteTransaction(self._db)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield txn
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if txn.pending_revision:
                for listener in list(self._listeners):
                    try:
                        listener(txn.pending_revision)
                    except Exception:  # the write is durable; one bad listener must not hide it
                        log.exception("listener failed for revision %d", txn.pending_revision)


class _SqliteTransaction:
    """The Transaction protocol over one connection whose lock the caller holds."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.pending_revision = 0

    # -------------------------------------------------------------- revisions, meta

    def meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else ""

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def revision(self) -> int:
        return int(self.meta("revision") or 0)

    def next_revision(self) -> int:
        revision = self.revision() + 1
        self.adopt_revision(revision)
        return revision

    def adopt_revision(self, revision: int) -> None:
        self.set_meta("revision", str(revision))
        self.pending_revision = revision

    def compact_revision(self) -> int:
        return int(self.meta("compact_revision") or 0)

    def compact(self, up_to: int) -> None:
        self._db.execute("DELETE FROM events WHERE revision <= ?", (up_to,))
        self.set_meta("compact_revision", str(up_to))

    def reset_events(self, compact_revision: int) -> None:
        self._db.execute("DELETE FROM events")
        self.set_meta("compact_revision", str(compact_revision))

    # ----------------------------------------------------------------- clusterings

    def active_clustering(self) -> ActiveClustering | None:
        version = self.meta("active_clustering")
        if not version:
            return None
        revision, created = self._db.execute(
            "SELECT revision, create_time FROM clusterings WHERE version=?", (version,)
        ).fetchone()
        return ActiveClustering(self.clustering(version), int(revision), float(created))

    def clustering(self, version: str) -> Clustering:
        k, dim, fingerprint, blob, info, learned = self._db.execute(
            "SELECT k, dim, embedder_fingerprint, centroids, info, learned_map FROM clusterings "
            "WHERE version=?",
            (version,),
        ).fetchone()
        items = self._db.execute(
            "SELECT item_id, cluster FROM validation_items WHERE clustering_version=? "
            "ORDER BY position",
            (version,),
        ).fetchall()
        centroids = np.frombuffer(blob, dtype="<f4").reshape(k, dim).astype(np.float32)
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
        known = self._db.execute(
            "SELECT 1 FROM clusterings WHERE version=?", (clustering.version,)
        ).fetchone()
        if known is None:
            self._db.execute(
                "INSERT INTO clusterings (version, k, dim, embedder_fingerprint, centroids, info, "
                "revision, create_time, learned_map) VALUES (?,?,?,?,?,?,?,?,?)",
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
            self._db.executemany(
                "INSERT INTO validation_items VALUES (?,?,?,?)",
                [
                    (clustering.version, item, position, int(cluster))
                    for position, (item, cluster) in enumerate(
                        zip(clustering.item_ids, clustering.item_clusters, strict=True)
                    )
                ],
            )
        else:
            self._db.execute(
                "UPDATE clusterings SET revision=?, create_time=? WHERE version=?",
                (revision, now, clustering.version),
            )
        self.set_meta("active_clustering", clustering.version)

    # ---------------------------------------------------------------------- models

    def model(self, name: str) -> ModelRecord | None:
        row = self._db.execute(
            f"SELECT {MODEL_COLUMNS} FROM models WHERE name=?", (name,)
        ).fetchone()
        return None if row is None else model_from_row(row)

    def models(self) -> list[ModelRecord]:
        rows = self._db.execute(
            f"SELECT {MODEL_COLUMNS} FROM models ORDER BY create_revision, name"
        ).fetchall()
        return [model_from_row(r) for r in rows]

    def models_after(self, after: str, limit: int) -> list[ModelRecord]:
        rows = self._db.execute(
            f"SELECT {MODEL_COLUMNS} FROM models WHERE name > ? ORDER BY name LIMIT ?",
            (after, limit),
        ).fetchall()
        return [model_from_row(r) for r in rows]

    def put_model(self, record: ModelRecord) -> None:
        self._db.execute(_UPSERT_MODEL, model_to_row(record))

    def delete_model(self, name: str) -> bool:
        return self._db.execute("DELETE FROM models WHERE name=?", (name,)).rowcount > 0

    def delete_all_models(self) -> None:
        self._db.execute("DELETE FROM model_results")
        self._db.execute("DELETE FROM models")

    def results(self, name: str) -> dict[str, float]:
        return dict(
            self._db.execute("SELECT item_id, score FROM model_results WHERE model=?", (name,))
        )

    def replace_results(self, name: str, scores: Mapping[str, float]) -> None:
        self._db.execute("DELETE FROM model_results WHERE model=?", (name,))
        self._db.executemany(
            "INSERT INTO model_results VALUES (?,?,?)",
            [(name, item, float(score)) for item, score in scores.items()],
        )

    # ---------------------------------------------------------------------- events

    def append_event(
        self, revision: int, seq: int, type_: str, kind: str, key: str, model: ModelRecord | None
    ) -> None:
        payload = model_to_json(model) if model is not None else ""
        self._db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?)", (revision, seq, type_, kind, key, payload)
        )

    def events_after(self, revision: int) -> list[EventRow]:
        rows = self._db.execute(
            "SELECT revision, type, kind, key, payload FROM events WHERE revision > ? "
            "ORDER BY revision, seq",
            (revision,),
        ).fetchall()
        return [
            (int(rev), type_, kind, key, model_from_json(payload) if payload else None)
            for rev, type_, kind, key, payload in rows
        ]
