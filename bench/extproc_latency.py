"""What the sidecar adds as Envoy's external processor, measured against Envoy alone.

One chat completion (`"model": "auto"`) through a real Envoy to a stand-in
upstream LLM (a subprocess on loopback), two ways in the same run: through an
Envoy whose ext_proc filter asks a real `sidecar serve` (starter clustering,
11 models) to route and rewrite it, and through a second Envoy without the
filter (the request goes straight to the same upstream). Interleaved round by
round, with the sidecar's own Route over gRPC for the same prompts as the
third series, for 20- and 200-word prompts.

Goal: the processor adds at most the sidecar's Route p50 + 0.3 ms, i.e.
p50(with) − p50(without) ≤ p50(Route) + 0.3 ms.

    python -m bench.extproc_latency [--rounds 10] [--per-round 30] [--time-limit 600]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import grpc
from uniroute.v1 import router_pb2, router_pb2_grpc

from bench._common import (
    add_time_limit,
    guarded,
    record,
    sidecar_process,
    spawn,
    summarise_ms,
    verdict,
)
from bench.route_latency import N_MODELS, cycle, prompts, register_synthetic_models, timed
from sidecar._envoy_config import Upstream, envoy_config
from sidecar._readiness import free_port, wait_until
from tools.mesh.envoy import envoy_command, wait_ready

GOAL_SLACK_MS = 0.3
TIME_LIMIT_S = 10 * 60
SIZES = (20, 200)


def start_upstream(workdir: Path) -> str:
    """The stand-in LLM in its own process, so it does not share this client's GIL."""
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "tools.mesh.upstream", "--port", address.split(":")[1]]
    log = (workdir / "upstream.log").open("wb")
    spawn([*command, "--model", "standin"], log=log, name="upstream")

    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", int(address.split(":")[1])), timeout=1):
            return True

    wait_until(lambda: _quietly(accepts), timeout=30)
    return address


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except OSError:
        return False


def start_envoy(workdir: Path, name: str, upstream: str, sidecar: str, processor: bool) -> str:
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = workdir / f"{name}.yaml"
    models = [Upstream(f"model-{m:02d}", upstream) for m in range(N_MODELS)]
    config.write_text(
        envoy_config(
            models,
            default=upstream,
            sidecar=sidecar,
            listen=listen,
            admin=admin,
            processor=processor,
        )
    )
    log_path = workdir / f"{name}.log"
    process = spawn(envoy_command(config), log=log_path.open("wb"), name=name)
    wait_ready(admin, process, log=log_path)
    return listen


class Client:
    """One keep-alive HTTP/1.1 connection, as an application's HTTP client would hold."""

    def __init__(self, address: str, expect_routed: bool) -> None:
        host, port = address.split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.expect_routed = expect_routed

    def chat(self, prompt: str) -> None:
        body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]})
        self.connection.request(
            "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
        )
        reply = self.connection.getresponse()
        reply.read()
        routed = reply.getheader("x-uniroute-model")
        if reply.status != 200 or (routed is not None) != self.expect_routed:
            raise RuntimeError(f"unexpected answer: {reply.status}, x-uniroute-model={routed}")


def _call(send: Callable[[str], None], next_prompt: Callable[[], str]) -> None:
    send(next_prompt())


def _route(router: router_pb2_grpc.RouterStub, next_prompt: Callable[[], str]) -> object:
    return router.Route(router_pb2.RouteRequest(prompt=next_prompt()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extproc_latency", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--per-round", type=int, default=30, help="calls per series per round")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    with guarded(args.time_limit, "bench.extproc_latency"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    series: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        sidecar_process(Path(tmp), "sidecar") as sidecar,
        grpc.insecure_channel(sidecar) as channel,
    ):
        workdir = Path(tmp)
        register_synthetic_models(channel)
        upstream = start_upstream(workdir)
        with_processor = Client(
            start_envoy(workdir, "envoy-ext-proc", upstream, sidecar, True), True
        )
        alone = Client(start_envoy(workdir, "envoy-alone", upstream, sidecar, False), False)
        router = router_pb2_grpc.RouterStub(channel)
        runs: dict[str, Callable[[], object]] = {}
        for words in SIZES:
            next_prompt = cycle(prompts(words, 200, words))
            runs[f"with_{words}w"] = partial(_call, with_processor.chat, next_prompt)
            runs[f"alone_{words}w"] = partial(_call, alone.chat, next_prompt)
            runs[f"route_{words}w"] = partial(_route, router, next_prompt)
        for fn in runs.values():  # warm every path: connections, kernels, Envoy's pools
            timed(fn, 20)
        order = list(runs)
        rng = random.Random(0)
        started = time.monotonic()
        for _ in range(args.rounds):
            rng.shuffle(order)  # no series always runs right after another
            for name in order:
                series.setdefault(name, []).extend(timed(runs[name], args.per_round))
        seconds = time.monotonic() - started

    stats = {name: summarise_ms(samples) for name, samples in series.items()}
    rows, goals = [], {}
    for words in SIZES:
        with_, alone_, route = (stats[f"{k}_{words}w"] for k in ("with", "alone", "route"))
        added = with_["p50"] - alone_["p50"]
        budget = route["p50"] + GOAL_SLACK_MS
        goals[f"{words}w"] = {"added_ms": added, "budget_ms": budget, "pass": added <= budget}
        rows.append(
            f"| {words} words | {with_['p50']:.3f} | {with_['p99']:.3f} | {alone_['p50']:.3f} "
            f"| {alone_['p99']:.3f} | {added:+.3f} | {route['p50']:.3f} | {route['p99']:.3f} "
            f"| {verdict(added <= budget)} (≤ {budget:.3f}) |"
        )
    markdown = (
        f"{args.rounds} interleaved rounds × {args.per_round} chat completions per series "
        f"({seconds:.0f} s), one keep-alive client, Envoy 1.40 (`--concurrency 1`) to a "
        f"stand-in upstream; {N_MODELS} models, starter clustering (K=12), int8 MiniLM.\n\n"
        "| prompt | with processor p50 ms | p99 | Envoy alone p50 | p99 | added p50 "
        "| Route p50 | Route p99 | goal: added ≤ Route p50 + 0.3 |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    record("extproc_latency", {"stats_ms": stats, "goals": goals}, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
