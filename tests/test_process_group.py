"""`serve --processes N`: real processes sharing one port, and one SQLite file or a leader.

Which process answers a call is the kernel's choice per connection, so the
tests open many connections and read each process's own /metrics (process I
serves it on the metrics port + I) to see what every one of them holds.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from functools import partial

import grpc
import pytest
from _processes import CONVERGE, PROMPTS, RPC_TIMEOUT, SIDECAR, K, Proc, Sidecars
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from sidecar import InvalidArgument
from sidecar._process_group import check_group, sibling_settings
from sidecar._readiness import free_port, wait_until

PROCESSES = 2


def test_only_a_fixed_tcp_port_can_be_shared() -> None:
    check_group("unix:///tmp/x.sock", 1)
    check_group("127.0.0.1:0", 1)
    check_group("127.0.0.1:50051", 2)
    with pytest.raises(InvalidArgument, match="unix socket"):
        check_group("unix:///tmp/x.sock", 2)
    with pytest.raises(InvalidArgument, match="fixed port"):
        check_group("127.0.0.1:0", 2)
    with pytest.raises(InvalidArgument, match="at least 1"):
        check_group("127.0.0.1:50051", 0)


def test_siblings_share_a_leader_store_but_not_a_follower_copy() -> None:
    first = sibling_settings(0, "var/registry.db", "0.0.0.0:9100", follow=False)
    assert (first.db, first.metrics_listen, first.activate_artifact) == (
        "var/registry.db",
        "0.0.0.0:9100",
        True,
    )
    second = sibling_settings(2, "var/registry.db", "0.0.0.0:9100", follow=False)
    assert (second.db, second.metrics_listen, second.activate_artifact) == (
        "var/registry.db",
        "0.0.0.0:9102",
        False,
    )
    assert sibling_settings(1, "var/follower.db", None, follow=True).db == "var/follower.db.1"
    url = "postgresql://u@h:5432/d"
    assert sibling_settings(1, url, "127.0.0.1:0", follow=False) == sibling_settings(
        1, url, "127.0.0.1:0", follow=False
    )
    assert sibling_settings(1, url, "127.0.0.1:0", follow=False).metrics_listen == "127.0.0.1:0"


def metric(port: int, name: str) -> float:
    """One unlabelled sample (or the sum of a labelled family) from a process's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M)
    assert values, f"no {name} on port {port}"
    return sum(float(v) for v in values)


def holds_models(port: int, count: int) -> bool:
    return metric(port, "uniroute_table_models") == count


def profile(name: str, rate: float) -> registry_pb2.RegisterModelRequest:
    return registry_pb2.RegisterModelRequest(
        name=name, cost=1.0, profile=registry_pb2.ErrorProfile(error_rates=[rate] * K)
    )


@pytest.fixture
def connections() -> Iterator[list[grpc.Channel]]:
    """Filled by the test: channels that each hold a TCP connection of their own."""
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def open_connections(address: str, n: int, into: list[grpc.Channel]) -> list[grpc.Channel]:
    for _ in range(n):
        into.append(grpc.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)]))
    return into[-n:]


def free_ports(count: int) -> int:
    """A port that is free with the ``count - 1`` ports after it (a group's metrics ports)."""
    for _ in range(100):
        base = free_port()
        with contextlib.ExitStack() as held:
            try:
                for offset in range(count):
                    taken = held.enter_context(socket.socket())
                    taken.bind(("127.0.0.1", base + offset))
            except OSError:
                continue
            return base
    raise AssertionError(f"no {count} consecutive free ports")


def group_serving(proc: Proc, timeout: float = 120.0) -> None:
    """Process 0 prints its line once every sibling is SERVING; an early exit fails at once."""

    def serving() -> bool:
        text = proc.log.read_text(errors="replace")
        if proc.popen.poll() is not None:  # not an AssertionError: wait_until would retry
            raise RuntimeError(f"{proc.name} exited before its group was SERVING:\n{text}")
        return "process 0 of" in text

    wait_until(serving, timeout)


def sibling_pids(proc: Proc) -> list[int]:
    text = proc.log.read_text(errors="replace")
    return [int(p) for i, p in re.findall(r"process (\d+) of \d+ \(pid (\d+)\)", text) if i != "0"]


def test_a_leader_group_shares_one_port_and_one_registry(
    sidecars: Sidecars, connections: list[grpc.Channel]
) -> None:
    metrics_port = free_ports(PROCESSES)  # process I serves /metrics on port + I
    metrics_ports = [metrics_port + i for i in range(PROCESSES)]
    address = f"127.0.0.1:{free_port()}"
    extra = ["--processes", str(PROCESSES), "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    leader = sidecars.leader("group", address=address, extra=extra)
    group_serving(leader)
    assert len(sibling_pids(leader)) == PROCESSES - 1

    # A write through the shared port reaches every process's table, whichever took it.
    registry_pb2_grpc.RegistryStub(leader.channel).RegisterModel(
        profile("alpha", 0.2), timeout=RPC_TIMEOUT
    )
    for port in metrics_ports:
        wait_until(partial(holds_models, port, 1), CONVERGE)

    # Calls spread over the processes, one connection at a time, and all agree.
    for channel in open_connections(address, 16, connections):
        response = router_pb2_grpc.RouterStub(channel).Route(
            router_pb2.RouteRequest(prompt=PROMPTS[0]), timeout=RPC_TIMEOUT
        )
        assert response.model == "alpha"
    assert all(metric(port, "uniroute_routes_total") > 0 for port in metrics_ports)

    # A deregistration on whichever process leaves every one with no model to route to.
    registry_pb2_grpc.RegistryStub(connections[-1]).DeregisterModel(
        registry_pb2.DeregisterModelRequest(name="alpha"), timeout=RPC_TIMEOUT
    )
    for port in metrics_ports:
        wait_until(partial(holds_models, port, 0), CONVERGE)
    for channel in connections:
        with pytest.raises(grpc.RpcError) as caught:
            router_pb2_grpc.RouterStub(channel).Route(
                router_pb2.RouteRequest(prompt=PROMPTS[1]), timeout=RPC_TIMEOUT
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    pids = sibling_pids(leader)
    sidecars.stop(leader)  # SIGTERM to process 0 stops the siblings too, exit 0
    for pid in pids:
        wait_until(partial(_gone, pid), 30)


def test_a_follower_group_keeps_one_copy_per_process(
    sidecars: Sidecars, connections: list[grpc.Channel]
) -> None:
    leader = sidecars.leader("leader")
    sidecars.wait_serving(leader)
    metrics_port = free_ports(PROCESSES)  # process I serves /metrics on port + I
    follower = sidecars.follower(
        "followers",
        leader,
        extra=["--processes", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
    )
    group_serving(follower)
    registry_pb2_grpc.RegistryStub(leader.channel).RegisterModel(
        profile("beta", 0.3), timeout=RPC_TIMEOUT
    )
    for port in (metrics_port, metrics_port + 1):
        wait_until(partial(holds_models, port, 1), CONVERGE)
    assert (sidecars.root / "followers.db").exists()
    assert (sidecars.root / "followers.db.1").exists()


def test_a_sibling_that_dies_stops_the_group_with_an_error(sidecars: Sidecars) -> None:
    leader = sidecars.leader("group", extra=["--processes", "2"])
    group_serving(leader)
    (pid,) = sibling_pids(leader)
    os.kill(pid, signal.SIGKILL)
    assert leader.popen.wait(timeout=60) == 1
    assert "serving process 1" in leader.log.read_text()


def test_a_second_sidecar_cannot_take_a_port_already_served(sidecars: Sidecars) -> None:
    """gRPC's default SO_REUSEPORT would let it bind and take half the connections."""
    first = sidecars.leader("first")
    sidecars.wait_serving(first)
    second = sidecars.leader("second", address=first.address)
    assert second.popen.wait(timeout=120) != 0
    assert "cannot listen on" in second.log.read_text()


@pytest.mark.parametrize(
    ("listen", "message"),
    [("unix:///tmp/uniroute-group.sock", "unix socket"), ("127.0.0.1:0", "fixed port")],
)
def test_serve_refuses_a_group_on_an_address_it_cannot_share(
    tmp_path, listen: str, message: str
) -> None:
    command = [*SIDECAR, "serve", "--listen", listen, "--db", str(tmp_path / "r.db")]
    done = subprocess.run(
        [*command, "--processes", "2"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "r.db").exists()


def test_the_siblings_die_with_process_zero(sidecars: Sidecars) -> None:
    leader = sidecars.leader("group", extra=["--processes", "2"])
    group_serving(leader)
    pids = sibling_pids(leader)
    sidecars.kill(leader)
    deadline = time.monotonic() + 30
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
            assert time.monotonic() < deadline, f"sibling {pid} outlived process 0"
            time.sleep(0.05)


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_sibling_that_cannot_start_stops_process_zero_with_the_reason(
    sidecars: Sidecars,
) -> None:
    """Process 1's metrics port (the metrics port + 1) is taken: it exits before SERVING."""
    port = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        leader = sidecars.leader(
            "group", extra=["--processes", "2", "--metrics-listen", f"127.0.0.1:{port}"]
        )
        assert leader.popen.wait(timeout=120) == 1
    log = leader.log.read_text()
    assert "cannot serve metrics" in log
    assert "before SERVING" in log


def test_a_follower_of_a_leader_group_hears_writes_taken_by_every_process(
    sidecars: Sidecars, connections: list[grpc.Channel]
) -> None:
    """Its Watch stream lands on one process; writes land on either one."""
    metrics_port = free_ports(PROCESSES)  # process I serves /metrics on port + I
    leader = sidecars.leader(
        "group",
        extra=["--processes", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
    )
    group_serving(leader)
    follower = sidecars.follower("follower", leader)
    sidecars.wait_serving(follower)
    names = sorted(f"m{i:02d}" for i in range(16))  # 16 connections: both processes take some
    for name, channel in zip(names, open_connections(leader.address, 16, connections), strict=True):
        registry_pb2_grpc.RegistryStub(channel).RegisterModel(
            profile(name, 0.2), timeout=RPC_TIMEOUT
        )
    # Both processes took some of the writes (each counts its own registrations).
    taken = [
        metric(port, "uniroute_registrations_total") for port in (metrics_port, metrics_port + 1)
    ]
    assert all(count > 0 for count in taken), taken
    wait_until(lambda: sorted(m.name for m in follower.models().models) == names, CONVERGE)
