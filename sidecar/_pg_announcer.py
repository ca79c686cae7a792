"""Commit announcements across PostgreSQL replicas: LISTEN/NOTIFY, with catch-up and a poll.

The announcing itself (every revision once, in order) is ``_announcer``'s; this
is how a replica learns that others committed. Each write
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
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from ._announcer import Announcer
from ._errors import StoreUnavailable

log = logging.getLogger("sidecar.store")

_WAKE_S = 0.25  # how often the LISTEN loop looks up from its socket (close, poll)
_BACKOFF_MAX_S = 1.0


class PgAnnouncer(Announcer):
    """The Announcer woken by LISTEN/NOTIFY, with a catch-up on every (re)connect and poll."""

    thread_name = "pg-listen"

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
        super().__init__(committed_revision, announced)
        self._url = url
        self._kwargs = dict(connect_kwargs)
        self._channel = channel
        self._poll_interval = poll_interval
        self.listening = False  # True while the LISTEN connection is up

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
