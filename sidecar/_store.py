"""The store interface: what the registry needs from a durable backend.

The registry (``_registry.py``) holds every rule: revisions, validation, Ψ,
the event log's content, compaction. A store only keeps rows and runs
transactions, so a second backend (PostgreSQL for several replicas) is one
more implementation of these two protocols and touches nothing that serves
traffic, the Watch hub or the follower.

Contract for implementations:

* ``write()`` is one serialisable transaction. On a normal exit it commits;
  on an exception it rolls back and re-raises. After a commit that set
  ``pending_revision``, every listener is called with that revision, in
  revision order, before the next write starts.
* ``read()`` is a consistent view: everything read inside it belongs to one
  committed revision.
* Values go in and come out exactly: floats bit for bit, strings unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from ._clustering import Clustering
from ._errors import InvalidArgument
from ._records import ActiveClustering, ModelRecord

ChangeListener = Callable[[int], None]

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
    """The store for a ``--db`` value: a SQLite file path, or ``sqlite:///PATH``.

    As in SQLAlchemy, ``sqlite:///var/r.db`` is relative and ``sqlite:////tmp/r.db``
    absolute. Any other scheme stops start-up instead of becoming a file name.
    """
    text = str(db)
    scheme, sep, rest = text.partition("://")
    if sep and scheme != "sqlite":
        raise InvalidArgument(
            f"--db {text!r}: unsupported scheme {scheme!r}; use a SQLite file path "
            "(var/registry.db) or sqlite:///PATH"
        )
    from ._sqlite_store import SqliteStore

    return SqliteStore(Path(rest[1:] if sep else text), durable=durable)
