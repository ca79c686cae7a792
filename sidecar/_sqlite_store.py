"""The embedded store: one SQLite file in WAL mode, one writer at a time.

Rows only; the rules live in the registry. Writes are IMMEDIATE
transactions, so writers take turns even across processes, and revisions
stay gap-free. Reads are one (deferred) transaction each, so they see whole
revisions. Several processes may share the file (``sidecar serve
--processes``): each one's announcer watches SQLite's ``data_version``, which
moves whenever another connection commits, and announces the revisions it
did not write itself within ``poll_interval``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._announcer import Announcer
from ._errors import ArtifactError
from ._records import (
    model_table_sql,
)
from ._sql_rows import SqlRows
from ._store import ChangeListener

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


class SqliteStore:
    """Owns one SQLite file; thread-safe."""

    def __init__(self, path: Path, *, durable: bool = True, poll_interval: float = 0.02) -> None:
        """``durable=False`` (followers) skips the fsync per commit.

        WAL keeps the file consistent either way; a follower that loses its
        last commits to a power cut just resumes from an earlier revision.
        ``poll_interval``: how often to look for other processes' commits.
        """
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = threading.RLock()
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
            with self.read() as txn:
                start = txn.revision()
            self._announcer = _SqliteAnnouncer(self.path, start, poll_interval)
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
        self._announcer.close()
        with self._lock:
            self._db.close()

    def add_listener(self, listener: ChangeListener) -> None:
        """Listeners hear of every revision, this process's or another's; see _announcer."""
        self._announcer.add_listener(listener)

    @contextmanager
    def read(self) -> Iterator[_SqliteTransaction]:
        """One snapshot: another process's commit cannot land between two SELECTs."""
        with self._lock:
            if self._db.in_transaction:  # nested in this thread's read or write: already one
                yield _SqliteTransaction(self._db)
                return
            self._db.execute("BEGIN")
            try:
                yield _SqliteTransaction(self._db)
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[_SqliteTransaction]:
        """One IMMEDIATE transaction; listeners run after COMMIT and after the lock.

        Announcing outside the lock keeps one lock order (announcer, then store:
        the listeners read the store) for the writer and the poll thread alike.
        """
        with self._lock:
            txn = _SqliteTransaction(self._db)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield txn
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        if txn.adopted:  # a replica took a leader's number: announce just that one
            self._announcer.announce_adopted(txn.pending_revision)
        elif txn.pending_revision:
            self._announcer.announce_up_to(txn.pending_revision)


class _SqliteAnnouncer(Announcer):
    """Wakes every ``poll_interval`` and announces what other processes committed.

    Its own connection reads ``PRAGMA data_version`` (a few microseconds; it
    changes when any other connection commits), and the revision only then.
    """

    thread_name = "sqlite-announce"

    def __init__(self, path: Path, announced: int, poll_interval: float) -> None:
        self._poll = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        super().__init__(self._read_revision, announced)
        self._poll_interval = poll_interval

    def _read_revision(self) -> int:
        row = self._poll.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    def _run(self) -> None:
        version = None
        while not self._closed.wait(self._poll_interval):
            try:
                seen = self._poll.execute("PRAGMA data_version").fetchone()[0]
                if seen != version:
                    self.catch_up(rewind=False)  # an adopted revision: its writer announces it
                    version = seen
            except sqlite3.Error as exc:
                log.warning("looking for other processes' commits failed (%s); retrying", exc)

    def close(self) -> None:
        super().close()
        self._poll.close()


class _SqliteTransaction(SqlRows):
    """The Transaction protocol over one connection whose lock the caller holds."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.pending_revision = 0
        self.adopted = False  # the revision is a leader's (replicas), not the next one

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def _insert_items(self, rows: list[tuple[str, str, int, int]]) -> None:
        self._db.executemany("INSERT INTO validation_items VALUES (?,?,?,?)", rows)

    def _insert_results(self, name: str, scores: Mapping[str, float]) -> None:
        self._db.executemany(
            "INSERT INTO model_results VALUES (?,?,?)",
            [(name, item, float(score)) for item, score in scores.items()],
        )

    # The revision counter is a meta row here (PostgreSQL keeps a one-row table).

    def revision(self) -> int:
        return int(self.meta("revision") or 0)

    def next_revision(self) -> int:
        revision = self.revision() + 1
        self.set_meta("revision", str(revision))
        self.pending_revision = revision
        return revision

    def adopt_revision(self, revision: int) -> None:
        self.set_meta("revision", str(revision))
        self.pending_revision = revision
        self.adopted = True
