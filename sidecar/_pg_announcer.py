"""Commit announcements across replicas: LISTEN/NOTIFY, with catch-up and a poll.

The store's listeners (the server's table rebuild, the Watch hub) must hear
of every revision in order, whichever replica committed it. Each write
NOTIFYs its revision in its own transaction, so a notification arrives only
once that revision, and so every earlier one, has committed: the announcer
calls the listeners once for each revision after the last one it announced,
up to the notified one, in order. The listeners then read the event log by
revision; the payload only says how far to go. Notifications can be missed
(the LISTEN connection drops, the server restarts), so on every (re)connect
and every ``poll_interval`` seconds the announcer also reads the committed
revision from the database and catches up to it. A missed notification
delays an announcement; it never loses or reorders one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from ._errors import StoreUnavailable
from ._store import ChangeListener

log = logging.getLogger("sidecar.store")

_WAKE_S = 0.25  # how often the LISTEN loop looks up from its socket (close, poll)
_BACKOFF_MAX_S = 1.0


class Announcer:
    """Calls listeners for every committed revision, once each, in order; thread-safe."""

    def __init__(
        self,
        url: str,
        connect_kwargs: Mapping[str, Any],
        channel: str,
        committed_revision: Callable[[], int],
        announced: int,
        poll_interval: float,
    ) -> None:
        """``announced``: the revision committed when the store opened (no listener yet)."""
        self._url = url
        self._kwargs = dict(connect_kwargs)
        self._channel = channel
        self._committed_revision = committed_revision
        self._announced = announced
        self._poll_interval = poll_interval
        self._listeners: list[ChangeListener] = []
        self._lock = threading.Lock()  # held while announcing: one revision at a time
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = False  # True while the LISTEN connection is up

    def add_listener(self, listener: ChangeListener) -> None:
        """The LISTEN thread starts with the first listener; nothing is lost before it.

        Revisions committed before that are caught up from ``announced`` on start.
        """
        with self._lock:
            self._listeners.append(listener)
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def announce_up_to(self, revision: int) -> None:
        """Announces everything up to ``revision``, which has committed; returns after.

        Called after a local commit (so a replica reads its own writes) and for
        each notification. If the database fails meanwhile, the LISTEN thread
        announces the rest once it is back; the write stands.
        """
        with self._lock:
            self._announce(revision)

    def catch_up(self) -> None:
        """Reads the committed revision and announces every revision up to it."""
        with self._lock:
            # Read under the lock: then every announced revision is <= this one,
            # unless the database itself went back (restored from a backup).
            committed = self._committed_revision()
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
        backoff = 0.05
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, **self._kwargs) as conn:
                    conn.execute(f"LISTEN {self._channel}")  # before reading: no gap
                    self.listening = True
                    self.catch_up()  # whatever committed while nobody was listening
                    backoff = 0.05
                    self._listen(conn)
            except (psycopg.Error, StoreUnavailable) as exc:
                if not self._closed.is_set():
                    log.warning("commit notifications interrupted (%s); reconnecting", exc)
            finally:
                self.listening = False
            self._closed.wait(backoff)
            backoff = min(_BACKOFF_MAX_S, backoff * 2)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        last_poll = time.monotonic()
        while not self._closed.is_set():
            for note in conn.notifies(timeout=_WAKE_S, stop_after=1):
                if note.payload.isdigit():
                    self.announce_up_to(int(note.payload))
                else:  # not one of ours: look at the database instead
                    self.catch_up()
            if time.monotonic() - last_poll >= self._poll_interval:
                self.catch_up()
                last_poll = time.monotonic()
