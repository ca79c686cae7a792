"""Route throughput under concurrency, with dynamic micro-batching off and on.

Two real `sidecar serve` processes (one plain, one with `--batch-max-size`)
take turns, round by round, so machine noise hits both alike. Closed-loop
client threads (1, 8 and 32 callers) send distinct ~20-word prompts for a
fixed time each. Goals: with micro-batching, routes/s at 32 callers >= 1.5x
the unbatched figure, and p99 at 8 callers no worse than 2x unbatched p99.

    python -m bench.throughput [--seconds 4] [--rounds 2] [--quick] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from uniroute.v1 import router_pb2, router_pb2_grpc

from bench._common import add_time_limit, guarded, record, sidecar_process, summarise_ms, verdict
from bench.route_latency import prompts, register_synthetic_models

CALLERS = (1, 8, 32)
TIME_LIMIT_S = 15 * 60


def drive(
    address: str,
    callers: int,
    seconds: float,
    texts: Sequence[str],
    *,
    empty: bool = False,
    connections: int = 1,
    start_at: float | None = None,
) -> list[float]:
    """Closed loop: each caller sends its next prompt as soon as the previous answer lands.

    ``empty``: health Checks instead of Routes, the most calls/s the server's gRPC
    stack can answer at all with these callers on these cores. ``connections``:
    callers take turns over that many channels, each its own TCP connection (as
    many mesh proxies would hold; `serve --processes` spreads connections, not
    calls). ``start_at``: a wall-clock time to start at, shared by client processes.
    """
    latencies: list[list[float]] = [[] for _ in range(callers)]
    options = [("grpc.use_local_subchannel_pool", 1)] if connections > 1 else []
    with ExitStack() as stack:
        channels = [
            stack.enter_context(grpc.insecure_channel(address, options)) for _ in range(connections)
        ]
        for channel in channels:  # connect each before the clock starts
            grpc.channel_ready_future(channel).result(timeout=30)
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        stop_at = time.perf_counter() + seconds

        def caller(c: int) -> None:
            channel = channels[c % connections]
            stub = router_pb2_grpc.RouterStub(channel)
            check = health_pb2_grpc.HealthStub(channel).Check
            i = c * 9973
            while time.perf_counter() < stop_at:
                request = router_pb2.RouteRequest(prompt=texts[i % len(texts)])
                t0 = time.perf_counter()
                if empty:
                    check(health_pb2.HealthCheckRequest())
                else:
                    stub.Route(request)
                latencies[c].append(time.perf_counter() - t0)
                i += 1

        threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return [x for per in latencies for x in per]


def drive_from_processes(
    address: str,
    callers: int,
    seconds: float,
    texts: Sequence[str],
    *,
    processes: int,
    connections: int,
    empty: bool = False,
) -> list[float]:
    """``drive`` split over client processes (callers and connections shared out evenly).

    One Python client process tops out near one core's worth of calls (its
    callers share a GIL), so a client that must not be the bottleneck is
    several processes, started together at one wall-clock time.
    """
    context = multiprocessing.get_context("spawn")  # no fork of this process's gRPC threads
    start_at = time.time() + 5.0  # time enough for the interpreters to import and connect
    jobs = [
        (address, callers // processes, seconds, list(texts), empty,
         max(1, connections // processes), start_at)
        for _ in range(processes)
    ]  # fmt: skip
    with context.Pool(processes) as pool:
        parts = pool.starmap(_drive_job, jobs)
    return [x for part in parts for x in part]


def _drive_job(
    address: str,
    callers: int,
    seconds: float,
    texts: list[str],
    empty: bool,
    connections: int,
    start_at: float,
) -> list[float]:
    return drive(
        address, callers, seconds, texts, empty=empty, connections=connections, start_at=start_at
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per caller count per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-max-size", type=int, default=16)
    parser.add_argument("--batch-max-wait-ms", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    with guarded(args.time_limit, "bench.throughput"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    texts = prompts(20, 5000, 3)
    modes = {
        "unbatched": [],
        "batched": [
            "--batch-max-size",
            str(args.batch_max_size),
            "--batch-max-wait-ms",
            str(args.batch_max_wait_ms),
        ],
    }
    samples: dict[tuple[str, int], list[float]] = {}
    elapsed: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        addresses = {
            mode: stack.enter_context(sidecar_process(Path(tmp), mode, *flags))
            for mode, flags in modes.items()
        }
        for address in addresses.values():
            with grpc.insecure_channel(address) as channel:
                register_synthetic_models(channel)
            drive(address, 4, 0.5, texts)  # warm both servers' thread pools
        for _ in range(args.rounds):
            for callers in CALLERS:
                for mode, address in addresses.items():
                    got = drive(address, callers, args.seconds, texts)
                    samples.setdefault((mode, callers), []).extend(got)
                    elapsed[(mode, callers)] = elapsed.get((mode, callers), 0) + args.seconds

    stats = {
        f"{mode}_{callers}": {
            **summarise_ms(samples[(mode, callers)]),
            "routes_per_s": len(samples[(mode, callers)]) / elapsed[(mode, callers)],
        }
        for mode in modes
        for callers in CALLERS
    }
    rows = []
    for callers in CALLERS:
        u, b = stats[f"unbatched_{callers}"], stats[f"batched_{callers}"]
        rows.append(
            f"| {callers} | {u['routes_per_s']:.0f} | {b['routes_per_s']:.0f} | "
            f"{b['routes_per_s'] / u['routes_per_s']:.2f}× | {u['p50']:.2f} / {u['p99']:.2f} | "
            f"{b['p50']:.2f} / {b['p99']:.2f} |"
        )
    speedup = stats["batched_32"]["routes_per_s"] / stats["unbatched_32"]["routes_per_s"]
    p99_ratio = stats["batched_8"]["p99"] / stats["unbatched_8"]["p99"]
    goals = {"throughput_32_ge_1.5x": speedup >= 1.5, "p99_8_le_2x": p99_ratio <= 2.0}
    markdown = (
        f"{args.rounds} round(s) × {args.seconds:g} s per caller count and mode, closed-loop "
        f"client threads in one process on the same 2 cores as the server, distinct 20-word "
        f"prompts, 11 models. Batched server: `--batch-max-size {args.batch_max_size} "
        f"--batch-max-wait-ms {args.batch_max_wait_ms:g}`.\n\n"
        "| callers | unbatched routes/s | batched routes/s | ratio | unbatched p50 / p99 ms "
        "| batched p50 / p99 ms |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"- Goal: batched routes/s at 32 callers ≥ 1.5× unbatched: "
        f"{verdict(goals['throughput_32_ge_1.5x'])} ({speedup:.2f}×)\n"
        f"- Goal: batched p99 at 8 callers ≤ 2× unbatched p99: "
        f"{verdict(goals['p99_8_le_2x'])} ({p99_ratio:.2f}×)"
    )
    record("throughput", {"stats": stats, "goals": goals}, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
