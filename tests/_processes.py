"""Real `sidecar serve` processes for tests: start, stop, kill, restart, never leak.

Every sidecar is a `python -m sidecar._cli serve` subprocess on a free loopback
port, logging to a file in tmp_path. Processes are stopped with SIGTERM or
killed with SIGKILL exactly as an operator or the OOM killer would, and the
`sidecars` fixture kills whatever is still running at teardown, so a failing
test never leaks a process. Waits poll with deadlines, never sleep.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from sidecar._readiness import FAST_RECONNECT, free_port, wait_serving
from sidecar._server import starter_artifact_dir

SIDECAR = [sys.executable, "-m", "sidecar._cli"]
PROGRESS_INTERVAL = "0.5"
RPC_TIMEOUT = 10.0
# How long a change may take to reach a process (a follower catching up, a
# restarted leader accepting its followers again): the `wait_until` deadline.
CONVERGE = 20.0
PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "What is the best way to roast a whole chicken with garlic and thyme?",
    "Summarise the causes of the French revolution in three sentences.",
    "Solve for x: 3x + 7 = 22.",
    "Translate 'good morning, how are you?' into German.",
]


def _starter_items() -> tuple[int, list[tuple[str, int]]]:
    """K and the (item id, cluster) pairs of the shipped starter clustering."""
    data = json.loads((starter_artifact_dir() / "clustering.json").read_text())
    return int(data["k"]), [(str(i), int(c)) for i, c in data["validation"]["items"]]


K, STARTER_ITEMS = _starter_items()
CLUSTER_OF = dict(STARTER_ITEMS)


@dataclass
class Proc:
    """One run of `sidecar serve`; a restart is a new Proc on the same address and db."""

    name: str
    address: str
    db: Path | str  # a SQLite file, or the PostgreSQL URL replicas share
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log: Path
    channel: grpc.Channel

    @property
    def router(self) -> Any:
        return router_pb2_grpc.RouterStub(self.channel)

    @property
    def registry(self) -> Any:
        return registry_pb2_grpc.RegistryStub(self.channel)

    def status(self) -> Any:
        return self.registry.GetStatus(registry_pb2.GetStatusRequest(), timeout=RPC_TIMEOUT)

    def route(self, candidates: Sequence[str] = (), prompt: str = PROMPTS[0]) -> Any:
        request = router_pb2.RouteRequest(prompt=prompt, candidate_models=list(candidates))
        return self.router.Route(request, timeout=RPC_TIMEOUT)

    def models(self) -> Any:
        return self.registry.ListModels(
            registry_pb2.ListModelsRequest(page_size=1000), timeout=RPC_TIMEOUT
        )


class Sidecars:
    """Starts, stops, kills and restarts sidecar processes; close() leaves none running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []

    def leader(
        self,
        name: str,
        *,
        history: int | None = None,
        artifact: Path | None = None,
        address: str | None = None,
        extra: Sequence[str] = (),
    ) -> Proc:
        args = ["--progress-interval", PROGRESS_INTERVAL, *extra]
        if history is not None:
            args += ["--history", str(history)]
        if artifact is not None:
            args += ["--artifact", str(artifact)]
        address = address or f"127.0.0.1:{free_port()}"
        return self._start(name, address, self.root / f"{name}.db", args)

    def replica(self, name: str, db_url: str, *, history: int | None = None) -> Proc:
        """A registry replica: takes writes and serves Watch over a shared PostgreSQL db."""
        args = ["--progress-interval", PROGRESS_INTERVAL]
        if history is not None:
            args += ["--history", str(history)]
        return self._start(name, f"127.0.0.1:{free_port()}", db_url, args)

    def follower(self, name: str, *leaders: Proc, extra: Sequence[str] = ()) -> Proc:
        """Follows the first of ``leaders`` and fails over to the next ones, in order."""
        follow = ",".join(leader.address for leader in leaders)
        args = ["--follow", follow, "--progress-interval", PROGRESS_INTERVAL, *extra]
        return self._start(name, f"127.0.0.1:{free_port()}", self.root / f"{name}.db", args)

    def restart(self, proc: Proc) -> Proc:
        """The same command on the same address and db; the old run must have ended."""
        assert proc.popen.poll() is not None, f"{proc.name} is still running"
        return self._start(proc.name, proc.address, proc.db, list(proc.args))

    def _start(self, name: str, address: str, db: Path | str, args: list[str]) -> Proc:
        run = sum(p.name == name for p in self.procs) + 1
        log = self.root / f"{name}-run{run}.log"
        command = [*SIDECAR, "serve", "--listen", address, "--db", str(db), *args]
        with log.open("wb") as out:  # the child keeps its own descriptor
            popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        proc = Proc(
            name,
            address,
            db,
            tuple(args),
            popen,
            log,
            grpc.insecure_channel(address, FAST_RECONNECT),
        )
        self.procs.append(proc)
        return proc

    def wait_serving(self, *procs: Proc, timeout: float = 60.0) -> None:
        """Each of procs SERVING within one shared deadline; an early exit fails at once."""
        deadline = time.monotonic() + timeout
        for proc in procs:
            left = max(0.0, deadline - time.monotonic())
            wait_serving(
                proc.channel, timeout=left, process=proc.popen, log=proc.log, name=proc.name
            )

    def kill(self, proc: Proc) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed but what the OS holds."""
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=30)

    def stop(self, proc: Proc) -> None:
        """SIGTERM, the clean shutdown; it must exit 0."""
        proc.popen.terminate()
        try:
            code = proc.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise AssertionError(f"{proc.name} ignored SIGTERM:\n{proc.log.read_text()}") from None
        assert code == 0, f"{proc.name} exited {code}:\n{proc.log.read_text()}"

    def close(self) -> None:
        """Kills everything first, then reaps each process; one failure never skips the rest."""
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(OSError):
                    proc.popen.kill()
        for proc in self.procs:
            proc.channel.close()
            proc.popen.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.log.name} -----\n{p.log.read_text(errors='replace')[-4000:]}"
            for p in self.procs
            if p.log.exists()
        )


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[Sidecars]:
    group = Sidecars(tmp_path)
    try:
        yield group
    finally:
        group.close()
        print(group.logs())  # pytest shows it only when the test failed
