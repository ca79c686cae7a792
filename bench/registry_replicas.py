"""Registry replicas over PostgreSQL: write throughput, propagation to followers, failover.

Everything is real and on this machine: a throwaway PostgreSQL server (the
machine's binaries, default settings: fsync and synchronous_commit on, its
data on the same disk as the SQLite file), `sidecar serve` replicas and
followers as processes on loopback.

1. Registrations per second (RegisterModel with graded results for the 144
   starter items, acknowledged by the server), SQLite leader against
   PostgreSQL replicas, with 1 and 4 concurrent writers.
2. Propagation: writes alternate between 2 replicas; the delay from each
   acknowledgement until a Route restricted to the new model succeeds on each
   of 3 followers (each given both replica addresses). Goal: p99 <= 50 ms.
   Measured in the same run, side by side: one SQLite leader and 3 followers.
3. Failover: ``kill -9`` of the replica a follower is watching, then one write
   on the other replica; the time from the kill until the follower routes to
   the new model. Followers run with ``--progress-interval 1``, so a silent
   stream is given up after 5 s (the heartbeat timeout); goal: <= 2 s + 5 s.
   For comparison, SIGSTOP of the watched replica (a silent one, like a
   partition) is recovered by that timeout.
4. Zero acknowledged writes lost: every acknowledged write of parts 2 and 3
   is on the surviving replica, with its revision, and on every follower.

    python -m bench.registry_replicas [--registrations 300] [--propagation 100]
        [--failovers 5] [--time-limit 1800]
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2_grpc

from bench._common import add_time_limit, guarded, record, spawn, stop, summarise_ms, verdict
from bench.watch_propagation import delays_on_all, wait_visible
from sidecar._clustering import load_clustering
from sidecar._pg_throwaway import ThrowawayPostgres
from sidecar._readiness import FAST_RECONNECT, free_port, wait_serving, wait_until
from sidecar._server import starter_artifact_dir

GOAL_PROPAGATION_P99_MS = 50.0
HEARTBEAT_TIMEOUT_S = 5.0  # followers give up a silent stream after 5 progress intervals
GOAL_FAILOVER_S = 2.0 + HEARTBEAT_TIMEOUT_S
TIME_LIMIT_S = 30 * 60
EMBEDDING = np.random.default_rng(0).standard_normal(384).astype(np.float32).tolist()


class Server:
    """One `sidecar serve` process that can be killed, frozen and restarted."""

    def __init__(self, workdir: Path, name: str, db: str, *args: str) -> None:
        self.workdir, self.name, self.db, self.args = workdir, name, db, args
        self.address = f"127.0.0.1:{free_port()}"
        self.channel = grpc.insecure_channel(self.address, options=FAST_RECONNECT)
        self.registry = registry_pb2_grpc.RegistryStub(self.channel)
        self.router = router_pb2_grpc.RouterStub(self.channel)
        self.process: Any = None
        self.runs = 0

    def start(self) -> Server:
        self.runs += 1
        log = self.workdir / f"{self.name}-{self.runs}.log"
        command = [sys.executable, "-m", "sidecar._cli", "serve", "--listen", self.address]
        command += ["--db", self.db, "--progress-interval", "1", *self.args]
        with log.open("wb") as out:
            self.process = spawn(command, log=out, name=self.name)
        wait_serving(self.channel, timeout=120, process=self.process, log=log, name=self.name)
        return self

    def kill(self) -> None:
        """kill -9 of the server process, as the OOM killer would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        stop(self.process)  # reaped already: only forgets it

    def close(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGCONT)  # in case it was frozen
            stop(self.process)
        self.channel.close()


@functools.cache
def starter_items() -> tuple[str, ...]:
    return load_clustering(starter_artifact_dir()).item_ids


def results_request(name: str, i: int) -> registry_pb2.RegisterModelRequest:
    """Graded results for every starter item; deterministic and different per model."""
    results = [
        registry_pb2.ValidationResult(item_id=item, score=((3 * i + 7 * j) % 5) / 4)
        for j, item in enumerate(starter_items())
    ]
    return registry_pb2.RegisterModelRequest(
        name=name, cost=1.0 + i % 7, results=registry_pb2.ValidationResults(results=results)
    )


# ----------------------------------------------------------------------- throughput


def throughput(
    workdir: Path, label: str, db: str, replicas: int, writers: int, total: int
) -> dict[str, Any]:
    """Registrations per second: ``writers`` threads, spread over ``replicas`` servers."""
    servers = [Server(workdir, f"{label}-{r}", db) for r in range(replicas)]
    try:
        for server in servers:
            server.start()
        requests = [results_request(f"{label}-m{i:04d}", i) for i in range(total)]

        def write(w: int) -> None:
            stub = servers[w % replicas].registry
            for request in requests[w::writers]:
                stub.RegisterModel(request, timeout=60)

        start = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(write, range(writers)))
        seconds = time.perf_counter() - start
        listing = servers[0].registry.ListModels(registry_pb2.ListModelsRequest(page_size=1000))
        assert len(listing.models) == total, f"{label}: {len(listing.models)} of {total} stored"
    finally:
        for server in servers:
            server.close()
    return {"label": label, "per_second": total / seconds, "seconds": seconds}


# ---------------------------------------------------------------- propagation, failover


def propagation(
    replicas: list[Server], followers: list[Server], count: int, acked: dict[str, int]
) -> list[list[float]]:
    """Writes alternate between the replicas; delay until each follower routes to the model."""
    delays: list[list[float]] = [[] for _ in followers]
    with ThreadPoolExecutor(len(followers)) as pool:
        for i in range(count):
            name = f"prop-{i:04d}"
            model = replicas[i % 2].registry.RegisterModel(results_request(name, i), timeout=30)
            acknowledged = time.perf_counter()
            acked[name] = model.revision
            routers = [f.router for f in followers]
            for j, delay in enumerate(delays_on_all(pool, routers, name, EMBEDDING, acknowledged)):
                delays[j].append(delay)
    return delays


def sqlite_propagation(workdir: Path, count: int) -> list[list[float]]:
    """The same measurement with one SQLite leader and 3 followers: the baseline."""
    leader = Server(workdir, "sqlite-leader", str(workdir / "leader.db"))
    followers = [
        Server(
            workdir, f"sqlite-follower-{i}", str(workdir / f"sf{i}.db"), "--follow", leader.address
        )
        for i in range(3)
    ]
    try:
        for server in [leader, *followers]:
            server.start()
        return propagation([leader, leader], followers, count, {})
    finally:
        for server in [*followers, leader]:
            server.close()


def failover(
    replicas: list[Server], follower: Server, rounds: int, how: str, acked: dict[str, int]
) -> list[float]:
    """``how`` is "kill" (kill -9) or "freeze" (SIGSTOP) of the replica the follower watches."""
    by_address = {r.address: r for r in replicas}
    times = []
    for i in range(rounds):
        status = wait_until(lambda: connected(follower), timeout=60)
        victim = by_address[status.leader]
        other = next(r for r in replicas if r is not victim)
        name = f"{how}-{i:02d}"
        start = time.perf_counter()
        if how == "kill":
            victim.kill()
        else:
            victim.process.send_signal(signal.SIGSTOP)
        try:
            model = other.registry.RegisterModel(results_request(name, i), timeout=30)
            acked[name] = model.revision
            times.append(wait_visible(follower.router, name, EMBEDDING, start))
        finally:
            if how == "kill":
                victim.start()
            else:
                victim.process.send_signal(signal.SIGCONT)
    return times


def connected(server: Server) -> Any:
    status = server.registry.GetStatus(registry_pb2.GetStatusRequest(), timeout=5)
    return status if status.connected else None


def lost_writes(replicas: list[Server], followers: list[Server], acked: dict[str, int]) -> int:
    """Acknowledged writes missing (or at another revision) anywhere, once all converged."""
    reference = replicas[0].registry.ListModels(registry_pb2.ListModelsRequest(page_size=1000))
    present = {m.name: m.revision for m in reference.models}
    lost = sum(present.get(name) != revision for name, revision in acked.items())

    def same_table(server: Server) -> bool:
        listing = server.registry.ListModels(registry_pb2.ListModelsRequest(page_size=1000))
        return {m.name: m.revision for m in listing.models} == present

    for server in [*replicas[1:], *followers]:
        wait_until(lambda s=server: same_table(s), timeout=60)  # type: ignore[misc]
    return lost


# ------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.registry_replicas", description=__doc__)
    parser.add_argument("--registrations", type=int, default=300, help="per throughput run")
    parser.add_argument("--propagation", type=int, default=100, help="writes to time")
    parser.add_argument("--failovers", type=int, default=5, help="kill -9 rounds")
    parser.add_argument("--freezes", type=int, default=2, help="SIGSTOP rounds")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    with guarded(args.time_limit, "bench.registry_replicas"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp, ThrowawayPostgres() as pg:
        workdir = Path(tmp)
        runs = []
        for writers in (1, 4):
            runs.append(
                throughput(
                    workdir,
                    f"sqlite-{writers}w",
                    str(workdir / f"w{writers}.db"),
                    1,
                    writers,
                    args.registrations,
                )
            )
            for count in (1, 2) if writers > 1 else (1,):
                label = f"pg-{count}r-{writers}w"
                url = pg.create_database(label.replace("-", "_"))
                runs.append(throughput(workdir, label, url, count, writers, args.registrations))

        baseline = sqlite_propagation(workdir, args.propagation)
        url = pg.create_database("fleet")
        replicas = [Server(workdir, "replica-a", url), Server(workdir, "replica-b", url)]
        followers = [
            Server(workdir, f"follower-{i}", str(workdir / f"f{i}.db"), "--follow", follow)
            for i, follow in enumerate(
                [
                    f"{replicas[0].address},{replicas[1].address}",
                    f"{replicas[1].address},{replicas[0].address}",
                    f"{replicas[0].address},{replicas[1].address}",
                ]
            )
        ]
        acked: dict[str, int] = {}
        try:
            for server in [*replicas, *followers]:
                server.start()
            delays = propagation(replicas, followers, args.propagation, acked)
            kills = failover(replicas, followers[0], args.failovers, "kill", acked)
            freezes = failover(replicas, followers[0], args.freezes, "freeze", acked)
            lost = lost_writes(replicas, followers, acked)
        finally:
            for server in [*followers, *replicas]:
                server.close()
    report(args, runs, baseline, delays, kills, freezes, lost, len(acked))
    return 0


def report(
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    baseline: list[list[float]],
    delays: list[list[float]],
    kills: list[float],
    freezes: list[float],
    lost: int,
    acked: int,
) -> None:
    rate = {r["label"]: r["per_second"] for r in runs}
    overall = summarise_ms([d for ds in delays for d in ds])
    sqlite = summarise_ms([d for ds in baseline for d in ds])
    kill_ms = summarise_ms(kills)
    freeze_ms = summarise_ms(freezes) if freezes else None
    propagation_ok = overall["p99"] <= GOAL_PROPAGATION_P99_MS
    failover_ok = max(kills) <= GOAL_FAILOVER_S
    rows = "\n".join(f"| {r['label']} | {r['per_second']:.0f} | {r['seconds']:.2f} |" for r in runs)
    per_follower = "\n".join(
        f"| follower {i + 1} | {s['p50']:.2f} | {s['p99']:.2f} | {s['mean']:.2f} |"
        for i, s in enumerate(summarise_ms(d) for d in delays)
    )
    freeze_line = (
        f"SIGSTOP of the watched replica ({len(freezes)} rounds, recovered by the heartbeat "
        f"timeout): median {freeze_ms['p50'] / 1e3:.2f} s, max {max(freezes):.2f} s.\n\n"
        if freeze_ms
        else ""
    )
    markdown = (
        f"PostgreSQL 15 (default settings, fsync on) and SQLite (WAL, synchronous=FULL) on the "
        f"same disk; `sidecar serve` processes on loopback.\n\n"
        f"**Registrations per second** ({args.registrations} RegisterModel calls with graded "
        "results for 144 items, acknowledged; `pg-Nr-Ww` is N replicas sharing the database "
        "and W concurrent writers spread over them):\n\n"
        "| run | registrations/s | seconds |\n|---|---|---|\n"
        f"{rows}\n\n"
        f"PostgreSQL / SQLite: {rate['pg-1r-1w'] / rate['sqlite-1w']:.2f}× with 1 writer, "
        f"{rate['pg-1r-4w'] / rate['sqlite-4w']:.2f}× with 4 writers (one replica), "
        f"{rate['pg-2r-4w'] / rate['sqlite-4w']:.2f}× with 4 writers on 2 replicas.\n\n"
        f"**Propagation** ({args.propagation} writes alternating between 2 replicas; delay from "
        "the acknowledgement until a Route restricted to the new model succeeds on each of 3 "
        "followers):\n\n"
        "| follower | p50 ms | p99 ms | mean ms |\n|---|---|---|---|\n"
        f"{per_follower}\n"
        f"| all | {overall['p50']:.2f} | {overall['p99']:.2f} | {overall['mean']:.2f} |\n"
        f"| SQLite leader, 3 followers (same run) | {sqlite['p50']:.2f} | {sqlite['p99']:.2f} "
        f"| {sqlite['mean']:.2f} |\n\n"
        f"Goal p99 ≤ {GOAL_PROPAGATION_P99_MS:.0f} ms: {verdict(propagation_ok)} "
        f"({overall['p99']:.2f} ms)\n\n"
        f"**Failover** (kill -9 of the replica a follower watches, then one write on the other "
        f"replica; time from the kill until the follower routes to it; {len(kills)} rounds): "
        f"median {kill_ms['p50']:.0f} ms, max {max(kills) * 1e3:.0f} ms.\n\n"
        f"Goal ≤ 2 s + the {HEARTBEAT_TIMEOUT_S:.0f} s heartbeat timeout = "
        f"{GOAL_FAILOVER_S:.0f} s: {verdict(failover_ok)} ({max(kills):.2f} s)\n\n"
        f"{freeze_line}"
        f"**Acknowledged writes lost**: {lost} of {acked} (after propagation, kills and "
        f"freezes, on both replicas and all 3 followers). Goal 0: {verdict(lost == 0)}"
    )
    record(
        "registry_replicas",
        {
            "throughput": runs,
            "propagation_ms": overall,
            "propagation_sqlite_leader_ms": sqlite,
            "failover_kill_s": kills,
            "failover_freeze_s": freezes,
            "acknowledged": acked,
            "lost": lost,
            "goal_pass": propagation_ok and failover_ok and lost == 0,
        },
        markdown,
    )


if __name__ == "__main__":
    raise SystemExit(main())
