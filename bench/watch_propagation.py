"""Watch propagation: time from a RegisterModel acknowledgement to Route seeing the model.

A real leader and N real follower processes on loopback. For each of R
registrations, one poller thread per follower sends Route requests restricted
to the new model (with a precomputed embedding, so polling does not load the
CPU with embedding work) until the follower answers instead of NOT_FOUND.
The delay is measured from the moment the leader's acknowledgement arrived.
Goal (issue 4): p99 <= 50 ms on loopback with 10 followers.

    python -m bench.watch_propagation [--followers 3] [--registrations 100] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from bench._common import add_time_limit, guarded, record, sidecar_process, summarise_ms, verdict
from sidecar._readiness import wait_until

GOAL_P99_MS = 50.0
K_STARTER = 12
TIME_LIMIT_S = 15 * 60


def wait_visible(
    router: router_pb2_grpc.RouterStub, name: str, embedding: list[float], since: float
) -> float:
    """Polls one follower until Route accepts ``name``; returns seconds since ``since``.

    Polls back to back (no sleep between calls): the delay is the measurement.
    NOT_FOUND and FAILED_PRECONDITION mean "not there yet"; any other error fails at once.
    """
    request = router_pb2.RouteRequest(candidate_models=[name], embedding=embedding)

    def visible() -> bool:
        try:
            router.Route(request, timeout=5)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return False
            raise RuntimeError(f"Route for {name} failed: {exc.code()}: {exc.details()}") from exc
        return True

    wait_until(visible, timeout=30, interval=0.0)
    return time.perf_counter() - since


def delays_on_all(
    pool: ThreadPoolExecutor,
    routers: Sequence[router_pb2_grpc.RouterStub],
    name: str,
    embedding: list[float],
    acknowledged: float,
) -> list[float]:
    """Polls every follower at once (one pool thread each); errors propagate."""
    return list(pool.map(lambda r: wait_visible(r, name, embedding, acknowledged), routers))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watch_propagation", description=__doc__)
    parser.add_argument("--followers", type=int, default=3)
    parser.add_argument("--registrations", type=int, default=100)
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    if args.followers < 1:
        parser.error("--followers must be at least 1")
    with guarded(args.time_limit, "bench.watch_propagation"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    embedding = np.random.default_rng(0).standard_normal(384).astype(np.float32).tolist()
    delays: list[list[float]] = [[] for _ in range(args.followers)]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        leader = stack.enter_context(sidecar_process(workdir, "leader", "--progress-interval", "1"))
        followers = [
            stack.enter_context(sidecar_process(workdir, f"follower{i}", "--follow", leader))
            for i in range(args.followers)
        ]
        channels = [stack.enter_context(grpc.insecure_channel(a)) for a in [leader, *followers]]
        registry = registry_pb2_grpc.RegistryStub(channels[0])
        routers = [router_pb2_grpc.RouterStub(c) for c in channels[1:]]
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=len(routers)))
        for i in range(args.registrations):
            name = f"bench-model-{i:04d}"
            request = registry_pb2.RegisterModelRequest(
                name=name,
                cost=1.0 + i,
                profile=registry_pb2.ErrorProfile(error_rates=[0.2] * K_STARTER),
            )
            registry.RegisterModel(request)
            acknowledged = time.perf_counter()

            for j, delay in enumerate(delays_on_all(pool, routers, name, embedding, acknowledged)):
                delays[j].append(delay)

    per_follower = [summarise_ms(d) for d in delays]
    overall = summarise_ms([d for ds in delays for d in ds])
    ok = overall["p99"] <= GOAL_P99_MS
    rows = "\n".join(
        f"| follower {i + 1} | {s['p50']:.2f} | {s['p99']:.2f} | {s['mean']:.2f} |"
        for i, s in enumerate(per_follower)
    )
    markdown = (
        f"{args.registrations} registrations, {args.followers} follower processes, all on "
        "loopback. Delay from the RegisterModel acknowledgement to a Route restricted to the "
        "new model succeeding on the follower.\n\n"
        "| follower | p50 ms | p99 ms | mean ms |\n|---|---|---|---|\n"
        f"{rows}\n"
        f"| all | {overall['p50']:.2f} | {overall['p99']:.2f} | {overall['mean']:.2f} |\n\n"
        f"Goal p99 ≤ {GOAL_P99_MS:.0f} ms: {verdict(ok)} ({overall['p99']:.2f} ms)"
    )
    record(
        f"watch_propagation_{args.followers}f",
        {"per_follower_ms": per_follower, "overall_ms": overall, "goal_pass": ok},
        markdown,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
