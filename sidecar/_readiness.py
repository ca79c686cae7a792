"""Waiting for a sidecar: polling with a deadline, SERVING checks, free loopback ports.

Everything that starts a sidecar and must know when it is ready (the tests,
the bench suite, the demos) uses these, so there is one definition of
"ready" (the standard gRPC health service answers SERVING) and one polling
loop with a deadline instead of sleeps.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")

#: Channel options for launchers: reconnect to a (re)starting server within
#: ~0.1 s instead of gRPC's default backoff of up to seconds.
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.02) -> T:
    """Polls ``check`` until it returns something truthy and returns that.

    AssertionError and grpc.RpcError from ``check`` count as "not yet"; after
    ``timeout`` seconds the last one is raised (or an AssertionError if the
    check merely kept returning something falsy).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def is_serving(channel: grpc.Channel, service: str = "", timeout: float = 1.0) -> bool:
    """True when the health service answers SERVING for ``service`` ("" = the server)."""
    health = health_pb2_grpc.HealthStub(channel)
    try:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_serving(
    channel: grpc.Channel,
    *,
    timeout: float = 60.0,
    interval: float = 0.02,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    name: str = "sidecar",
) -> None:
    """Blocks until the server behind ``channel`` is SERVING.

    With ``process``, an early exit fails at once instead of at the deadline;
    with ``log``, the failure message carries the server's log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{name} exited early (code {process.returncode}){_tail(log)}")
        if is_serving(channel):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not SERVING within {timeout}s{_tail(log)}")
        time.sleep(interval)


def _tail(log: Path | None, limit: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return ":\n" + log.read_text(errors="replace")[-limit:]
