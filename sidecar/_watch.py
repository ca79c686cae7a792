"""The leader's side of Watch: fan committed revisions out to any number of followers.

Each commit is turned into one WatchResponse, once, and offered to every
watcher's bounded queue without blocking. A watcher that falls a whole buffer
behind is dropped (RESOURCE_EXHAUSTED) and resumes from its own revision, so
a slow follower never slows writers or other followers.

With PostgreSQL, revisions from other replicas reach ``on_commit`` soon
after they commit, sometimes several in a row; each is read from the event
log by its number, so none is skipped or sent twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import grpc

from ._errors import Compacted, StoreUnavailable
from ._proto import registry_pb2
from ._records import ChangeSet
from ._registry import Registry
from ._wire import change_set_response, snapshot_response

log = logging.getLogger("sidecar.watch")

_CLOSE = object()  # the server is stopping
_OVERFLOW = object()  # this watcher fell a whole buffer behind
_RESYNC = object()  # a revision was compacted before it could be sent


@dataclass(eq=False)
class _Watcher:
    queue: queue.Queue[object]
    overflowed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, item: object) -> None:
        with self.lock:
            if self.overflowed:
                return
            try:
                self.queue.put_nowait(item)
            except queue.Full:
                self.overflowed = True
                with self.queue.mutex:
                    self.queue.queue.clear()
                self.queue.put_nowait(_OVERFLOW)


class WatchHub:
    """Registry listener plus the per-stream loop of the Watch RPC."""

    def __init__(
        self,
        registry: Registry,
        *,
        buffer: int = 1024,
        progress_interval: float = 2.0,
        max_watchers: int = 64,
    ) -> None:
        self.registry = registry
        self.buffer = buffer
        self.progress_interval = progress_interval
        self.max_watchers = max_watchers
        self._watchers: set[_Watcher] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.store_id = registry.store_id
        self._compact_revision = 0
        self._compact_read_at = -1.0  # time.monotonic() of the last read; -1: never
        self._ahead: dict[int, ChangeSet] = {}  # change sets read before their announcement

    def compact_revision(self, max_age: float = 0.0) -> int:
        """The store's compact revision, read again if the last read is older than ``max_age`` s.

        Heartbeats use the last value read (``max_age=inf``), so they never
        wait for the database: while it is away they go on and followers stay
        connected. Live change sets read it at most once a second. The value
        only grows, so an old one is a safe lower bound.
        """
        now = time.monotonic()
        if self._compact_read_at < 0 or now - self._compact_read_at > max_age:
            with contextlib.suppress(StoreUnavailable):
                self._compact_revision = self.registry.compact_revision
                self._compact_read_at = now
        return self._compact_revision

    def header(self, revision: int, max_age: float = 0.0) -> registry_pb2.ResponseHeader:
        return registry_pb2.ResponseHeader(
            revision=revision,
            compact_revision=self.compact_revision(max_age),
            store_id=self.store_id,
        )

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def on_commit(self, revision: int) -> None:
        """The store's listener: once per revision, in order (a repeat is harmless).

        Several revisions may have committed since (other replicas): one read
        of the event log serves them all. A revision compacted before it could
        be read sends every watcher back to resume, which gets it a snapshot.
        """
        if not self._watchers:
            self._ahead.clear()
            return
        change_set = self._ahead.pop(revision, None)
        if change_set is None:
            try:
                sets = self.registry.changes_after(revision - 1)
            except Compacted:
                self._offer_all(_RESYNC)
                return
            self._ahead = {s.revision: s for s in sets if s.revision > revision}
            change_set = sets[0] if sets and sets[0].revision == revision else None
        if change_set is not None:
            response = change_set_response(change_set, self.header(revision, max_age=1.0))
            self._offer_all((revision, response))

    def _offer_all(self, item: object) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.offer(item)

    def close(self) -> None:
        """Ends every stream cleanly (server shutdown)."""
        with self._lock:
            self._closed = True
            watchers = list(self._watchers)
        for watcher in watchers:
            with watcher.lock, watcher.queue.mutex:
                watcher.queue.queue.clear()
            watcher.queue.put(_CLOSE)

    def stream(
        self, start_revision: int, context: grpc.ServicerContext, store_id: str = ""
    ) -> Generator[registry_pb2.WatchResponse, None, None]:
        """Snapshot or replay from start_revision, then live change sets and heartbeats."""
        watcher = _Watcher(queue.Queue(maxsize=self.buffer + 1))
        with self._lock:
            if self._closed:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            if len(self._watchers) >= self.max_watchers:  # each stream holds a server thread
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"at most {self.max_watchers} Watch streams are allowed; retry later",
                )
            self._watchers.add(watcher)  # before reading: no commit can fall in between
        context.add_callback(lambda: watcher.queue.put(_CLOSE))
        try:
            last = yield from self._catch_up(start_revision, store_id)
            while True:
                try:
                    item = watcher.queue.get(timeout=self.progress_interval)
                except queue.Empty:
                    yield registry_pb2.WatchResponse(
                        header=self.header(last, max_age=math.inf),
                        progress=registry_pb2.ProgressNotification(),
                    )
                    continue
                if item is _CLOSE:
                    return
                if item is _OVERFLOW:
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"watcher fell more than {self.buffer} revisions behind; "
                        f"resume from revision {last + 1}",
                    )
                if item is _RESYNC:
                    context.abort(
                        grpc.StatusCode.OUT_OF_RANGE,
                        "a revision was compacted before this replica could send it; "
                        f"resume from revision {last + 1} (a snapshot follows)",
                    )
                assert isinstance(item, tuple)
                revision: int = item[0]
                if revision > last:  # revisions up to `last` came with the catch-up
                    yield item[1]
                    last = revision
        finally:
            with self._lock:
                self._watchers.discard(watcher)

    def _catch_up(
        self, start_revision: int, store_id: str
    ) -> Generator[registry_pb2.WatchResponse, None, int]:
        """Yields a snapshot or the replay; returns the revision the watcher is then at."""
        current = self.registry.revision
        reason: registry_pb2.SnapshotReason | None = None
        change_sets: list[ChangeSet] = []
        if start_revision <= 0:
            reason = registry_pb2.SNAPSHOT_REASON_REQUESTED
        elif store_id and store_id != self.store_id:
            reason = registry_pb2.SNAPSHOT_REASON_STORE_CHANGED
        elif start_revision > current + 1:
            reason = registry_pb2.SNAPSHOT_REASON_AHEAD
        else:
            try:
                change_sets = self.registry.changes_after(start_revision - 1)
            except Compacted:
                reason = registry_pb2.SNAPSHOT_REASON_COMPACTED
        if reason is not None:
            snapshot = self.registry.snapshot()
            yield snapshot_response(snapshot, reason, self.header(snapshot.revision))
            return snapshot.revision
        for change_set in change_sets:
            yield change_set_response(change_set, self.header(change_set.revision))
        return change_sets[-1].revision if change_sets else start_revision - 1
