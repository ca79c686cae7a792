"""The store interface: what the registry needs from a durable backend.

The registry (``_registry.py``) holds every rule: revisions, validation, Ψ,
the event log's content, compaction. A store only keeps rows and runs
transactions, so a second backend (PostgreSQL for several replicas) is one
more implementation of these two protocols and touches nothing that serves
traffic, the Watch hub or the follower.

Contract for implementations:

* ``write()`` is one serialisable transaction. On a normal exit it commits;
  on an exception it rolls back and re-raises. Writes are totally ordered:
  each sees every write committed before it, and revisions are gap-free.
* Listeners hear of every committed revision exactly once, strictly in
  revision order, including revisions written by other processes sharing
  the store (PostgreSQL replicas, or the processes of ``serve --processes``
  on one SQLite file); ``_announcer`` does this for both. A revision
  committed by this process is announced before its ``write()`` returns, so
  a process reads its own writes; revisions from elsewhere are announced
  soon after they commit, possibly several in a row. So a listener must not
  assume the store is still at the revision it is told of: it reads the
  event log by revision (``changes_after(revision - 1)``) or a snapshot that
  may already be newer. A replica that adopts a leader's revision number
  announces just that number, even when it is lower than the last one. A
  listener that raises StoreUnavailable may be called again with the same
  revision once the store is back, so listeners tolerate a repeat.
* ``read()`` is a consistent view: everything read inside it belongs to one
  committed revision.
* Values go in and come out exactly: floats bit for bit, strings unchanged.
* A store that cannot reach its database raises StoreUnavailable; a write is
  acknowledged only after its commit succeeded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from ._clustering import Clustering
from ._errors import ArtifactError, InvalidArgument
from ._records import ActiveClustering, ModelRecord

ChangeListener = Callable[[int], None]

POSTGRES_SCHEMES = ("postgresql", "postgres")

#: One row of the event log: (revision, type, kind, key, model payload for model puts).
EventRow = tuple[int, str, str, str, ModelRecord | None]


class Transaction(Protocol):
    """Row-level operations inside one ``read()`` or ``write()``."""

    #: The revision this write commits (0: nothing to announce). Set by next/adopt_revision.
    pending_revision: int

    def revision(self) -> int: ...

    def next_revision(self) -> int:
        """Bumps the store's revision by one and returns it (writes only)."""
        ...

    def adopt_revision(self, revision: int) -> None:
        """Sets the revision to a leader's number (replicas only); may move backwards."""
        ...

    def meta(self, key: str) -> str:
        """A metadata value ('' when unset): store_id, upstream_store_id, ..."""
        ...

    def set_meta(self, key: str, value: str) -> None: ...

    def active_clustering(self) -> ActiveClustering | None: ...

    def clustering(self, version: str) -> Clustering: ...

    def put_clustering(self, clustering: Clustering, revision: int, now: float) -> None:
        """Stores a clustering (once per version) and makes it the active one."""
        ...

    def model(self, name: str) -> ModelRecord | None: ...

    def models(self) -> list[ModelRecord]:
        """Every model in registration order (create_revision, then name)."""
        ...

    def models_after(self, after: str, limit: int) -> list[ModelRecord]:
        """Models with name > ``after``, in name order, at most ``limit``."""
        ...

    def put_model(self, record: ModelRecord) -> None:
        """Inserts or replaces a model row."""
        ...

    def delete_model(self, name: str) -> bool:
        """Deletes a model and its results; False if it did not exist."""
        ...

    def delete_all_models(self) -> None: ...

    def results(self, name: str) -> dict[str, float]:
        """A model's stored per-item scores."""
        ...

    def replace_results(self, name: str, scores: Mapping[str, float]) -> None: ...

    def append_event(
        self, revision: int, seq: int, type_: str, kind: str, key: str, model: ModelRecord | None
    ) -> None: ...

    def events_after(self, revision: int) -> list[EventRow]:
        """Event rows with a revision greater than ``revision``, in (revision, seq) order."""
        ...

    def compact_revision(self) -> int: ...

    def compact(self, up_to: int) -> None:
        """Drops events at or below ``up_to`` and records it as the compact revision."""
        ...

    def reset_events(self, compact_revision: int) -> None:
        """Drops every event (a replica installing a snapshot starts a new history)."""
        ...


class Store(Protocol):
    """A durable backend: transactions plus commit notifications."""

    #: Where the data lives, for messages (a file path or a database URL without password).
    location: str

    def read(self) -> AbstractContextManager[Transaction]: ...

    def write(self) -> AbstractContextManager[Transaction]: ...

    def add_listener(self, listener: ChangeListener) -> None: ...

    def close(self) -> None: ...


def open_store(db: str | Path, *, durable: bool = True) -> Store:
    """The store for a ``--db`` value: a SQLite file path, ``sqlite:///PATH``, or PostgreSQL.

    As in SQLAlchemy, ``sqlite:///var/r.db`` is relative and ``sqlite:////tmp/r.db``
    absolute. ``postgresql://user@host:port/dbname`` (or ``postgres://``) opens
    the PostgreSQL store that several replicas share; libpq's environment
    (PGPASSWORD, ~/.pgpass) supplies what the URL leaves out. Any other scheme
    stops start-up instead of becoming a file name. ``durable`` is for SQLite;
    PostgreSQL commits are as durable as the server is configured to make them.
    """
    text = str(db)
    scheme, sep, rest = text.partition("://")
    if sep and scheme in POSTGRES_SCHEMES:
        try:
            from ._postgres_store import PostgresStore  # psycopg loads only for PostgreSQL
        except ImportError as exc:
            raise ArtifactError(
                f"--db {scheme}://...: PostgreSQL needs psycopg ({exc}); "
                "pip install 'uniroute-sidecar[postgres]'"
            ) from exc
        return PostgresStore(text)
    if sep and scheme != "sqlite":
        raise InvalidArgument(
            f"--db {text!r}: unsupported scheme {scheme!r}; use a SQLite file path "
            "(var/registry.db), sqlite:///PATH, or postgresql://USER@HOST:PORT/DBNAME"
        )
    from ._sqlite_store import SqliteStore

    return SqliteStore(Path(rest[1:] if sep else text), durable=durable)


def is_postgres(db: str | Path) -> bool:
    """True when a ``--db`` value names a PostgreSQL database (shared by replicas)."""
    return str(db).partition("://")[0] in POSTGRES_SCHEMES and "://" in str(db)
