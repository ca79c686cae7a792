"""Leader/follower replication with real processes, real sockets and real SQLite files.

Every sidecar here is a `python -m sidecar._cli serve` subprocess on a free
loopback port, logging to a file in tmp_path. Processes are stopped with
SIGTERM or killed with SIGKILL exactly as an operator or the OOM killer would,
and the `Sidecars` fixture kills whatever is still running at teardown, so a
failing test never leaks a process. Waits poll with deadlines, never sleep.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import grpc
import pytest
from _processes import (
    CLUSTER_OF,
    CONVERGE,
    PROMPTS,
    RPC_TIMEOUT,
    STARTER_ITEMS,
    K,
    Proc,
    Sidecars,
)
from uniroute.v1 import registry_pb2

from sidecar._readiness import wait_until


def profile_request(name: str, rate: float, cost: float = 1.0) -> Any:
    """An explicit profile: `rate` everywhere except a little lower in cluster 0."""
    rates = [rate] * K
    rates[0] = rate / 2
    return registry_pb2.RegisterModelRequest(
        name=name, cost=cost, profile=registry_pb2.ErrorProfile(error_rates=rates)
    )


def register(proc: Proc, request: Any) -> Any:
    return proc.registry.RegisterModel(request, timeout=RPC_TIMEOUT)


def routes_at(proc: Proc, candidates: Sequence[str], revision: int) -> Any:
    """Routes on proc restricted to candidates and checks which table answered."""
    response = proc.route(candidates)
    assert response.revision == revision, f"{proc.name} at {response.revision}, want {revision}"
    assert response.model in candidates
    return response


def at_revision(proc: Proc, revision: int) -> Any:
    status = proc.status()
    assert status.revision == revision, f"{proc.name} at {status.revision}, want {revision}"
    return status


def disconnected(proc: Proc) -> Any:
    status = proc.status()
    assert not status.connected, f"{proc.name} still reports a stream to its leader"
    return status


def connected(proc: Proc) -> Any:
    status = proc.status()
    assert status.connected, f"{proc.name} has no stream to its leader: {status.last_error}"
    return status


def watchers(proc: Proc, count: int) -> bool:
    assert proc.status().watcher_count == count
    return True


def expect_code(code: grpc.StatusCode, call: Callable[..., Any], *args: Any) -> str:
    """Runs call(*args), which must fail with code; returns the status message."""
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    error: Any = info.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    return str(error.details())


def model_view(response: Any) -> list[tuple[Any, ...]]:
    """What must match between a leader's and a follower's ListModels."""
    return [
        (
            m.name,
            list(m.error_rates),
            list(m.validation_counts),
            m.overall_error,
            m.cost,
            m.revision,
            m.create_revision,
            m.result_count,
            m.profile_source,
            m.clustering_version,
        )
        for m in response.models
    ]


# ------------------------------------------------------------------------ tests


def test_writes_on_the_leader_reach_every_follower(sidecars: Sidecars) -> None:
    leader = sidecars.leader("leader")
    sidecars.wait_serving(leader)
    followers = [sidecars.follower(f"follower{i}", leader) for i in range(3)]
    sidecars.wait_serving(*followers)  # a follower turns SERVING at its first snapshot

    register(leader, profile_request("base", 0.5))
    added = register(leader, profile_request("acme/new-model", 0.2, cost=2.0))
    assert leader.status().revision == added.revision
    for follower in followers:
        routed = wait_until(
            partial(routes_at, follower, ["acme/new-model"], added.revision), CONVERGE
        )
        assert routed.scores[0].expected_error == pytest.approx(
            added.error_rates[routed.cluster], rel=1e-6
        )
        copy = follower.registry.GetModel(
            registry_pb2.GetModelRequest(name="acme/new-model"), timeout=RPC_TIMEOUT
        )
        assert list(copy.error_rates) == list(added.error_rates)
        assert copy.revision == added.revision

    removed = leader.registry.DeregisterModel(
        registry_pb2.DeregisterModelRequest(name="acme/new-model"), timeout=RPC_TIMEOUT
    ).revision
    assert removed == added.revision + 1
    for proc in [leader, *followers]:
        wait_until(partial(at_revision, proc, removed), CONVERGE)
        message = expect_code(grpc.StatusCode.NOT_FOUND, proc.route, ["acme/new-model"])
        assert "acme/new-model" in message
        everyone = proc.route()
        assert (everyone.model, everyone.revision) == ("base", removed)

    for follower in followers:
        message = expect_code(
            grpc.StatusCode.FAILED_PRECONDITION, register, follower, profile_request("rogue", 0.1)
        )
        assert leader.address in message
        message = expect_code(
            grpc.StatusCode.FAILED_PRECONDITION,
            follower.registry.DeregisterModel,
            registry_pb2.DeregisterModelRequest(name="base"),
        )
        assert leader.address in message
        status = follower.status()
        assert status.role == registry_pb2.ROLE_FOLLOWER
        assert status.leader == leader.address
        assert status.connected
        assert (status.revision, status.model_count) == (removed, 1)
        # The first snapshot (revision 1), then exactly the three writes as change sets.
        assert (status.applied_snapshot_count, status.applied_change_set_count) == (1, 3)
        assert status.last_error == ""
    # The refused writes changed nothing anywhere.
    assert [m.name for m in leader.models().models] == ["base"]
    leader_status = leader.status()
    assert leader_status.role == registry_pb2.ROLE_LEADER
    assert (leader_status.revision, leader_status.watcher_count) == (removed, 3)


@pytest.mark.slow
def test_followers_keep_routing_through_a_leader_crash_and_resume(sidecars: Sidecars) -> None:
    leader = sidecars.leader("leader")
    sidecars.wait_serving(leader)
    followers = [sidecars.follower(f"follower{i}", leader) for i in range(2)]
    sidecars.wait_serving(*followers)
    names = ["alpha", "beta", "gamma"]
    revision = 0
    for i, name in enumerate(names):
        revision = register(leader, profile_request(name, 0.2 + 0.1 * i, cost=1.0 + i)).revision
    before = {f.name: wait_until(partial(at_revision, f, revision), CONVERGE) for f in followers}

    sidecars.kill(leader)
    for follower in followers:
        status = wait_until(partial(disconnected, follower), CONVERGE)
        assert (status.revision, status.model_count) == (revision, 3)
        assert status.HasField("since_leader_contact")
        for prompt in PROMPTS:
            routed = follower.route(prompt=prompt)
            assert routed.revision == revision
            assert routed.model in names
        routes_at(follower, ["beta"], revision)

    leader = sidecars.restart(leader)
    sidecars.wait_serving(leader)
    assert leader.status().revision == revision  # the store survived SIGKILL
    added = register(leader, profile_request("delta", 0.1))
    assert added.revision == revision + 1  # revisions are never reused
    for follower in followers:
        wait_until(partial(routes_at, follower, ["delta"], added.revision), CONVERGE)
        after = wait_until(partial(connected, follower), CONVERGE)
        old = before[follower.name]
        assert after.applied_snapshot_count == old.applied_snapshot_count == 1  # resumed, no resync
        assert after.applied_change_set_count == old.applied_change_set_count + 1
        assert after.reconnect_count > old.reconnect_count
        assert after.last_error == ""
    wait_until(partial(watchers, leader, 2), CONVERGE)


@pytest.mark.slow
def test_follower_restarts_from_its_own_db_while_the_leader_is_down(sidecars: Sidecars) -> None:
    leader = sidecars.leader("leader")
    sidecars.wait_serving(leader)
    follower = sidecars.follower("follower", leader)
    sidecars.wait_serving(follower)
    first = register(leader, profile_request("alpha", 0.3))
    second = register(leader, profile_request("beta", 0.4, cost=3.0))
    revision = second.revision
    wait_until(partial(at_revision, follower, revision), CONVERGE)

    sidecars.stop(follower)
    sidecars.kill(leader)
    follower = sidecars.restart(follower)
    sidecars.wait_serving(follower)  # from its local db alone: no leader to talk to
    status = follower.status()
    assert status.role == registry_pb2.ROLE_FOLLOWER
    assert (status.revision, status.model_count) == (revision, 2)
    assert not status.connected
    assert (status.applied_snapshot_count, status.applied_change_set_count) == (0, 0)
    for prompt in PROMPTS:
        routed = follower.route(prompt=prompt)
        assert routed.revision == revision
        assert routed.model in ("alpha", "beta")
    routes_at(follower, ["beta"], revision)
    copy = follower.registry.GetModel(
        registry_pb2.GetModelRequest(name="alpha"), timeout=RPC_TIMEOUT
    )
    assert list(copy.error_rates) == list(first.error_rates)

    # The leader comes back: the follower resumes by replay from its revision, no snapshot.
    leader = sidecars.restart(leader)
    sidecars.wait_serving(leader)
    added = register(leader, profile_request("gamma", 0.1))
    wait_until(partial(routes_at, follower, ["gamma"], added.revision), CONVERGE)
    status = follower.status()
    assert (status.applied_snapshot_count, status.applied_change_set_count) == (0, 1)
    assert status.reconnect_count > 0


def crash_results(i: int) -> dict[str, float]:
    """Distinct, deterministic graded results for model i; every 5th leaves clusters 6.. empty."""
    chosen = {}
    for j, (item, cluster) in enumerate(STARTER_ITEMS):
        if (i % 5 == 0 and cluster >= 6) or (i + j) % 3 == 0:
            continue
        chosen[item] = ((3 * i + 7 * j) % 5) / 4
    return chosen


def expected_profile(scores: dict[str, float]) -> tuple[list[float], list[int], float]:
    """Ψ_k = (errors_k + 1) / (n_k + 2); an empty cluster gets the overall rate."""
    errors, counts = [0.0] * K, [0] * K
    for item, score in scores.items():
        errors[CLUSTER_OF[item]] += 1.0 - score
        counts[CLUSTER_OF[item]] += 1
    overall = (sum(errors) + 1.0) / (sum(counts) + 2.0)
    rates = [(e + 1.0) / (n + 2.0) if n else overall for e, n in zip(errors, counts, strict=True)]
    return rates, counts, overall


def test_sigkill_during_concurrent_registrations_loses_nothing_acknowledged(
    sidecars: Sidecars,
) -> None:
    total, kill_after = 200, 70
    leader = sidecars.leader("leader")
    sidecars.wait_serving(leader)
    assert crash_results(0) != crash_results(5)
    requests = [
        registry_pb2.RegisterModelRequest(
            name=f"crash-{i:03d}",
            cost=float(i % 7),
            results=registry_pb2.ValidationResults(
                results=[
                    registry_pb2.ValidationResult(item_id=item, score=score)
                    for item, score in crash_results(i).items()
                ]
            ),
        )
        for i in range(total)
    ]
    acked: dict[str, Any] = {}
    failures: list[grpc.StatusCode] = []
    lock = threading.Lock()
    stub = leader.registry

    def call(request: Any) -> None:
        try:
            model = stub.RegisterModel(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            with lock:
                failures.append(exc.code())
            return
        with lock:
            acked[model.name] = model
            if len(acked) == kill_after:  # other calls are still in flight
                leader.popen.send_signal(signal.SIGKILL)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(call, requests))
    sidecars.kill(leader)
    assert leader.popen.returncode == -signal.SIGKILL
    assert len(acked) >= kill_after
    assert len(acked) + len(failures) == total
    assert failures, "every call succeeded: the leader was killed too late"
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE}, set(failures)

    # The file as the crash left it: intact, and every model row is whole.
    with contextlib.closing(sqlite3.connect(leader.db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored_revision = int(
            db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
        )
        rows = db.execute(
            "SELECT m.name, m.result_count, "
            "(SELECT COUNT(*) FROM model_results r WHERE r.model = m.name) FROM models m"
        ).fetchall()
    assert stored_revision == len(rows) + 1
    assert all(count == results for _, count, results in rows), rows

    leader = sidecars.restart(leader)
    sidecars.wait_serving(leader)
    listing = leader.models()
    present = {m.name: m for m in listing.models}
    assert set(acked) <= set(present)
    assert len(set(present) - set(acked)) <= 4  # at most the calls in flight at the kill
    assert listing.revision == leader.status().revision == len(present) + 1
    assert sorted(m.revision for m in present.values()) == list(range(2, len(present) + 2))
    for name, model in present.items():
        scores = crash_results(int(name.removeprefix("crash-")))
        rates, counts, overall = expected_profile(scores)
        assert len(model.error_rates) == K
        assert list(model.error_rates) == pytest.approx(rates, rel=1e-12), name
        assert list(model.validation_counts) == counts, name
        assert model.overall_error == pytest.approx(overall, rel=1e-12), name
        assert model.result_count == len(scores), name
        if name in acked:
            assert model.revision == acked[name].revision
            assert list(model.error_rates) == list(acked[name].error_rates)


@pytest.mark.slow
def test_follower_behind_the_compacted_history_resyncs_from_a_snapshot(
    sidecars: Sidecars,
) -> None:
    leader = sidecars.leader("leader", history=5)
    sidecars.wait_serving(leader)
    follower = sidecars.follower("follower", leader)
    sidecars.wait_serving(follower)
    register(leader, profile_request("keeper", 0.4))
    old_revision = register(leader, profile_request("doomed", 0.3)).revision
    wait_until(partial(at_revision, follower, old_revision), CONVERGE)
    sidecars.stop(follower)

    for i in range(8):
        register(leader, profile_request(f"late-{i}", 0.1 + 0.05 * i, cost=1.0 + i))
    for i in range(3):
        leader.registry.DeregisterModel(
            registry_pb2.DeregisterModelRequest(name=f"late-{i}"), timeout=RPC_TIMEOUT
        )
    leader.registry.DeregisterModel(
        registry_pb2.DeregisterModelRequest(name="doomed"), timeout=RPC_TIMEOUT
    )
    update = profile_request("keeper", 0.6, cost=9.0)
    update.allow_update = True
    register(leader, update)
    leader_status = leader.status()
    assert leader_status.revision == old_revision + 13
    assert leader_status.compact_revision > old_revision  # a replay can no longer serve it
    stream = leader.registry.Watch(
        registry_pb2.WatchRequest(start_revision=old_revision + 1), timeout=RPC_TIMEOUT
    )
    try:
        first = next(stream)
    finally:
        stream.cancel()
    assert first.WhichOneof("payload") == "snapshot"
    assert first.snapshot.reason == registry_pb2.SNAPSHOT_REASON_COMPACTED
    assert first.header.revision == leader_status.revision

    follower = sidecars.restart(follower)
    sidecars.wait_serving(follower)
    wait_until(partial(at_revision, follower, leader_status.revision), CONVERGE)
    status = follower.status()
    assert (status.applied_snapshot_count, status.applied_change_set_count) == (1, 0)
    assert status.model_count == 6
    follower_models, leader_models = follower.models(), leader.models()
    assert follower_models.revision == leader_models.revision == leader_status.revision
    assert model_view(follower_models) == model_view(leader_models)
    assert [m.name for m in follower_models.models] == [
        "keeper",
        *(f"late-{i}" for i in (3, 4, 5, 6, 7)),
    ]
    # Deletes made while the follower was away are gone from its table too.
    for gone in ("doomed", "late-0"):
        expect_code(grpc.StatusCode.NOT_FOUND, follower.route, [gone])
    routes_at(follower, ["keeper"], leader_status.revision)
