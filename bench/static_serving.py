"""Route over gRPC with the static embedder: latency against an empty RPC, threading models,
throughput against int8 MiniLM, and peak memory.

Three real servers in one run, each with 11 synthetic models on its starter
clustering:

* ``static``: `sidecar serve --embedder var/embedder-static` (the product:
  gRPC's sync server, each call handed to a worker thread);
* ``static-aio``: the same sidecar built by ``build()`` but served by
  ``grpc.aio`` with Route answered in the event-loop thread, no hand-off
  (bench/_aio_server.py);
* ``minilm``: `sidecar serve` with the default int8 MiniLM.

* ``static ×2`` and ``minilm ×2``: the same with ``--processes 2``, two
  serving processes sharing one port (throughput only).

Latency: one client, Route at 20 and 200 words and an empty RPC (health Check)
to the same server, interleaved round by round. Goal: static Route p50 <=
empty-RPC p50 + 0.1 ms at 20 and 200 words. Throughput: 32 closed-loop callers
in 2 client processes over 8 connections, on the 2 cores the servers use too;
the best static server against the best MiniLM server; goal >= 10x. Memory:
peak RSS (VmHWM) of the serving static sidecar after the load; goal <= 150
MB, reported next to the floor that Numba itself sets (fresh interpreters
importing numpy, then numba, then loading one cached kernel).

    python -m bench.static_serving [--rounds 10] [--per-round 100] [--seconds 5]
                                   [--throughput-rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from uniroute.v1 import router_pb2_grpc

from bench._common import (
    add_time_limit,
    guarded,
    record,
    sidecar_process,
    spawn,
    stop,
    summarise_ms,
    verdict,
)
from bench.route_latency import cycle, prompts, register_synthetic_models, route_call, timed
from bench.startup import status_kb
from bench.throughput import drive_from_processes
from sidecar._export_static import default_static_dir
from sidecar._readiness import FAST_RECONNECT, free_port, wait_serving

SIZES = (20, 200)
SLACK_MS = 0.1
GOAL_THROUGHPUT = 10.0
GOAL_RSS_MB = 150.0
CALLERS = 32
CLIENT_PROCESSES = 2  # one Python client process tops out near one core's worth of calls
CONNECTIONS = 8  # `serve --processes` spreads connections; many proxies hold several
GROUP = 2  # `serve --processes 2`: one serving process per core
TIME_LIMIT_S = 20 * 60


@contextmanager
def aio_process(workdir: Path, name: str) -> Iterator[tuple[str, int]]:
    address = f"127.0.0.1:{free_port()}"
    log_path = workdir / f"{name}.log"
    db, embedder = str(workdir / f"{name}.db"), str(default_static_dir())
    command = [sys.executable, "-m", "bench._aio_server", "--listen", address,
               "--db", db, "--embedder", embedder]  # fmt: skip
    with log_path.open("wb") as log:
        process = spawn(command, log=log, name=name)
        try:
            with grpc.insecure_channel(address, options=FAST_RECONNECT) as channel:
                wait_serving(channel, timeout=120, process=process, log=log_path, name=name)
            yield address, process.pid
        finally:
            stop(process)


def wait_for_line(log: Path, text: str, timeout: float = 300.0) -> None:
    """A group's process 0 prints its line once every sibling is SERVING."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: no {text!r} within {timeout:.0f} s")
        time.sleep(0.2)


def pid_of(address: str, workdir: Path, name: str) -> int:
    """The server's pid, from /proc: the process listening with our --db."""
    db = str(workdir / f"{name}.db")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if db.encode() in cmdline and address.encode() in cmdline:
                return int(entry.name)
    raise RuntimeError(f"no process serves {address}")


def latency(
    servers: dict[str, str], rounds: int, per_round: int
) -> dict[str, dict[str, dict[str, float]]]:
    texts = {n: prompts(n, 500, seed=n) for n in SIZES}
    samples: dict[str, dict[str, list[float]]] = {s: {} for s in servers}
    with ExitStack() as stack:
        calls: dict[str, dict[str, Callable[[], object]]] = {}
        for name, address in servers.items():
            channel = stack.enter_context(grpc.insecure_channel(address))
            router = router_pb2_grpc.RouterStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest()
            calls[name] = {
                "empty": functools.partial(health.Check, check),
                **{f"route@{n}": route_call(router, cycle(texts[n])) for n in SIZES},
            }
            for fn in calls[name].values():  # warm every path
                timed(fn, 20)
        for _ in range(rounds):
            for name, series in calls.items():
                for label, fn in series.items():
                    samples[name].setdefault(label, []).extend(timed(fn, per_round))
    return {s: {label: summarise_ms(v) for label, v in d.items()} for s, d in samples.items()}


class _Context:
    """Enough of a ServicerContext for a successful Route called in process."""

    def invocation_metadata(self) -> tuple[()]:
        return ()


def in_process(work: Path, per: int) -> dict[str, dict[str, float]]:
    """The server's own work per Route, without gRPC: the Router, the servicer, the response.

    Built by the real ``build()`` on the static embedder, 11 models registered through
    the real RegistryServicer; each stage timed on the same prompts.
    """
    from uniroute.v1 import registry_pb2

    from sidecar._server import ServerConfig, build
    from sidecar._servicers import RegistryServicer, RouterServicer

    sidecar = build(ServerConfig(listen="127.0.0.1:0", db_path=work / "inproc.db",
                                 embedder_dir=default_static_dir()))  # fmt: skip
    try:
        sidecar.router.warm_up()
        registry = RegistryServicer(
            sidecar.registry,
            tables=sidecar.tables,
            embedder_fingerprint=sidecar.router.embedder.fingerprint,
            hub=sidecar.hub,
            follower=None,
            metrics=sidecar.metrics,
        )
        rng = np.random.default_rng(0)
        ctx: Any = _Context()
        k = sidecar.tables.current.k if sidecar.tables.current else 1
        for m in range(11):
            registry.RegisterModel(
                registry_pb2.RegisterModelRequest(
                    name=f"model-{m:02d}",
                    cost=float(rng.uniform(0.1, 10.0)),
                    profile=registry_pb2.ErrorProfile(
                        error_rates=rng.uniform(0.05, 0.6, k).tolist()
                    ),
                ),
                ctx,
            )
        servicer = RouterServicer(sidecar.router, sidecar.metrics)
        out = {str(n): stage_times(sidecar, servicer, n, per) for n in SIZES}
        return out
    finally:
        sidecar.registry.close()


def stage_times(sidecar: Any, servicer: Any, words: int, per: int) -> dict[str, float]:
    from uniroute.v1 import router_pb2

    from sidecar import Query
    from sidecar._wire import route_query

    texts = prompts(words, per, seed=50 + words)
    requests = [router_pb2.RouteRequest(prompt=t) for t in texts]
    decision = sidecar.router.route(Query(prompt=texts[0]))
    embedder, context = sidecar.router.embedder, _Context()
    stages: dict[str, Callable[[int], object]] = {
        "tokenise": lambda i: embedder.tokens(texts[i]),
        "route_query": lambda i: route_query(requests[i]),
        "Router.route": lambda i: sidecar.router.route(Query(prompt=texts[i])),
        "RouteResponses.response": lambda i: servicer.responses.response(decision),
        "RouterServicer.Route": lambda i: servicer.Route(requests[i], context),
    }
    out = {}
    for name, fn in stages.items():
        fn(0)
        samples = []
        for i in range(per):
            t0 = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - t0)
        out[name] = float(np.median(samples) * 1e6)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.static_serving", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    parser.add_argument(
        "--throughput-rounds", type=int, default=3, help="interleaved throughput runs per server"
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 40, one 2 s run each")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round, args.seconds, args.throughput_rounds = 3, 40, 2.0, 1
    with guarded(args.time_limit, "bench.static_serving"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    static_dir = str(default_static_dir())
    with tempfile.TemporaryDirectory(prefix="bench-static-serving-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        metrics_address = f"127.0.0.1:{free_port()}"
        static_args = ("--embedder", static_dir, "--metrics-listen", metrics_address)
        static = stack.enter_context(sidecar_process(work, "static", *static_args))
        aio, aio_pid = stack.enter_context(aio_process(work, "static-aio"))
        minilm = stack.enter_context(sidecar_process(work, "minilm"))
        group = ("--processes", str(GROUP))
        groups = {
            f"static ×{GROUP}": stack.enter_context(
                sidecar_process(work, "static-group", "--embedder", static_dir, *group)
            ),
            f"minilm ×{GROUP}": stack.enter_context(sidecar_process(work, "minilm-group", *group)),
        }
        for name in ("static-group", "minilm-group"):
            wait_for_line(work / f"{name}.log", f"process 0 of {GROUP}")
        for address in (static, aio, minilm, *groups.values()):
            with grpc.insecure_channel(address) as channel:
                register_synthetic_models(channel)
        pids = {"static": pid_of(static, work, "static"), "static-aio": aio_pid,
                "minilm": pid_of(minilm, work, "minilm")}  # fmt: skip
        before = stage_seconds(metrics_address)
        lat = latency({"static": static, "static-aio": aio}, args.rounds, args.per_round)
        in_server = stage_means_us(before, stage_seconds(metrics_address))
        texts = prompts(20, 2000, seed=7)
        servers = {"static": static, "static-aio": aio, "minilm": minilm, **groups}
        empties = {f"{name}, empty RPCs": groups.get(name, static)
                   for name in ("static", f"static ×{GROUP}")}  # fmt: skip
        done: dict[str, list[float]] = {}
        for _ in range(args.throughput_rounds):  # interleaved: drift hits every server alike
            for name, address in [*servers.items(), *empties.items()]:
                done.setdefault(name, []).extend(
                    drive_from_processes(address, CALLERS, args.seconds, texts,
                                         processes=CLIENT_PROCESSES, connections=CONNECTIONS,
                                         empty=name in empties)
                )  # fmt: skip
        elapsed = args.seconds * args.throughput_rounds
        throughput = {name: {"routes": len(d), "per_s": len(d) / elapsed, **summarise_ms(d)}
                      for name, d in done.items()}  # fmt: skip
        memory = {name: status_kb(pid) for name, pid in pids.items()}
        breakdown = in_process(work, args.per_round * 5)
    floor = memory_floor()
    markdown, data = report(lat, throughput, memory, breakdown, args, floor, in_server)
    record("static_serving", data, markdown)
    return 0


def stage_seconds(metrics_address: str) -> dict[str, tuple[float, float]]:
    """The static sidecar's own Route stage histograms: stage -> (sum s, count)."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "uniroute_route_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if sample.name.endswith("_sum"):
                out.setdefault(stage, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                out.setdefault(stage, [0.0, 0.0])[1] = sample.value
    return {stage: (v[0], v[1]) for stage, v in out.items()}


def stage_means_us(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Mean µs per Route of each stage between two scrapes (the latency phase's Routes)."""
    means = {}
    for stage, (total, count) in after.items():
        was_total, was_count = before.get(stage, (0.0, 0.0))
        if count > was_count:
            means[stage] = (total - was_total) / (count - was_count) * 1e6
    return means


# What a process holds before any sidecar data: each probe runs in a fresh
# interpreter and reports its own peak RSS (VmHWM), in kB.
FLOOR_PROBES = {
    "python + numpy": "import numpy",
    "+ numba imported": "import numpy, numba",
    "+ one Numba kernel loaded from the cache": ("import sidecar._kernels as k; k.warm_up()"),
    "+ grpc, protobuf, tokenizers, the sidecar's modules": (
        "import sidecar._server, sidecar._static_embedder, sidecar._kernels as k; k.warm_up()"
    ),
}


def memory_floor() -> dict[str, int]:
    """Peak RSS (kB) of fresh interpreters that import progressively more of the stack."""
    read = (
        "; import pathlib; print([l.split()[1] for l in pathlib.Path('/proc/self/status')"
        ".read_text().splitlines() if l.startswith('VmHWM')][0])"
    )
    return {
        name: int(subprocess.run([sys.executable, "-c", code + read], check=True,
                                 capture_output=True, text=True).stdout.split()[-1])
        for name, code in FLOOR_PROBES.items()
    }  # fmt: skip


def report(
    lat: dict[str, Any],
    throughput: dict[str, Any],
    memory: dict[str, Any],
    breakdown: dict[str, dict[str, float]],
    args: Any,
    floor: dict[str, int],
    in_server: dict[str, float],
) -> tuple[str, dict[str, Any]]:
    goals: dict[str, Any] = {}
    lines = [
        f"{args.rounds} rounds x {args.per_round} calls per series, one client, interleaved; "
        "prompts of random words (bench/route_latency.py's); 11 models on each embedder's "
        "starter clustering (K = 12). p50 (p90) in ms.",
        "",
        "| server | empty RPC | "
        + " | ".join(f"Route, {n} words" for n in SIZES)
        + " | "
        + " | ".join(f"Route − empty, {n} words" for n in SIZES)
        + " |",
        "|---|---|" + "---|" * (2 * len(SIZES)),
    ]
    for name, series in lat.items():
        empty = series["empty"]["p50"]
        cells = [f"{series[f'route@{n}']['p50']:.3f} ({series[f'route@{n}']['p90']:.3f})"
                 for n in SIZES]  # fmt: skip
        over = [series[f"route@{n}"]["p50"] - empty for n in SIZES]
        lines.append(
            f"| {name} | {empty:.3f} ({series['empty']['p90']:.3f}) | "
            + " | ".join(cells)
            + " | "
            + " | ".join(f"{o:+.3f}" for o in over)
            + " |"
        )
        for n, o in zip(SIZES, over, strict=True):
            goals[f"{name}_route_{n}"] = {"over_empty_ms": o, "pass": o <= SLACK_MS}
    statics = [name for name in throughput if name.startswith("static") and "empty" not in name]
    minilms = [name for name in throughput if name.startswith("minilm")]
    best = max(statics, key=lambda s: throughput[s]["per_s"])
    best_minilm = max(minilms, key=lambda s: throughput[s]["per_s"])
    ratio = throughput[best]["per_s"] / throughput[best_minilm]["per_s"]
    goals["throughput_ratio"] = {"ratio": ratio, "best_static": best, "best_minilm": best_minilm,
                                 "pass": ratio >= GOAL_THROUGHPUT}  # fmt: skip
    rss_mb = memory["static"]["VmHWM"] * 1024 / 1e6
    goals["static_peak_rss_mb"] = {"mb": rss_mb, "pass": rss_mb <= GOAL_RSS_MB}
    stages = list(next(iter(breakdown.values())))
    lines += [
        "",
        "The server's own work per Route, in process without gRPC (p50 µs; the static "
        "sidecar built by `build()`, 11 models): where the time over an empty RPC goes.",
        "",
        "| words | " + " | ".join(stages) + " |",
        "|---|" + "---|" * len(stages),
    ]
    for words, row in breakdown.items():
        lines.append(f"| {words} | " + " | ".join(f"{row[s]:.1f}" for s in stages) + " |")
    lines += [
        "",
        "The same stages inside the serving `static` sidecar during the latency runs above "
        "(its own `uniroute_route_stage_seconds`, mean µs per Route, 20 and 200 words "
        "together): "
        + ", ".join(f"{stage} {us:.1f}" for stage, us in in_server.items())
        + ". The code is the same as in the loop above; between two requests the server's "
        "and the client's other work leave the CPU caches cold for it.",
    ]
    lines += [
        "",
        f"Throughput, {CALLERS} closed-loop callers, {args.throughput_rounds} interleaved "
        f"run(s) of {args.seconds:g} s per server, in "
        f"{CLIENT_PROCESSES} client processes over {CONNECTIONS} connections (the clients "
        f"share the 2 cores with the servers). `×{GROUP}` is `sidecar serve --processes "
        f"{GROUP}`: {GROUP} serving processes on one port, which the kernel gives "
        "connections in turn. The `empty RPCs` rows send health Checks instead: the most "
        "calls per second that server's gRPC stack answers with these callers on these "
        "cores, whatever the handler does.",
        "",
        "| server | Routes/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name, t in throughput.items():
        lines.append(f"| {name} | {t['per_s']:.0f} | {t['p50']:.2f} | {t['p99']:.2f} |")
    lines += [
        "",
        "Peak RSS (VmHWM) after the load, MB: "
        + ", ".join(f"{n} {m['VmHWM'] * 1024 / 1e6:.0f}" for n, m in memory.items())
        + ". Of the static sidecar's resident memory at the end, "
        f"{memory['static'].get('RssAnon', 0) * 1024 / 1e6:.0f} MB is its own (anonymous) and "
        f"{memory['static'].get('RssFile', 0) * 1024 / 1e6:.0f} MB is mapped library files "
        "(libLLVM, numpy, scipy, grpc), which every process on the machine that maps the same "
        "files shares.",
        "",
        "Where a static sidecar's memory goes: the peak RSS of fresh interpreters that "
        "import progressively more of the stack, before any table, tokenizer or request "
        "(MB):",
        "",
        "| process | peak RSS |",
        "|---|---|",
        *(f"| {name} | {kb * 1024 / 1e6:.0f} |" for name, kb in floor.items()),
        "",
        "Goals:",
        "",
    ]
    for name in lat:
        for n in SIZES:
            g = goals[f"{name}_route_{n}"]
            lines.append(
                f"- {verdict(g['pass'])}: {name} Route p50 − empty RPC p50 at {n} words is "
                f"{g['over_empty_ms']:+.3f} ms (goal ≤ +{SLACK_MS} ms)"
            )
    lines += [
        f"- {verdict(goals['throughput_ratio']['pass'])}: static / int8 MiniLM Routes/s with "
        f"{CALLERS} callers, each at its best, is {ratio:.1f}x ({best} against {best_minilm}; "
        f"goal ≥ {GOAL_THROUGHPUT:.0f}x; one static process against one MiniLM process "
        f"{throughput['static']['per_s'] / throughput['minilm']['per_s']:.1f}x)",
        f"- {verdict(goals['static_peak_rss_mb']['pass'])}: peak RSS of the serving static "
        f"sidecar {rss_mb:.0f} MB (goal ≤ {GOAL_RSS_MB:.0f} MB; a fresh interpreter that "
        f"loads one cached Numba kernel peaks at "
        f"{floor['+ one Numba kernel loaded from the cache'] * 1024 / 1e6:.0f} MB)",
    ]
    data = {
        "latency_ms": lat,
        "throughput": throughput,
        "memory_kb": memory,
        "memory_floor_kb": floor,
        "in_server_stage_us": in_server,
        "in_process_us": breakdown,
        "goals": goals,
    }
    return "\n".join(lines), data


if __name__ == "__main__":
    raise SystemExit(main())
