"""The follower's side of Watch: keep a local registry copy in step with the leader.

A background thread holds one Watch stream open, applies each snapshot or
change set to the local SQLite copy (whose listener rebuilds and swaps the
routing table), and reconnects with capped exponential backoff and full jitter
from the last applied revision. While the leader is away the sidecar keeps
routing from its last table.

A follower may be given several leader addresses: registry replicas that
share one PostgreSQL database, hence one store_id and one revision sequence.
When a stream fails it tries the next address (round robin, same backoff)
and resumes from its last applied revision, so a failover replays only what
it missed; a replica whose history no longer reaches back that far sends a
compacted snapshot instead.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from ._clustering import Clustering, require_embedder
from ._errors import EmbedderMismatch, InvalidArgument, SidecarError
from ._proto import registry_pb2, registry_pb2_grpc
from ._registry import Registry
from ._wire import change_set_from_response, clustering_from_spec, model_record

log = logging.getLogger("sidecar.follower")

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
]


def leader_addresses(follow: str | Sequence[str]) -> tuple[str, ...]:
    """``a:50051,b:50051`` (or a sequence of addresses) as a tuple; refuses empty or repeated."""
    parts = follow.split(",") if isinstance(follow, str) else list(follow)
    addresses = tuple(part.strip() for part in parts)
    if not addresses or not all(addresses):
        raise InvalidArgument(
            f"--follow {follow!r}: give one or more leader addresses HOST:PORT, comma-separated"
        )
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise InvalidArgument(f"--follow lists {', '.join(repeated)} more than once")
    return addresses


def _channel_options(backoff_initial: float, backoff_max: float) -> list[tuple[str, int]]:
    """gRPC reconnects on its own schedule too (up to 120 s by default): cap it like ours."""
    return [
        *_CHANNEL_OPTIONS,
        ("grpc.initial_reconnect_backoff_ms", max(1, int(backoff_initial * 1000))),
        ("grpc.min_reconnect_backoff_ms", max(1, int(backoff_initial * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(1, int(backoff_max * 1000))),
    ]


@dataclass
class FollowerStatus:
    """What GetStatus and the metrics report about replication."""

    leader: str  # the address currently followed (or tried)
    connected: bool = False
    last_contact: float | None = None  # time.monotonic() of the last message
    reconnects: int = 0
    snapshots_applied: int = 0
    change_sets_applied: int = 0
    last_error: str = ""

    def seconds_since_contact(self) -> float:
        return -1.0 if self.last_contact is None else time.monotonic() - self.last_contact


class Follower:
    """Follows one leader at a time out of ``leaders``; start() once, stop() to end the thread."""

    def __init__(
        self,
        leaders: str | Sequence[str],
        registry: Registry,
        embedder_fingerprint: str,
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        stale_after: float = 10.0,
        on_refused: Callable[[str | None], None] = lambda _reason: None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.leaders = leader_addresses(leaders)
        self._current = 0
        self._credentials = credentials  # TLS to the leader; None means plaintext
        self._metadata = tuple(metadata)  # e.g. the bearer token for a read-locked leader
        self.registry = registry
        self.fingerprint = embedder_fingerprint
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stale_after = stale_after
        self.on_refused = on_refused
        self.status = FollowerStatus(self.leaders[0])
        self._stop = threading.Event()
        self._call: grpc.Future | None = None
        self._delivered = False  # the current stream brought at least one message
        self._thread = threading.Thread(target=self._run, name="follower", daemon=True)
        self._watchdog = threading.Thread(target=self._watch_dog, name="follower-dog", daemon=True)

    @property
    def leader(self) -> str:
        """The address followed now (or tried next)."""
        return self.leaders[self._current]

    def describe_leaders(self) -> str:
        """For messages: the current leader, and the others a write may go to as well."""
        others = [a for a in self.leaders if a != self.leader]
        return self.leader + (f" (or {', '.join(others)})" if others else "")

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=10)
        self._watchdog.join(timeout=10)

    def _channel(self, address: str) -> grpc.Channel:
        options = _channel_options(self.backoff_initial, self.backoff_max)
        if self._credentials is not None:
            return grpc.secure_channel(address, self._credentials, options=options)
        return grpc.insecure_channel(address, options=options)

    def _fail_over(self) -> None:
        """The next address in the list takes over (a no-op with one address)."""
        if len(self.leaders) > 1:
            previous = self.leader
            self._current = (self._current + 1) % len(self.leaders)
            self.status.leader = self.leader
            log.info("failing over from %s to %s", previous, self.leader)

    def _run(self) -> None:
        attempt = 0
        channels = {address: self._channel(address) for address in self.leaders}
        try:
            while not self._stop.is_set():
                if attempt:
                    self.status.reconnects += 1
                    self._fail_over()
                attempt += 1
                stub = registry_pb2_grpc.RegistryStub(channels[self.leader])
                applied = True  # False: the leader sent a clustering this copy refuses
                try:
                    self._follow(stub)
                except grpc.RpcError as exc:
                    if not self._stop.is_set():
                        self._note(f"watch stream to {self.leader} ended: {_describe(exc)}")
                except EmbedderMismatch as exc:
                    applied = False
                    self._note(str(exc), level=logging.ERROR)
                    self.on_refused(str(exc))
                except SidecarError as exc:  # e.g. changes from another store: resync now
                    self._note(f"cannot apply an update from {self.leader}: {exc}", logging.ERROR)
                finally:
                    self.status.connected = False
                    self._call = None
                if self._delivered and applied:
                    attempt = 1  # the stream worked, even if it then broke: start small again
                # A refusal keeps growing the backoff: the leader will send the same
                # thing again, so asking ~10 times a second only fills the log.
                delay = min(self.backoff_max, self.backoff_initial * 2 ** min(attempt, 16))
                self._stop.wait(random.uniform(0, delay))  # full jitter
        finally:
            for channel in channels.values():
                channel.close()

    def _follow(self, stub: registry_pb2_grpc.RegistryStub) -> None:
        """Consumes one Watch stream; sets ``_delivered`` once anything arrives."""
        self._delivered = False
        upstream = self.registry.upstream_store_id
        start = self.registry.revision + 1 if upstream else 0
        call = stub.Watch(
            registry_pb2.WatchRequest(start_revision=start, store_id=upstream),
            metadata=self._metadata or None,
        )
        self._call = call
        if self._stop.is_set():
            call.cancel()
        for response in call:
            self.status.connected = True
            self.status.last_contact = time.monotonic()
            self._delivered = True
            kind = response.WhichOneof("payload")
            if kind == "snapshot":
                self._apply_snapshot(response)
            elif kind == "changes":
                self._apply_changes(response)

    def _apply_snapshot(self, response: registry_pb2.WatchResponse) -> None:
        snapshot = response.snapshot
        clustering = None
        if snapshot.HasField("clustering"):
            clustering = clustering_from_spec(snapshot.clustering)
            self._check(clustering)
        models = [model_record(m) for m in snapshot.models]
        self.registry.replace_all(
            response.header.revision,
            clustering,
            models,
            clustering_revision=snapshot.clustering.activated_revision,
            upstream_store_id=response.header.store_id,
        )
        self.status.snapshots_applied += 1
        self._cleared()
        log.info(
            "applied snapshot at revision %d (%s, %d models)",
            response.header.revision,
            registry_pb2.SnapshotReason.Name(snapshot.reason),
            len(models),
        )

    def _apply_changes(self, response: registry_pb2.WatchResponse) -> None:
        revision = response.header.revision
        if response.header.store_id != self.registry.upstream_store_id:
            raise SidecarError(
                f"{self.leader} sent changes from store {response.header.store_id!r} but this "
                f"copy came from {self.registry.upstream_store_id!r}; resyncing"
            )
        if revision <= self.registry.revision:
            return  # already applied (a replay overlapping what we hold)
        change_set = change_set_from_response(response)
        for change in change_set.changes:
            if change.clustering is not None:
                self._check(change.clustering)
        self.registry.apply_changes(change_set)
        self.status.change_sets_applied += 1
        self._cleared()

    def _check(self, clustering: Clustering) -> None:
        require_embedder(clustering, self.fingerprint, f"{self.leader} (keeping the current table)")

    def _cleared(self) -> None:
        if self.status.last_error:
            self.status.last_error = ""
            self.on_refused(None)

    def _note(self, message: str, level: int = logging.WARNING) -> None:
        """Records and logs ``message``; the same message again is logged at DEBUG only."""
        repeated = message == self.status.last_error
        self.status.last_error = message
        log.log(logging.DEBUG if repeated else level, message)

    def _watch_dog(self) -> None:
        """Cancels a stream that went silent (no heartbeat) so the loop reconnects."""
        while not self._stop.wait(1.0):
            call, contact = self._call, self.status.last_contact
            silent = contact is not None and time.monotonic() - contact > self.stale_after
            if call is not None and self.status.connected and silent:
                log.warning(
                    "no message from %s for %.0fs; reconnecting", self.leader, self.stale_after
                )
                call.cancel()


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'error'}: {details}"
