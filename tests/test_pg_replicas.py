"""Registry replicas over one PostgreSQL database, and followers that fail over between them.

Real processes throughout: a throwaway PostgreSQL server, `sidecar serve --db
postgresql://...` replicas and `sidecar serve --follow A,B` followers on
loopback. The faults are the real ones: SIGKILL of a replica in the middle of a
burst of writes, PostgreSQL stopped and started again under load, two replicas
writing the same name at once, and a failover to a replica whose history no
longer reaches back to the follower's revision.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any

import grpc
import pytest
from _processes import CONVERGE, PROMPTS, RPC_TIMEOUT, SIDECAR, K, Proc, Sidecars
from test_replication import (
    at_revision,
    connected,
    crash_results,
    expect_code,
    expected_profile,
    model_view,
    profile_request,
    register,
    routes_at,
)
from uniroute.v1 import registry_pb2

from sidecar._pg_throwaway import ThrowawayPostgres
from sidecar._readiness import free_port, wait_until


def results_request(i: int, prefix: str = "burst") -> Any:
    """A registration from graded results, so the replica computes Ψ (crash_results(i))."""
    return registry_pb2.RegisterModelRequest(
        name=f"{prefix}-{i:03d}",
        cost=float(i % 7),
        results=registry_pb2.ValidationResults(
            results=[
                registry_pb2.ValidationResult(item_id=item, score=score)
                for item, score in crash_results(i).items()
            ]
        ),
    )


def assert_right_psi(model: Any, i: int) -> None:
    rates, counts, overall = expected_profile(crash_results(i))
    assert len(model.error_rates) == K
    assert list(model.error_rates) == pytest.approx(rates, rel=1e-12), model.name
    assert list(model.validation_counts) == counts, model.name
    assert model.overall_error == pytest.approx(overall, rel=1e-12), model.name


def following(proc: Proc, leader: Proc) -> Any:
    status = connected(proc)
    assert status.leader == leader.address, f"{proc.name} follows {status.leader}"
    return status


def converged(procs: list[Proc], reference: Proc) -> bool:
    """Every proc lists exactly what reference lists, at reference's revision."""
    want = reference.models()
    for proc in procs:
        got = proc.models()
        assert got.revision == want.revision, f"{proc.name} at {got.revision}, not {want.revision}"
        assert model_view(got) == model_view(want), proc.name
    return True


def first_header(proc: Proc, start_revision: int = 0) -> Any:
    stream = proc.registry.Watch(
        registry_pb2.WatchRequest(start_revision=start_revision), timeout=RPC_TIMEOUT
    )
    try:
        return next(stream)
    finally:
        stream.cancel()


@contextmanager
def routing_throughout(procs: list[Proc]) -> Iterator[list[str]]:
    """Route on every proc in a loop until the block ends; yields the failures seen."""
    stop = threading.Event()
    failures: list[str] = []
    counts = [0] * len(procs)

    def loop(index: int) -> None:
        while not stop.is_set():
            try:
                procs[index].route(prompt=PROMPTS[counts[index] % len(PROMPTS)])
                counts[index] += 1
            except grpc.RpcError as exc:
                failures.append(f"{procs[index].name}: {exc.code()}: {exc.details()}")
            time.sleep(0.01)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(procs))]
    for thread in threads:
        thread.start()
    try:
        yield failures
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert all(counts), f"some proc was never routed: {counts}"


def refused_on_both(outcomes: dict[str, grpc.StatusCode], lock: threading.Lock) -> bool:
    with lock:
        refused = [name for name, code in outcomes.items() if code != grpc.StatusCode.OK]
    return all(any(name.startswith(p) for name in refused) for p in ("load-a", "load-b"))


# --------------------------------------------------------------------------------- tests


def test_replicas_share_writes_and_a_follower_fails_over_without_a_snapshot(
    sidecars: Sidecars, pg_url: str
) -> None:
    a, b = sidecars.replica("replica-a", pg_url), sidecars.replica("replica-b", pg_url)
    sidecars.wait_serving(a, b)
    f1, f2 = sidecars.follower("follower-ab", a, b), sidecars.follower("follower-ba", b, a)
    sidecars.wait_serving(f1, f2)

    # Writes on either replica take the next revision of one sequence.
    written = [
        register(proc, profile_request(f"m{i}", 0.1 + 0.1 * i))
        for i, proc in enumerate([a, b, a, b])
    ]
    assert [m.revision for m in written] == [2, 3, 4, 5]  # revision 1: the starter clustering
    for proc in (a, b, f1, f2):
        wait_until(partial(at_revision, proc, 5), CONVERGE)
    wait_until(partial(converged, [b, f1, f2], a), CONVERGE)
    assert first_header(a).header.store_id == first_header(b).header.store_id != ""
    for replica in (a, b):
        assert replica.status().role == registry_pb2.ROLE_LEADER
    assert wait_until(partial(following, f1, a), CONVERGE)
    assert wait_until(partial(following, f2, b), CONVERGE)
    message = expect_code(
        grpc.StatusCode.FAILED_PRECONDITION, register, f1, profile_request("rogue", 0.1)
    )
    assert a.address in message and b.address in message

    # The same name on both replicas at once: exactly one wins, every time.
    def attempt(proc: Proc, name: str, barrier: threading.Barrier) -> str:
        barrier.wait()
        try:
            register(proc, profile_request(name, 0.3))
        except grpc.RpcError as exc:
            return str(exc.code().name)
        return "OK"

    for round_ in range(8):
        barrier, name = threading.Barrier(2), f"contested-{round_}"
        with ThreadPoolExecutor(2) as pool:
            codes = sorted(pool.map(attempt, [a, b], [name, name], [barrier, barrier]))
        assert codes == ["ALREADY_EXISTS", "OK"], (round_, codes)

    # SIGKILL the replica f1 watches: it fails over to b and resumes by replay.
    before = f1.status()
    sidecars.kill(a)
    added = register(b, profile_request("after-the-kill", 0.2))
    wait_until(partial(routes_at, f1, ["after-the-kill"], added.revision), CONVERGE)
    after = wait_until(partial(following, f1, b), CONVERGE)
    assert after.applied_snapshot_count == before.applied_snapshot_count == 1
    assert after.applied_change_set_count > before.applied_change_set_count
    assert after.reconnect_count > before.reconnect_count
    wait_until(partial(converged, [f1, f2], b), CONVERGE)

    # The killed replica comes back on the same database and takes writes again.
    a = sidecars.restart(a)
    sidecars.wait_serving(a)
    again = register(a, profile_request("back", 0.5))
    assert again.revision == added.revision + 1
    wait_until(partial(converged, [b, f1, f2], a), CONVERGE)
    sidecars.stop(b)  # a clean shutdown closes the pool and the LISTEN thread: exit 0


@pytest.mark.slow
def test_sigkill_of_a_replica_mid_burst_loses_no_acknowledged_write(
    sidecars: Sidecars, pg_url: str
) -> None:
    total, kill_after = 160, 50
    a, b = sidecars.replica("replica-a", pg_url), sidecars.replica("replica-b", pg_url)
    sidecars.wait_serving(a, b)
    followers = [
        sidecars.follower("follower-1", a, b),
        sidecars.follower("follower-2", b, a),
        sidecars.follower("follower-3", a, b),
    ]
    sidecars.wait_serving(*followers)
    acked: dict[str, Any] = {}
    failed: dict[str, grpc.StatusCode] = {}
    lock = threading.Lock()

    def call(i: int) -> None:
        proc = (a, b)[i % 2]  # spread over both replicas
        request = results_request(i)
        try:
            model = proc.registry.RegisterModel(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            with lock:
                failed[request.name] = exc.code()
            return
        with lock:
            acked[model.name] = model
            if len(acked) == kill_after:  # other calls are in flight on both replicas
                sidecars.kill(a)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(call, range(total)))
    assert a.popen.poll() is not None
    assert len(acked) + len(failed) == total
    assert failed, "every call succeeded: the replica was killed too late"
    assert set(failed.values()) == {grpc.StatusCode.UNAVAILABLE}
    assert all(int(name[-3:]) % 2 == 0 for name in failed)  # only a's calls failed

    listing = b.models()
    present = {m.name: m for m in listing.models}
    assert set(acked) <= set(present)  # nothing acknowledged was lost
    assert set(present) - set(acked) <= set(failed)  # at most a's calls cut off mid-commit
    assert len(set(present) - set(acked)) <= 4
    # One gap-free sequence: revision 1 is the starter clustering, then one per model.
    assert sorted(m.revision for m in present.values()) == list(range(2, len(present) + 2))
    assert listing.revision == len(present) + 1
    for name, model in present.items():
        assert_right_psi(model, int(name[-3:]))
        if name in acked:
            assert model.revision == acked[name].revision
            assert list(model.error_rates) == list(acked[name].error_rates)

    # Every follower, whichever replica it watched, converges to the same table.
    wait_until(partial(converged, followers, b), CONVERGE)
    for follower in followers:
        status = wait_until(partial(following, follower, b), CONVERGE)
        assert status.applied_snapshot_count == 1  # failed over by replay, no resync
        routes_at(follower, sorted(acked)[:3], listing.revision)


@pytest.mark.slow
def test_postgres_restarted_under_load(sidecars: Sidecars, own_postgres: ThrowawayPostgres) -> None:
    url = own_postgres.create_database("registry")
    a, b = sidecars.replica("replica-a", url), sidecars.replica("replica-b", url)
    sidecars.wait_serving(a, b)
    followers = [sidecars.follower("follower-1", a, b), sidecars.follower("follower-2", b, a)]
    sidecars.wait_serving(*followers)
    base = register(a, profile_request("base", 0.5))
    for proc in (b, *followers):
        wait_until(partial(at_revision, proc, base.revision), CONVERGE)
    outcomes: dict[str, grpc.StatusCode] = {}
    acked: dict[str, Any] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def write(replica: Proc, prefix: str) -> None:
        i = 0
        while not stop.is_set():
            request = results_request(i, prefix)
            i += 1
            try:
                model = replica.registry.RegisterModel(request, timeout=RPC_TIMEOUT)
            except grpc.RpcError as exc:
                with lock:
                    outcomes[request.name] = exc.code()
                time.sleep(0.05)
                continue
            with lock:
                outcomes[request.name] = grpc.StatusCode.OK
                acked[request.name] = model

    def acked_since(prefix: str, mark: int) -> bool:
        with lock:
            return sum(name.startswith(prefix) for name in acked) > mark

    with routing_throughout([*followers, a, b]) as route_failures:
        writers = [
            threading.Thread(target=write, args=(a, "load-a")),
            threading.Thread(target=write, args=(b, "load-b")),
        ]
        for writer in writers:
            writer.start()
        try:
            wait_until(lambda: len(acked) >= 20, CONVERGE)
            own_postgres.stop()  # fast shutdown: sessions are cut off, in-flight writes abort
            # The outage lasts until both replicas have refused writes (and routing went on).
            wait_until(partial(refused_on_both, outcomes, lock), CONVERGE)
            own_postgres.start()
            with lock:
                marks = {p: sum(n.startswith(p) for n in acked) for p in ("load-a", "load-b")}
            for prefix, mark in marks.items():  # writes resume on both replicas
                wait_until(partial(acked_since, prefix, mark), CONVERGE)
        finally:
            stop.set()
            for writer in writers:
                writer.join()
    assert route_failures == [], route_failures[:5]  # followers and replicas never stopped

    refused = {name for name, code in outcomes.items() if code != grpc.StatusCode.OK}
    assert refused, "no write met the outage"
    assert {outcomes[name] for name in refused} == {grpc.StatusCode.UNAVAILABLE}
    listing = a.models()
    present = {m.name: m for m in listing.models}
    assert set(acked) <= set(present)  # never a false success
    assert set(present) - set(acked) - {"base"} <= refused  # only writes cut off mid-commit
    for name in acked:
        assert present[name].revision == acked[name].revision
        assert_right_psi(present[name], int(name[-3:]))
    assert sorted(m.revision for m in present.values()) == list(range(2, len(present) + 2))
    wait_until(partial(converged, [b, *followers], a), CONVERGE)


@pytest.mark.slow
def test_failover_to_a_replica_whose_history_is_compacted_brings_a_snapshot(
    sidecars: Sidecars, pg_url: str
) -> None:
    a = sidecars.replica("replica-a", pg_url, history=3)
    b = sidecars.replica("replica-b", pg_url, history=3)
    sidecars.wait_serving(a, b)
    follower = sidecars.follower("follower", a, b)
    sidecars.wait_serving(follower)
    register(a, profile_request("keeper", 0.4))
    old = register(a, profile_request("doomed", 0.3)).revision
    wait_until(partial(at_revision, follower, old), CONVERGE)
    sidecars.stop(follower)

    for i in range(6):
        register(b, profile_request(f"late-{i}", 0.1 + 0.05 * i))
    b.registry.DeregisterModel(registry_pb2.DeregisterModelRequest(name="doomed"))
    current = b.status()
    assert current.compact_revision > old  # b can no longer replay from the follower's revision
    first = first_header(b, start_revision=old + 1)
    assert first.snapshot.reason == registry_pb2.SNAPSHOT_REASON_COMPACTED

    sidecars.kill(a)  # the follower comes back to find its first leader gone
    follower = sidecars.restart(follower)
    sidecars.wait_serving(follower)
    wait_until(partial(at_revision, follower, current.revision), CONVERGE)
    status = wait_until(partial(following, follower, b), CONVERGE)
    assert (status.applied_snapshot_count, status.applied_change_set_count) == (1, 0)
    wait_until(partial(converged, [follower], b), CONVERGE)
    expect_code(grpc.StatusCode.NOT_FOUND, follower.route, ["doomed"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--follow", "127.0.0.1:1", "--db", "postgresql://u@127.0.0.1:1/db"], "SQLite --db"),
        (["--follow", "127.0.0.1:1,,127.0.0.1:2"], "comma-separated"),
        (["--follow", "127.0.0.1:1,127.0.0.1:1"], "more than once"),
        (["--db", "mysql://h/d"], "postgresql://USER@HOST:PORT/DBNAME"),
    ],
)
def test_bad_replica_and_follower_settings_stop_start_up(
    args: list[str], message: str, tmp_path: Any
) -> None:
    result = subprocess.run(
        [*SIDECAR, "serve", "--listen", f"127.0.0.1:{free_port()}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no file, no directory named after a URL
