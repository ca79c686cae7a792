"""The leader's side of Watch: fan committed revisions out to any number of followers.

Each commit is turned into one WatchResponse, once, and offered to every
watcher's bounded queue without blocking. A watcher that falls a whole buffer
behind is dropped (RESOURCE_EXHAUSTED) and resumes from its own revision, so
a slow follower never slows writers or other followers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Generator
from dataclasses import dataclass, field

import grpc

from ._errors import Compacted
from ._proto import registry_pb2
from ._records import ChangeSet
from ._registry import Registry
from ._wire import change_set_response, snapshot_response

log = logging.getLogger("sidecar.watch")

_CLOSE = object()  # the server is stopping
_OVERFLOW = object()  # this watcher fell a whole buffer behind


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

    def header(self, revision: int) -> registry_pb2.ResponseHeader:
        return registry_pb2.ResponseHeader(
            revision=revision,
            compact_revision=self.registry.compact_revision,
            store_id=self.store_id,
        )

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def on_commit(self, revision: int) -> None:
        """Called under the registry's write lock, once per revision, in order."""
        if not self._watchers:
            return
        (change_set,) = self.registry.changes_after(revision - 1)
        response = change_set_response(change_set, self.header(revision))
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.offer((revision, response))

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
                        header=self.header(last), progress=registry_pb2.ProgressNotification()
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
