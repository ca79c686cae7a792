"""Commit announcements: every revision, once, in order, whichever process committed it.

The store's listeners (the server's table rebuild, the Watch hub) must hear
of every revision in order. When several processes share one store
(PostgreSQL replicas, or the processes of ``sidecar serve --processes`` on
one SQLite file), a process learns of the others' commits from a watcher:
PostgreSQL's LISTEN/NOTIFY (``_pg_announcer``) or SQLite's ``data_version``
(``_sqlite_store``). Either way it only learns *how far* the store has got;
the announcer then calls the listeners once for each revision after the last
one it announced, up to there, and the listeners read the event log by
revision. A late or missed wake-up delays an announcement; it never loses or
reorders one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ._errors import StoreUnavailable
from ._store import ChangeListener

log = logging.getLogger("sidecar.store")


class Announcer:
    """Calls listeners for every committed revision, once each, in order; thread-safe.

    Subclasses supply ``_run``, the watcher thread that calls ``announce_up_to``
    or ``catch_up`` as it learns of commits; it starts with the first listener.
    """

    thread_name = "announcer"

    def __init__(self, committed_revision: Callable[[], int], announced: int) -> None:
        """``announced``: the revision committed when the store opened (no listener yet)."""
        self._committed_revision = committed_revision
        self._announced = announced
        self._listeners: list[ChangeListener] = []
        self._lock = threading.Lock()  # held while announcing: one revision at a time
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def add_listener(self, listener: ChangeListener) -> None:
        """The watcher starts with the first listener; nothing committed before is lost.

        Revisions committed before that are caught up from ``announced`` on start.
        """
        with self._lock:
            self._listeners.append(listener)
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=self.thread_name, daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def announce_up_to(self, revision: int) -> None:
        """Announces everything up to ``revision``, which has committed; returns after.

        Called after a local commit (so a process reads its own writes) and by
        the watcher. If the database fails meanwhile, the watcher announces the
        rest once it is back; the write stands.
        """
        with self._lock:
            self._announce(revision)

    def announce_adopted(self, revision: int) -> None:
        """A replica took a leader's ``revision`` number, a jump either way: announces it alone.

        Listeners see that one number (lower than the last one after a new
        leader's snapshot) and read the store from there, as for any announcement.
        """
        with self._lock:
            self._announced = revision - 1
            self._announce(revision)

    def catch_up(self, *, rewind: bool = True) -> None:
        """Reads the committed revision and announces every revision up to it.

        A store found behind the last announcement was restored from a backup
        (``rewind``: announce it again) or was rewound by this very process,
        whose writer announces that itself (``rewind=False``: leave it).
        """
        with self._lock:
            # Read under the lock: then every announced revision is <= this one,
            # unless the database itself went back.
            committed = self._committed_revision()
            if committed < self._announced and not rewind:
                return
            if committed < self._announced:
                log.warning(
                    "the registry database is at revision %d, behind the announced %d "
                    "(restored from a backup?); announcing it again",
                    committed,
                    self._announced,
                )
                self._announced = committed - 1
            self._announce(committed)

    def _announce(self, target: int) -> None:
        """Caller holds the lock. A listener's StoreUnavailable leaves the rest for later."""
        while self._announced < target and not self._closed.is_set():
            revision = self._announced + 1
            for listener in list(self._listeners):
                try:
                    listener(revision)
                except StoreUnavailable as exc:
                    # Called again with this revision later: listeners tolerate a repeat.
                    log.warning("revision %d not announced yet: %s", revision, exc)
                    return
                except Exception:  # the revision is durable; one bad listener must not hide it
                    log.exception("listener failed for revision %d", revision)
            self._announced = revision

    def _run(self) -> None:
        raise NotImplementedError
