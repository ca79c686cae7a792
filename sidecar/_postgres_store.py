"""The PostgreSQL store: several registry replicas share one database.

Rows only, like the SQLite store; the rules live in the registry. What
PostgreSQL adds is writers in several processes:

* Every write transaction first locks the one row of ``revision`` (``SELECT
  ... FOR UPDATE``). Writes from every replica therefore run one at a time,
  each sees everything committed before it (READ COMMITTED takes a fresh
  snapshot per statement), and revisions are gap-free and totally ordered;
  a rolled-back write leaves no trace, not even a revision number.
* Reads are REPEATABLE READ, READ ONLY: one snapshot, so one revision.
* Inside each write the new revision is ``NOTIFY``-ed; ``_pg_announcer``
  turns notifications (and reconnects, and a periodic poll) into listener
  calls for every revision, from every replica, in order.
* A lost connection, a restarting server or an exhausted pool become
  StoreUnavailable (UNAVAILABLE): a write is acknowledged only after COMMIT.

The tables live in their own schema, ``uniroute``, so the database can be
shared with other applications.

The rows themselves are ``_sql_rows.SqlRows``, shared with SQLite; this
module has what only PostgreSQL needs: the pool, the revision lock, COPY and
unnest for bulk rows, LISTEN/NOTIFY, and connection loss mapped to UNAVAILABLE
at every step.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from ._clustering import Clustering
from ._errors import (
    AlreadyExists,
    ArtifactError,
    InvalidArgument,
    SidecarError,
    StoreUnavailable,
)
from ._pg_announcer import PgAnnouncer
from ._records import (
    FLOAT_ARRAY,
    INT_ARRAY,
    INTEGER,
    REAL,
    TEXT,
    model_table_sql,
)
from ._sql_rows import SqlRows
from ._store import ChangeListener

log = logging.getLogger("sidecar.store")

SCHEMA = "uniroute"
SCHEMA_VERSION = 2  # 2: clusterings.learned_map (a LearnedMap's θ, b and item weights)
CHANNEL = "uniroute_commits"
_INIT_LOCK = 0x756E69726F757465  # pg_advisory_xact_lock key: two replicas starting at once

#: Statements that bring a schema from version N-1 to N; start-up applies the missing ones.
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE revision (
            one_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one_row),
            value BIGINT NOT NULL
        )""",
        "INSERT INTO revision (value) VALUES (0)",
        """CREATE TABLE clusterings (
            version TEXT PRIMARY KEY,
            k INTEGER NOT NULL,
            dim INTEGER NOT NULL,
            embedder_fingerprint TEXT NOT NULL,
            centroids BYTEA NOT NULL,
            info TEXT NOT NULL,
            revision BIGINT NOT NULL,
            create_time DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE validation_items (
            clustering_version TEXT NOT NULL REFERENCES clusterings(version),
            item_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            cluster INTEGER NOT NULL,
            PRIMARY KEY (clustering_version, item_id)
        )""",
        # Byte order for names, as in SQLite, so pages and ties sort the same everywhere.
        model_table_sql(
            "models",
            {
                TEXT: 'TEXT COLLATE "C"',
                REAL: "DOUBLE PRECISION",
                INTEGER: "BIGINT",
                FLOAT_ARRAY: "BYTEA",
                INT_ARRAY: "BYTEA",
            },
        ),
        """CREATE TABLE model_results (
            model TEXT COLLATE "C" NOT NULL REFERENCES models(name) ON DELETE CASCADE,
            item_id TEXT NOT NULL,
            score DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (model, item_id)
        )""",
        """CREATE TABLE events (
            revision BIGINT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (revision, seq)
        )""",
    ],
    2: ["ALTER TABLE clusterings ADD COLUMN learned_map TEXT NOT NULL DEFAULT ''"],
}
# libpq settings: notice a dead server or network within seconds, not hours.
_CONNECT_KWARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "application_name": "uniroute-sidecar",
}
# Session settings: a replica frozen or cut off inside a write must not hold the
# revision lock for ever, and a writer must not queue behind it for ever.
_SESSION = (
    f"SET search_path TO {SCHEMA}; SET idle_in_transaction_session_timeout = '10s'; "
    "SET lock_timeout = '15s'"
)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def translate(exc: Exception, where: str, *, committing: bool = False) -> SidecarError:
    """A psycopg or pool error as the exception tree's class for it."""
    if isinstance(exc, pg_errors.UniqueViolation):
        return AlreadyExists(f"{where}: {exc}")
    if isinstance(exc, psycopg.DataError):
        return InvalidArgument(f"the registry database refused a value: {exc}".strip())
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | PoolClosed):
        outcome = (
            "; the write may or may not have been applied: read before writing it again"
            if committing
            else "; nothing was changed, retry later"
        )
        return StoreUnavailable(f"the registry database {where} is unavailable ({exc}){outcome}")
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction | pg_errors.TransactionRollback):
        return StoreUnavailable(f"the registry database {where} refused the write ({exc}); retry")
    return SidecarError(f"registry database {where}: {type(exc).__name__}: {exc}")


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_SESSION)


class PostgresStore:
    """One database, shared by any number of replicas; thread-safe."""

    def __init__(
        self, url: str, *, pool_size: int = 8, pool_timeout: float = 3.0, poll_interval: float = 1.0
    ) -> None:
        """``pool_timeout``: how long a call waits for a connection before UNAVAILABLE."""
        self.location = redact(url)
        self._url = url
        self._clusterings: dict[str, Clustering] = {}  # versions are content hashes: immutable
        try:
            with psycopg.connect(url, autocommit=True, **_CONNECT_KWARGS) as conn:
                self._init_schema(conn)
                start = int(conn.execute("SELECT value FROM revision").fetchone()[0])  # type: ignore[index]
        except psycopg.Error as exc:
            raise ArtifactError(
                f"cannot open the registry database {self.location}: {exc}".strip()
            ) from exc
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs={"autocommit": True, **_CONNECT_KWARGS},
            min_size=2,
            max_size=pool_size,
            timeout=pool_timeout,
            # Give up a reconnection chain after a second: the next call starts a new
            # one at once, so writes resume as soon as the server is back instead of
            # at the pool's next backoff step (1, 2, 4 ... s).
            reconnect_timeout=1.0,
            configure=_configure,
            name="uniroute",
            open=True,
        )
        self._announcer = PgAnnouncer(
            url, _CONNECT_KWARGS, CHANNEL, self._committed_revision, start, poll_interval
        )

    def _init_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Creates or migrates the schema, one replica at a time."""
        conn.execute(_SESSION)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise ArtifactError(
                    f"registry database {self.location} has schema version {version}, newer than "
                    f"this sidecar supports ({SCHEMA_VERSION}); upgrade the sidecar"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            if version == 0:
                # The database's identity: every replica of it reports the same store_id.
                conn.execute(
                    "INSERT INTO meta VALUES ('store_id', %s), ('compact_revision', '0')",
                    (uuid.uuid4().hex,),
                )
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )

    def _committed_revision(self) -> int:
        with self.read() as txn:
            return txn.revision()

    def close(self) -> None:
        self._announcer.close()
        self._pool.close()

    def add_listener(self, listener: ChangeListener) -> None:
        """Listeners hear of every revision any replica commits; see _announcer."""
        self._announcer.add_listener(listener)

    @contextmanager
    def _begin(self, begin: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside ``begin``; rolled back unless the caller committed.

        Connections are not checked on checkout (a round trip each time).
        One that a server restart broke fails at BEGIN, before anything was
        done, so the pool is checked (broken connections are replaced) and
        the transaction starts once more on a fresh one.
        """
        for attempt in (1, 2):
            with self._pool.connection() as conn:
                try:
                    conn.execute(begin)
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    self._pool.check()
                    continue
                try:
                    yield conn
                finally:
                    if conn.info.transaction_status != TransactionStatus.IDLE and not conn.closed:
                        # If the connection is gone, the server rolls back on its own.
                        with contextlib.suppress(psycopg.Error):
                            conn.execute("ROLLBACK")
                return

    @contextmanager
    def read(self) -> Iterator[_PostgresTransaction]:
        """One snapshot: everything read belongs to one committed revision."""
        try:
            with self._begin("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY") as conn:
                yield _PostgresTransaction(conn, self._clusterings)
        except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
            raise translate(exc, self.location) from exc

    @contextmanager
    def write(self) -> Iterator[_PostgresTransaction]:
        """One transaction behind the revision lock; listeners run after COMMIT."""
        txn = None
        committing = False
        try:
            # Statements without parameters go as one simple query: one round trip.
            with self._begin("BEGIN; SELECT value FROM revision FOR UPDATE") as conn:
                txn = _PostgresTransaction(conn, self._clusterings)
                yield txn
                committing = True
                revision = int(txn.pending_revision)
                notify = f"SELECT pg_notify('{CHANNEL}', '{revision}'); " if revision else ""
                conn.execute(f"{notify}COMMIT")
        except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
            raise translate(exc, self.location, committing=committing) from exc
        if txn is not None and txn.pending_revision:
            self._announcer.announce_up_to(txn.pending_revision)


class _PostgresTransaction(SqlRows):
    """The Transaction protocol over one pooled connection inside BEGIN ... COMMIT."""

    def __init__(self, conn: psycopg.Connection[Any], clusterings: dict[str, Clustering]) -> None:
        self._db = conn
        self._clusterings = clusterings
        self.pending_revision = 0

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._db.execute(_to_pyformat(sql), params)

    def _insert_items(self, rows: list[tuple[str, str, int, int]]) -> None:
        with self._db.cursor().copy(
            "COPY validation_items (clustering_version, item_id, position, cluster) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)

    def _insert_results(self, name: str, scores: Mapping[str, float]) -> None:
        self._db.execute(  # one statement, one round trip, however many items
            "INSERT INTO model_results (model, item_id, score) "
            "SELECT %s, item, score FROM unnest(%s::text[], %s::float8[]) AS r(item, score)",
            (name, list(scores), [float(v) for v in scores.values()]),
        )

    # The revision counter is a one-row table; every write transaction locks it
    # first (see ``write``), which is what orders the replicas' writes.

    def revision(self) -> int:
        return int(self._one("SELECT value FROM revision")[0])

    def next_revision(self) -> int:
        revision = int(self._one("UPDATE revision SET value = value + 1 RETURNING value")[0])
        self.pending_revision = revision
        return revision

    def adopt_revision(self, revision: int) -> None:
        self._execute("UPDATE revision SET value = ?", (revision,))
        self.pending_revision = revision

    def clustering(self, version: str) -> Clustering:
        """Cached per store (a clustering never changes under its version)."""
        cached = self._clusterings.get(version)
        if cached is not None:
            return cached
        clustering = super().clustering(version)
        if len(self._clusterings) >= 8:
            self._clusterings.clear()
        self._clusterings[version] = clustering
        return clustering


def _to_pyformat(sql: str) -> str:
    """SqlRows' ``?`` placeholders as psycopg's ``%s`` (no statement holds a literal ? or %)."""
    return sql.replace("?", "%s")
