"""Watch and followers in one process, over real sockets: the contract, message by message."""

from __future__ import annotations

import queue
import threading
import time
from contextlib import ExitStack, contextmanager

import grpc
import numpy as np
import pytest
from _helpers import CODE_PROMPT, Client, topic_results, two_topic_prompts
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uniroute.v1 import registry_pb2, router_pb2

from sidecar import Registry, ServerConfig, serve
from sidecar._clustering import fit_clustering, save_clustering
from sidecar._readiness import free_port, wait_until
from sidecar._server import REGISTRY_SERVICE
from sidecar._watch import WatchHub
from sidecar._wire import clustering_spec


def register(client, name, cost=1.0, good_topic="code"):
    return client.registry.RegisterModel(
        registry_pb2.RegisterModelRequest(
            name=name,
            cost=cost,
            results=registry_pb2.ValidationResults(results=topic_results(good_topic)),
        )
    )


def status(client):
    return client.registry.GetStatus(registry_pb2.GetStatusRequest())


class WatchReader:
    """Reads a raw Watch stream on a thread so tests can wait for the next message."""

    def __init__(self, client: Client, start_revision: int) -> None:
        self.call = client.registry.Watch(registry_pb2.WatchRequest(start_revision=start_revision))
        self.messages: queue.Queue[object] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self.messages.put(message)
        except grpc.RpcError as exc:
            self.messages.put(exc)

    def next(self, timeout: float = 5.0) -> registry_pb2.WatchResponse:
        item = self.messages.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=5)


@pytest.fixture
def leader(make_sidecar, topic_artifact, tmp_path):
    return make_sidecar(
        artifact_dir=topic_artifact, db_path=tmp_path / "leader.db", progress_interval=0.2
    )


def follower_of(make_sidecar, leader, tmp_path, name="follower", **kwargs):
    return make_sidecar(
        follow=f"127.0.0.1:{leader.port}", db_path=tmp_path / f"{name}.db", **kwargs
    )


def test_snapshot_then_changes_then_progress(leader, connect):
    client = connect(leader.port)
    reader = WatchReader(client, 0)
    try:
        first = reader.next()
        assert first.WhichOneof("payload") == "snapshot"
        assert first.snapshot.reason == registry_pb2.SNAPSHOT_REASON_REQUESTED
        assert first.header.revision == 1
        assert first.snapshot.clustering.k == 2
        assert len(first.snapshot.models) == 0
        register(client, "coder")
        change = reader.next()
        assert change.WhichOneof("payload") == "changes"
        assert change.header.revision == 2
        (event,) = change.changes.events
        assert event.type == registry_pb2.EVENT_TYPE_PUT
        assert event.model.name == "coder"
        assert event.model.error_rates[0] == pytest.approx(
            client.registry.GetModel(registry_pb2.GetModelRequest(name="coder")).error_rates[0]
        )
        beat = reader.next(timeout=3)
        assert beat.WhichOneof("payload") == "progress"
        assert beat.header.revision == 2
    finally:
        reader.close()


def test_resume_replays_from_start_revision(leader, connect):
    client = connect(leader.port)
    for name in ("a", "b", "c"):
        register(client, name)
    client.registry.DeregisterModel(registry_pb2.DeregisterModelRequest(name="b"))
    reader = WatchReader(client, 3)
    try:
        revisions = []
        for _ in range(3):
            message = reader.next()
            assert message.WhichOneof("payload") == "changes"
            revisions.append(message.header.revision)
        assert revisions == [3, 4, 5]
        assert message.changes.events[0].type == registry_pb2.EVENT_TYPE_DELETE
        assert message.changes.events[0].model.name == "b"
    finally:
        reader.close()


def test_compacted_and_ahead_resumes_get_snapshots(make_sidecar, topic_artifact, connect, tmp_path):
    sidecar = make_sidecar(artifact_dir=topic_artifact, history=2, progress_interval=0.2)
    client = connect(sidecar.port)
    for i in range(5):
        register(client, f"m{i}")
    for start, reason in (
        (2, registry_pb2.SNAPSHOT_REASON_COMPACTED),
        (99, registry_pb2.SNAPSHOT_REASON_AHEAD),
    ):
        reader = WatchReader(client, start)
        try:
            message = reader.next()
            assert message.WhichOneof("payload") == "snapshot"
            assert message.snapshot.reason == reason
            assert message.header.revision == 6
            assert message.header.compact_revision == 4
            assert [m.name for m in message.snapshot.models] == [f"m{i}" for i in range(5)]
        finally:
            reader.close()
    within = WatchReader(client, 5)  # 5 > compact revision 4: replayed, no snapshot
    try:
        assert within.next().WhichOneof("payload") == "changes"
    finally:
        within.close()


def test_bad_watch_requests(leader, make_sidecar, connect, tmp_path):
    client = connect(leader.port)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(client.registry.Watch(registry_pb2.WatchRequest(start_revision=-1))))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    follower = follower_of(make_sidecar, leader, tmp_path)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(connect(follower.port).registry.Watch(registry_pb2.WatchRequest())))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"127.0.0.1:{leader.port}" in info.value.details()


def test_follower_converges_and_refuses_writes(leader, make_sidecar, connect, tmp_path):
    leader_client = connect(leader.port)
    register(leader_client, "coder", 10.0, "code")
    follower = follower_of(make_sidecar, leader, tmp_path)
    client = connect(follower.port)
    wait_until(lambda: status(client).revision == leader.registry.revision)
    assert client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT)).model == "coder"
    register(leader_client, "chef", 1.0, "cook")
    wait_until(lambda: status(client).model_count == 2)
    with pytest.raises(grpc.RpcError) as info:
        register(client, "sneaky")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "follower" in info.value.details()
    snapshot = status(client)
    assert snapshot.role == registry_pb2.ROLE_FOLLOWER
    assert snapshot.connected
    assert 0 <= snapshot.since_leader_contact.ToTimedelta().total_seconds() < 5
    assert snapshot.applied_snapshot_count == 1
    assert snapshot.applied_change_set_count == 1
    assert status(leader_client).watcher_count == 1


def _clustering_with_k(embedder, k, fingerprint=None):
    train, val = two_topic_prompts()
    return fit_clustering(
        embedder.embed_batch(train).vectors,
        [i for i, _, _ in val],
        embedder.embed_batch([p for _, p, _ in val]).vectors,
        k=k,
        embedder_fingerprint=fingerprint or embedder.fingerprint,
        seed=1,
    )


def test_reclustering_reaches_followers_in_one_revision(
    leader, make_sidecar, connect, tmp_path, embedder
):
    leader_client = connect(leader.port)
    register(leader_client, "coder", 10.0, "code")
    register(leader_client, "chef", 1.0, "cook")
    follower = follower_of(make_sidecar, leader, tmp_path)
    client = connect(follower.port)
    wait_until(lambda: status(client).model_count == 2)
    new = _clustering_with_k(embedder, 3)
    active = leader_client.registry.ActivateClustering(
        registry_pb2.ActivateClusteringRequest(clustering=clustering_spec(new))
    )
    assert (active.k, active.version, active.revision) == (3, new.version, 4)
    wait_until(lambda: status(client).revision == 4)
    table = follower.tables.current
    assert table.clustering_version == new.version
    assert table.psi.shape == (2, 3)  # every model recomputed, in the same revision
    np.testing.assert_allclose(table.psi, leader.tables.current.psi)
    assert status(client).applied_change_set_count == 1  # one consistent change set
    bad = clustering_spec(new)
    bad.centroids = bad.centroids[:-4]
    with pytest.raises(grpc.RpcError) as info:
        leader_client.registry.ActivateClustering(
            registry_pb2.ActivateClusteringRequest(clustering=bad)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class _OtherEmbedder:
    """The real embedder under another fingerprint: an embedder upgrade on the leader."""

    def __init__(self, real) -> None:
        self._real = real
        self.dim = real.dim
        self.max_tokens = real.max_tokens
        self.fingerprint = "f" * 64

    def embed(self, text):
        return self._real.embed(text)

    def encode(self, text):
        return self._real.encode(text)

    def run(self, ids, mask):
        return self._real.run(ids, mask)

    def embed_batch(self, texts, **kwargs):
        return self._real.embed_batch(texts, **kwargs)


def test_follower_refuses_clustering_from_another_embedder(
    make_sidecar, connect, topic_artifact, tmp_path, embedder
):
    port = free_port()
    first = make_sidecar(
        artifact_dir=topic_artifact, listen=f"127.0.0.1:{port}", db_path=tmp_path / "l.db"
    )
    register(connect(first.port), "coder")
    follower = make_sidecar(follow=f"127.0.0.1:{port}", db_path=tmp_path / "f.db")
    client = connect(follower.port)
    wait_until(lambda: status(client).model_count == 1)
    before = follower.tables.current
    first.stop(0)

    other = _OtherEmbedder(embedder)
    artifact = tmp_path / "other"
    save_clustering(_clustering_with_k(embedder, 3, fingerprint=other.fingerprint), artifact)
    make_sidecar(
        artifact_dir=artifact,
        listen=f"127.0.0.1:{port}",
        db_path=tmp_path / "l.db",
        with_embedder=other,
    )
    wait_until(lambda: "refusing clustering" in status(client).last_error, timeout=20)
    health = health_pb2_grpc.HealthStub(client.channel)
    registry_health = health.Check(health_pb2.HealthCheckRequest(service=REGISTRY_SERVICE))
    assert registry_health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health.Check(health_pb2.HealthCheckRequest()).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    assert follower.tables.current is before  # the old table keeps serving
    assert client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT)).model == "coder"
    # Each refusal grows the backoff (0.1 s doubling, capped at 5 s, full jitter):
    # in 4 s that is about 5 reconnects at most, where resetting it after every
    # delivered snapshot made about 40.
    reconnects = status(client).reconnect_count
    time.sleep(4.0)
    assert status(client).reconnect_count - reconnects <= 12


class _Context:
    """Just enough of grpc.ServicerContext for driving WatchHub.stream directly."""

    def __init__(self) -> None:
        self.callbacks: list[object] = []

    def add_callback(self, callback) -> bool:
        self.callbacks.append(callback)
        return True

    def abort(self, code, details):
        raise _Aborted(code, details)


class _Aborted(Exception):
    pass


def test_slow_watcher_is_dropped_without_blocking_writers(topic_artifact, tmp_path):
    from sidecar._clustering import load_clustering

    registry = Registry.open(tmp_path / "hub.db")
    registry.activate_clustering(load_clustering(topic_artifact))
    hub = WatchHub(registry, buffer=3, progress_interval=0.1)
    registry.add_listener(hub.on_commit)
    slow = hub.stream(0, _Context())
    assert next(slow).WhichOneof("payload") == "snapshot"
    started = time.monotonic()
    for i in range(10):  # the slow watcher reads nothing meanwhile
        registry.register_model(f"m{i}", 1.0, error_rates=[0.1, 0.2])
    assert time.monotonic() - started < 5
    with pytest.raises(_Aborted) as info:
        while True:
            next(slow)
    assert info.value.args[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "resume from revision 2" in info.value.args[1]
    assert hub.watcher_count == 0
    fresh = hub.stream(2, _Context())
    assert [next(fresh).header.revision for _ in range(10)] == list(range(2, 12))
    fresh.close()
    registry.close()


@contextmanager
def leader_and_follower(embedder, artifact, tmp_dir):
    with ExitStack() as stack:
        leader = serve(
            ServerConfig(
                listen="127.0.0.1:0",
                db_path=tmp_dir / "pl.db",
                artifact_dir=artifact,
                progress_interval=0.2,
            ),
            embedder=embedder,
        )
        stack.callback(leader.stop, 0)
        follower = serve(
            ServerConfig(
                listen="127.0.0.1:0", db_path=tmp_dir / "pf.db", follow=f"127.0.0.1:{leader.port}"
            ),
            embedder=embedder,
        )
        stack.callback(follower.stop, 0)
        yield leader, follower


NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            NAMES,
            st.floats(0, 100),
            st.lists(st.floats(0, 1), min_size=2, max_size=2),
        ),
        st.tuples(st.just("delete"), NAMES, st.just(0.0), st.just([])),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_any_sequence_of_puts_and_deletes_replicates_exactly(
    ops, embedder, topic_artifact, tmp_path_factory
):
    tmp_dir = tmp_path_factory.mktemp("prop")
    with leader_and_follower(embedder, topic_artifact, tmp_dir) as (leader, follower):
        for op, name, cost, rates in ops:
            if op == "put":
                leader.registry.register_model(name, cost, error_rates=rates, allow_update=True)
            elif name in leader.tables.current.index:
                leader.registry.deregister_model(name)
        expected = leader.tables.current
        wait_until(
            lambda: (
                follower.tables.current is not None
                and follower.tables.current.revision == expected.revision
            )
        )
        got = follower.tables.current
        assert got.names == expected.names
        np.testing.assert_array_equal(got.psi, expected.psi)
        np.testing.assert_array_equal(got.costs, expected.costs)
        assert got.clustering_version == expected.clustering_version
        assert [m.revision for m in follower.registry.snapshot().models] == [
            m.revision for m in leader.registry.snapshot().models
        ]


def test_follower_resyncs_when_the_leader_store_is_replaced(
    make_sidecar, connect, topic_artifact, tmp_path
):
    """Same port, another database at a higher revision: revisions are not comparable."""
    port = free_port()
    first = make_sidecar(
        artifact_dir=topic_artifact, listen=f"127.0.0.1:{port}", db_path=tmp_path / "one.db"
    )
    register(connect(first.port), "a")
    follower = make_sidecar(follow=f"127.0.0.1:{port}", db_path=tmp_path / "f.db")
    client = connect(follower.port)
    wait_until(lambda: status(client).model_count == 1)
    first.stop(0)

    second = make_sidecar(
        artifact_dir=topic_artifact, listen=f"127.0.0.1:{port}", db_path=tmp_path / "two.db"
    )
    second_client = connect(second.port)
    for name in ("x", "y", "z"):  # revision 4 > the follower's 2
        register(second_client, name)
    wait_until(lambda: follower.tables.current.names == ("x", "y", "z"), timeout=20)
    assert follower.tables.current.revision == second.registry.revision
    assert status(client).applied_snapshot_count == 2
    assert follower.registry.upstream_store_id == second.registry.store_id
    clustering = client.registry.GetClustering(registry_pb2.GetClusteringRequest())
    assert clustering.revision == 1  # the leader's activation revision, not the snapshot's
