"""The registry: a durable SQLite store of the clustering, the models and their results.

Every write runs in one transaction that bumps a single monotonically increasing
revision and appends the change to an event log. Readers see whole revisions
only, a crash leaves either the old or the new state, and the event log is
what the Watch stream replays to followers.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._clustering import Clustering
from ._errors import (
    AlreadyExists,
    ArtifactError,
    Compacted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from ._profiles import Profile, profile_from_rates, profile_from_results, validate_results

log = logging.getLogger("sidecar.registry")

SCHEMA_VERSION = 1
SOURCE_RESULTS = "results"
SOURCE_EXPLICIT = "explicit"

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:/@+-]{1,128}$")
MAX_DESCRIPTION = 1024
MAX_RESULTS = 100_000  # graded items per registration; S_val is 10^2 to 10^3 in the method
MAX_LABELS = 64
MAX_LABEL_TEXT = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clusterings (
    version TEXT PRIMARY KEY,
    k INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    embedder_fingerprint TEXT NOT NULL,
    centroids BLOB NOT NULL,
    info TEXT NOT NULL,
    revision INTEGER NOT NULL,
    create_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS validation_items (
    clustering_version TEXT NOT NULL REFERENCES clusterings(version),
    item_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    cluster INTEGER NOT NULL,
    PRIMARY KEY (clustering_version, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    cost REAL NOT NULL,
    description TEXT NOT NULL,
    labels TEXT NOT NULL,
    profile_source TEXT NOT NULL,
    error_rates BLOB NOT NULL,
    validation_counts BLOB NOT NULL,
    overall_error REAL NOT NULL,
    result_count INTEGER NOT NULL,
    clustering_version TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    create_time REAL NOT NULL,
    update_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS model_results (
    model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (model, item_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class ModelRecord:
    """One registered model exactly as stored at ``revision``."""

    name: str
    cost: float
    error_rates: np.ndarray  # float64 (K,)
    validation_counts: np.ndarray  # int64 (K,)
    overall_error: float
    result_count: int
    profile_source: str
    clustering_version: str
    description: str
    labels: Mapping[str, str]
    create_revision: int
    revision: int
    create_time: float
    update_time: float


@dataclass(frozen=True)
class ActiveClustering:
    """The clustering in force and the revision at which it became active."""

    clustering: Clustering
    revision: int
    create_time: float


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of the whole store at one revision."""

    revision: int
    clustering: ActiveClustering | None
    models: tuple[ModelRecord, ...] = field(default_factory=tuple)  # registration order


@dataclass(frozen=True)
class Event:
    """One change in the event log: a put or delete of a model or the clustering."""

    revision: int
    type: str  # "put" | "delete"
    kind: str  # "model" | "clustering"
    key: str


@dataclass(frozen=True)
class Change:
    """One event with its payload: the model as it was at that revision, or the clustering."""

    type: str  # "put" | "delete"
    kind: str  # "model" | "clustering"
    key: str
    model: ModelRecord | None = None  # model puts only
    clustering: Clustering | None = None  # clustering puts only


@dataclass(frozen=True)
class ChangeSet:
    """Every change committed at one revision, in commit order."""

    revision: int
    changes: tuple[Change, ...]


ChangeListener = Callable[[int], None]
DEFAULT_HISTORY = 10_000


class Registry:
    """Owns one SQLite file. Thread-safe; writes are serialised, reads are consistent."""

    def __init__(self, path: Path, *, history: int = DEFAULT_HISTORY, durable: bool = True) -> None:
        """``history`` is how many recent revisions of change events are kept for Watch.

        ``durable=False`` (followers) skips the fsync per commit: WAL keeps the file
        consistent, and a follower that loses its last commits to a power cut just
        resumes from an earlier revision.
        """
        if history < 1:
            raise InvalidArgument(f"history must be at least 1 revision, got {history}")
        self.path = Path(path)
        self.history = history
        self._lock = threading.RLock()
        self._listeners: list[ChangeListener] = []
        self._pending_revision = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._init_schema()
        except (sqlite3.DatabaseError, ArtifactError) as exc:
            if hasattr(self, "_db"):
                self._db.close()
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(
                f"cannot open registry database {self.path}: {exc}. "
                "Restore it from a backup or point --db at a new file."
            ) from exc

    # ----------------------------------------------------------------- lifecycle

    def _init_schema(self) -> None:
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                db.execute("INSERT INTO meta VALUES ('revision', '0')")
                db.execute("INSERT INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            elif int(row[0]) > SCHEMA_VERSION:
                raise ArtifactError(
                    f"registry database {self.path} has schema version {row[0]}, newer than this "
                    f"sidecar supports ({SCHEMA_VERSION}); upgrade the sidecar"
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_listener(self, listener: ChangeListener) -> None:
        """Calls ``listener(revision)`` after each committed change, in revision order."""
        with self._lock:
            self._listeners.append(listener)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; listeners hear of a new revision after it commits.

        Listeners run while the write lock is still held, so they see revisions
        strictly in order and never a revision that was rolled back.
        """
        with self._lock:
            self._pending_revision = 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                if self._pending_revision:
                    self._compact(self._db, self._pending_revision - self.history)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if self._pending_revision:
                for listener in list(self._listeners):
                    try:
                        listener(self._pending_revision)
                    except Exception:  # the write is durable; one bad listener must not hide it
                        log.exception("listener failed for revision %d", self._pending_revision)

    def _next_revision(self, db: sqlite3.Connection) -> int:
        revision = self._revision(db) + 1
        db.execute("UPDATE meta SET value=? WHERE key='revision'", (str(revision),))
        self._pending_revision = revision
        return revision

    def _set_revision(self, db: sqlite3.Connection, revision: int, *, force: bool = False) -> None:
        """Replicas adopt the leader's revision numbers instead of counting their own.

        ``force`` is for snapshots, which replace everything and may even move
        back (when the leader's store was replaced).
        """
        current = self._revision(db)
        if revision <= current and not (force and revision >= 0):
            raise FailedPrecondition(f"revision {revision} is not after the current {current}")
        db.execute("UPDATE meta SET value=? WHERE key='revision'", (str(revision),))
        self._pending_revision = revision

    @staticmethod
    def _revision(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0])

    @staticmethod
    def _compact_revision(db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key='compact_revision'").fetchone()
        return int(row[0]) if row else 0

    def _compact(self, db: sqlite3.Connection, up_to: int) -> None:
        """Drops events at or below ``up_to``; watchers older than that get a snapshot."""
        if up_to <= self._compact_revision(db):
            return
        db.execute("DELETE FROM events WHERE revision <= ?", (up_to,))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('compact_revision', ?)", (str(up_to),))

    def _meta(self, key: str) -> str:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else ""

    @property
    def store_id(self) -> str:
        """Fixed when the database is created: revisions only compare within one store."""
        return self._meta("store_id")

    @property
    def upstream_store_id(self) -> str:
        """Replicas: the store_id of the leader whose snapshot this copy holds ("" if none)."""
        return self._meta("upstream_store_id")

    @property
    def compact_revision(self) -> int:
        """Events at or below this revision are gone; resuming from there needs a snapshot."""
        with self._lock:
            return self._compact_revision(self._db)

    @property
    def revision(self) -> int:
        with self._lock:
            return self._revision(self._db)

    # --------------------------------------------------------------- clustering

    def active_clustering(self) -> ActiveClustering | None:
        with self._lock:
            return self._active_clustering(self._db)

    def _active_clustering(self, db: sqlite3.Connection) -> ActiveClustering | None:
        row = db.execute("SELECT value FROM meta WHERE key='active_clustering'").fetchone()
        return None if row is None else self._clustering(db, row[0])

    @staticmethod
    def _clustering(db: sqlite3.Connection, version: str) -> ActiveClustering:
        k, dim, fingerprint, blob, info, revision, created = db.execute(
            "SELECT k, dim, embedder_fingerprint, centroids, info, revision, create_time "
            "FROM clusterings WHERE version=?",
            (version,),
        ).fetchone()
        items = db.execute(
            "SELECT item_id, cluster FROM validation_items WHERE clustering_version=? "
            "ORDER BY position",
            (version,),
        ).fetchall()
        centroids = np.frombuffer(blob, dtype="<f4").reshape(k, dim).astype(np.float32)
        clustering = Clustering(
            centroids=np.ascontiguousarray(centroids),
            embedder_fingerprint=fingerprint,
            item_ids=tuple(i for i, _ in items),
            item_clusters=np.asarray([c for _, c in items], dtype=np.int64),
            info=json.loads(info),
            version=version,
        )
        return ActiveClustering(clustering, int(revision), float(created))

    def activate_clustering(self, clustering: Clustering) -> int:
        """Makes ``clustering`` active; recomputes every results-based Ψ in the same revision.

        Explicit profiles belong to the clustering they were measured against, so
        they are removed (with delete events) when the clustering changes.
        Activating the already-active version changes nothing.
        """
        with self._write() as db:
            current = self._active_clustering(db)
            if current is not None and current.clustering.version == clustering.version:
                return self._revision(db)
            revision = self._next_revision(db)
            now = time.time()
            self._put_clustering(db, clustering, revision, now)
            seq = self._log(db, revision, 0, "put", "clustering", clustering.version)
            clusters = clustering.item_cluster_map()
            for name, source in db.execute(
                "SELECT name, profile_source FROM models ORDER BY create_revision"
            ).fetchall():
                if source == SOURCE_EXPLICIT:
                    db.execute("DELETE FROM models WHERE name=?", (name,))
                    seq = self._log(db, revision, seq, "delete", "model", name)
                    continue
                scores = dict(
                    db.execute("SELECT item_id, score FROM model_results WHERE model=?", (name,))
                )
                profile = profile_from_results(scores, clusters, clustering.k)
                self._store_profile(db, name, profile, clustering.version, revision, now)
                seq = self._log(db, revision, seq, "put", "model", name)
        return revision

    @staticmethod
    def _put_clustering(
        db: sqlite3.Connection, clustering: Clustering, revision: int, now: float
    ) -> None:
        """Stores a clustering (once per version) and makes it the active one."""
        known = db.execute(
            "SELECT 1 FROM clusterings WHERE version=?", (clustering.version,)
        ).fetchone()
        if known is None:
            db.execute(
                "INSERT INTO clusterings VALUES (?,?,?,?,?,?,?,?)",
                (
                    clustering.version,
                    clustering.k,
                    clustering.dim,
                    clustering.embedder_fingerprint,
                    np.ascontiguousarray(clustering.centroids, dtype="<f4").tobytes(),
                    json.dumps(clustering.info, sort_keys=True),
                    revision,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO validation_items VALUES (?,?,?,?)",
                [
                    (clustering.version, item, pos, int(c))
                    for pos, (item, c) in enumerate(
                        zip(clustering.item_ids, clustering.item_clusters, strict=True)
                    )
                ],
            )
        else:
            db.execute(
                "UPDATE clusterings SET revision=?, create_time=? WHERE version=?",
                (revision, now, clustering.version),
            )
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('active_clustering', ?)", (clustering.version,)
        )

    # ------------------------------------------------------------------- models

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
        """Validates everything first, then writes the model and its results in one revision."""
        labels = dict(labels or {})
        _validate_model_fields(name, cost, description, labels)
        if (results is None) == (error_rates is None):
            raise InvalidArgument("give exactly one of results or an explicit profile")
        if results is not None and len(results) > MAX_RESULTS:
            raise InvalidArgument(
                f"{len(results)} results is over the limit of {MAX_RESULTS} per registration"
            )
        with self._write() as db:
            active = self._active_clustering(db)
            if active is None:
                raise FailedPrecondition(
                    "no clustering is loaded; start the server with --artifact DIR"
                )
            clustering = active.clustering
            scores: dict[str, float] = {}
            if results is not None:
                scores = validate_results(results, clustering.item_cluster_map())
                profile = profile_from_results(scores, clustering.item_cluster_map(), clustering.k)
                source = SOURCE_RESULTS
            else:
                assert error_rates is not None
                profile = profile_from_rates(error_rates, clustering.k)
                source = SOURCE_EXPLICIT
            existing = db.execute(
                "SELECT create_revision, create_time FROM models WHERE name=?", (name,)
            ).fetchone()
            if existing is not None and not allow_update:
                raise AlreadyExists(
                    f"model {name!r} is already registered; set allow_update to replace it"
                )
            revision = self._next_revision(db)
            now = time.time()
            create_revision, create_time = existing if existing else (revision, now)
            db.execute("DELETE FROM model_results WHERE model=?", (name,))
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    float(cost),
                    description,
                    json.dumps(labels, sort_keys=True),
                    source,
                    b"",
                    b"",
                    0.0,
                    0,
                    clustering.version,
                    create_revision,
                    revision,
                    create_time,
                    now,
                ),
            )
            self._store_profile(db, name, profile, clustering.version, revision, now)
            db.executemany(
                "INSERT INTO model_results VALUES (?,?,?)",
                [(name, item, score) for item, score in scores.items()],
            )
            self._log(db, revision, 0, "put", "model", name)
            record = self._get_model(db, name)
        return record

    def deregister_model(self, name: str) -> int:
        with self._write() as db:
            if db.execute("SELECT 1 FROM models WHERE name=?", (name,)).fetchone() is None:
                raise NotFound(f"model {name!r} is not registered")
            revision = self._next_revision(db)
            db.execute("DELETE FROM models WHERE name=?", (name,))
            self._log(db, revision, 0, "delete", "model", name)
        return revision

    def get_model(self, name: str) -> ModelRecord:
        with self._lock:
            return self._get_model(self._db, name)

    def list_models(self, *, after: str = "", limit: int = 1000) -> tuple[list[ModelRecord], int]:
        """Models with name > ``after`` in name order, and the revision they were read at."""
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE name > ? ORDER BY name LIMIT ?",
                (after, limit),
            ).fetchall()
            return [_model_from_row(r) for r in rows], self._revision(self._db)

    def snapshot(self) -> Snapshot:
        """The clustering and every model at one revision, models in registration order."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY create_revision, name"
            ).fetchall()
            return Snapshot(
                revision=self._revision(self._db),
                clustering=self._active_clustering(self._db),
                models=tuple(_model_from_row(r) for r in rows),
            )

    def results_of(self, name: str) -> dict[str, float]:
        """The stored per-item scores of a model, so Ψ can be recomputed without the LLM."""
        with self._lock:
            self._get_model(self._db, name)
            return dict(
                self._db.execute("SELECT item_id, score FROM model_results WHERE model=?", (name,))
            )

    def events_after(self, revision: int) -> list[Event]:
        """Every logged change with a revision greater than ``revision``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT revision, type, kind, key FROM events WHERE revision > ? "
                "ORDER BY revision, seq",
                (revision,),
            ).fetchall()
        return [Event(int(r), t, k, key) for r, t, k, key in rows]

    def changes_after(self, revision: int) -> list[ChangeSet]:
        """Every change set after ``revision`` with payloads, in order; the Watch replay.

        Raises Compacted when events after ``revision`` have been dropped.
        """
        with self._lock:
            compacted = self._compact_revision(self._db)
            if revision < compacted:
                raise Compacted(
                    f"revision {revision + 1} has been compacted (history starts after "
                    f"{compacted}); resync from a snapshot"
                )
            rows = self._db.execute(
                "SELECT revision, type, kind, key, payload FROM events WHERE revision > ? "
                "ORDER BY revision, seq",
                (revision,),
            ).fetchall()
            sets: list[ChangeSet] = []
            pending: list[Change] = []
            for i, (rev, type_, kind, key, payload) in enumerate(rows):
                model = model_from_json(payload) if payload else None
                clustering = (
                    self._clustering(self._db, key).clustering if kind == "clustering" else None
                )
                pending.append(Change(type_, kind, key, model, clustering))
                if i + 1 == len(rows) or rows[i + 1][0] != rev:
                    sets.append(ChangeSet(int(rev), tuple(pending)))
                    pending = []
            return sets

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
        the leader, which is the only place Ψ is recomputed.
        """
        with self._write() as db:
            self._set_revision(db, revision, force=True)
            db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('upstream_store_id', ?)", (upstream_store_id,)
            )
            now = time.time()
            if clustering is not None:
                self._put_clustering(db, clustering, clustering_revision or revision, now)
                self._log(db, revision, 0, "put", "clustering", clustering.version)
            db.execute("DELETE FROM model_results")
            db.execute("DELETE FROM models")
            for model in models:
                self._put_model(db, model)
            seq = 1
            for model in models:
                seq = self._log(db, revision, seq, "put", "model", model.name)

    def apply_changes(self, change_set: ChangeSet) -> None:
        """Applies one leader revision's changes atomically (replicas only)."""
        with self._write() as db:
            self._set_revision(db, change_set.revision)
            now = time.time()
            for seq, change in enumerate(change_set.changes):
                if change.kind == "clustering" and change.clustering is not None:
                    self._put_clustering(db, change.clustering, change_set.revision, now)
                elif change.kind == "model" and change.type == "put" and change.model is not None:
                    self._put_model(db, change.model)
                elif change.kind == "model" and change.type == "delete":
                    db.execute("DELETE FROM models WHERE name=?", (change.key,))
                else:
                    raise InvalidArgument(f"malformed change {change.type} {change.kind}")
                self._log(db, change_set.revision, seq, change.type, change.kind, change.key)

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _put_model(db: sqlite3.Connection, m: ModelRecord) -> None:
        db.execute(
            "INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                m.name,
                m.cost,
                m.description,
                json.dumps(dict(m.labels), sort_keys=True),
                m.profile_source,
                np.asarray(m.error_rates, dtype="<f8").tobytes(),
                np.asarray(m.validation_counts, dtype="<i8").tobytes(),
                m.overall_error,
                m.result_count,
                m.clustering_version,
                m.create_revision,
                m.revision,
                m.create_time,
                m.update_time,
            ),
        )

    def _get_model(self, db: sqlite3.Connection, name: str) -> ModelRecord:
        row = db.execute(f"SELECT {_MODEL_COLUMNS} FROM models WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"model {name!r} is not registered")
        return _model_from_row(row)

    @staticmethod
    def _store_profile(
        db: sqlite3.Connection,
        name: str,
        profile: Profile,
        clustering_version: str,
        revision: int,
        now: float,
    ) -> None:
        db.execute(
            "UPDATE models SET error_rates=?, validation_counts=?, overall_error=?, "
            "result_count=?, clustering_version=?, revision=?, update_time=? WHERE name=?",
            (
                np.asarray(profile.error_rates, dtype="<f8").tobytes(),
                np.asarray(profile.validation_counts, dtype="<i8").tobytes(),
                profile.overall_error,
                profile.result_count,
                clustering_version,
                revision,
                now,
                name,
            ),
        )

    def _log(
        self, db: sqlite3.Connection, revision: int, seq: int, type_: str, kind: str, key: str
    ) -> int:
        """Appends one event; a model put carries the model exactly as it is at this revision."""
        payload = ""
        if type_ == "put" and kind == "model":
            payload = model_to_json(self._get_model(db, key))
        db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?)", (revision, seq, type_, kind, key, payload)
        )
        return seq + 1


_MODEL_COLUMNS = (
    "name, cost, error_rates, validation_counts, overall_error, result_count, profile_source, "
    "clustering_version, description, labels, create_revision, revision, create_time, update_time"
)


def _model_from_row(row: Sequence[Any]) -> ModelRecord:
    (name, cost, rates, counts, overall, n, source, version, desc, labels, crev, rev, ct, ut) = row
    return ModelRecord(
        name=str(name),
        cost=float(cost),
        error_rates=np.frombuffer(rates, dtype="<f8").astype(np.float64),
        validation_counts=np.frombuffer(counts, dtype="<i8").astype(np.int64),
        overall_error=float(overall),
        result_count=int(n),
        profile_source=str(source),
        clustering_version=str(version),
        description=str(desc),
        labels=json.loads(str(labels)),
        create_revision=int(crev),
        revision=int(rev),
        create_time=float(ct),
        update_time=float(ut),
    )


def _validate_model_fields(
    name: str, cost: float, description: str, labels: Mapping[str, str]
) -> None:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"model name {name!r} is invalid: use 1 to 128 characters from [A-Za-z0-9._:/@+-]"
        )
    if not (math.isfinite(cost) and cost >= 0.0):
        raise InvalidArgument(f"cost must be a finite number >= 0, got {cost!r}")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION} characters")
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"at most {MAX_LABELS} labels are allowed, got {len(labels)}")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_TEXT or len(value) > MAX_LABEL_TEXT:
            raise InvalidArgument(
                f"label {key!r}: keys must be 1 to {MAX_LABEL_TEXT} characters and values at "
                f"most {MAX_LABEL_TEXT}"
            )


def model_to_json(m: ModelRecord) -> str:
    """A model record as JSON, for the event log (exact: floats round-trip through repr)."""
    return json.dumps(
        {
            "name": m.name,
            "cost": m.cost,
            "error_rates": [float(x) for x in m.error_rates],
            "validation_counts": [int(x) for x in m.validation_counts],
            "overall_error": m.overall_error,
            "result_count": m.result_count,
            "profile_source": m.profile_source,
            "clustering_version": m.clustering_version,
            "description": m.description,
            "labels": dict(m.labels),
            "create_revision": m.create_revision,
            "revision": m.revision,
            "create_time": m.create_time,
            "update_time": m.update_time,
        },
        sort_keys=True,
    )


def model_from_json(text: str) -> ModelRecord:
    d = json.loads(text)
    d["error_rates"] = np.asarray(d["error_rates"], dtype=np.float64)
    d["validation_counts"] = np.asarray(d["validation_counts"], dtype=np.int64)
    return ModelRecord(**d)
