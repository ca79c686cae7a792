"""Route latency over gRPC against its two physical parts, measured side by side.

A real `sidecar serve` subprocess (the shipped starter clustering, 11 models
with synthetic profiles) answers Route from a single client. In the same run,
interleaved round by round so machine noise hits every series alike, we time
(a) the raw embedder in-process with the server's ONNX settings, tokenising
included, and (b) an empty unary RPC (health Check) to the same server.
Goal: Route p50 <= (a) p50 + (b) p50 + 0.15 ms.

Also in the same run: Route with a precomputed embedding (the server's work
without the embedder), the embedding-cache hit path on a second server
started with `--embedding-cache` (goal: p50 <= (b) p50 + 0.1 ms), and an
in-process stage breakdown of one Route: tokenise, embed, kernel, table
lookup, serialisation.

    python -m bench.route_latency [--rounds 20] [--per-round 50] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from bench._common import add_time_limit, guarded, record, sidecar_process, summarise_ms, verdict
from sidecar import Embedder, default_embedder_dir
from sidecar._server import starter_artifact_dir

GOAL_SLACK_MS = 0.15
CACHE_SLACK_MS = 0.10
N_MODELS = 11
TIME_LIMIT_S = 15 * 60
WORDS = [
    "please",
    "summarise",
    "explain",
    "compare",
    "the",
    "quarterly",
    "report",
    "budget",
    "python",
    "function",
    "error",
    "database",
    "query",
    "customer",
    "email",
    "translate",
    "french",
    "poem",
    "story",
    "recipe",
    "chicken",
    "physics",
    "energy",
    "contract",
    "clause",
    "risk",
    "market",
    "growth",
    "team",
    "meeting",
    "schedule",
    "travel",
    "hotel",
    "price",
    "invoice",
    "data",
    "table",
    "chart",
    "trend",
    "model",
    "accuracy",
    "test",
    "deploy",
    "server",
    "latency",
    "memory",
    "cache",
]


def prompts(n_words: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(n_words)) for _ in range(count)]


def register_synthetic_models(channel: grpc.Channel, seed: int = 0) -> None:
    """11 models with random per-item correctness on the starter validation set."""
    manifest = json.loads((starter_artifact_dir() / "clustering.json").read_text())
    item_ids = [i for i, _ in manifest["validation"]["items"]]
    rng = random.Random(seed)
    stub = registry_pb2_grpc.RegistryStub(channel)
    for m in range(N_MODELS):
        skill = rng.uniform(0.4, 0.9)
        stub.RegisterModel(
            registry_pb2.RegisterModelRequest(
                name=f"model-{m:02d}",
                cost=rng.uniform(0.1, 10.0),
                results=registry_pb2.ValidationResults(
                    results=[
                        registry_pb2.ValidationResult(item_id=i, score=float(rng.random() < skill))
                        for i in item_ids
                    ]
                ),
            )
        )


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def cycle(items: Sequence[str]) -> Callable[[], str]:
    state = {"i": 0}

    def next_item() -> str:
        state["i"] = (state["i"] + 1) % len(items)
        return items[state["i"]]

    return next_item


def route_call(
    router: router_pb2_grpc.RouterStub, next_prompt: Callable[[], str]
) -> Callable[[], object]:
    return lambda: router.Route(router_pb2.RouteRequest(prompt=next_prompt()))


def embed_call(embedder: Embedder, next_prompt: Callable[[], str]) -> Callable[[], object]:
    return lambda: embedder.embed(next_prompt())


def stage_breakdown(embedder: Embedder, repeat: int = 300) -> dict[str, float]:
    """Median µs of each step of one Route, run in-process with the server's own code."""
    from sidecar import ModelRecord, Query, RoutingTable, TableHolder
    from sidecar._clustering import load_clustering
    from sidecar._kernels import route
    from sidecar._router import Router
    from sidecar._wire import route_response

    clustering = load_clustering(starter_artifact_dir())
    rng = np.random.default_rng(0)
    models = [
        ModelRecord(
            name=f"model-{m:02d}",
            cost=float(m + 1),
            error_rates=rng.random(clustering.k),
            validation_counts=np.zeros(clustering.k, np.int64),
            overall_error=0.3,
            result_count=0,
            profile_source="results",
            clustering_version=clustering.version,
            description="",
            labels={},
            create_revision=m + 1,
            revision=m + 1,
            create_time=0.0,
            update_time=0.0,
        )
        for m in range(N_MODELS)
    ]
    table = RoutingTable.build(
        revision=1,
        clustering_version=clustering.version,
        embedder_fingerprint=clustering.embedder_fingerprint,
        centroids=clustering.centroids,
        models=models,
    )
    holder = TableHolder(table)
    router = Router(holder, embedder)
    prompt = prompts(20, 1, 6)[0]
    encoded = embedder.encode(prompt)
    vector = embedder.run(encoded.ids, encoded.mask)
    decision = router.route(Query(prompt=prompt))
    # One decision through the kernel Route uses, with its N = 1 buffers.
    x = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
    lams = np.full(1, 0.1)
    masks = table.all_candidates.reshape(1, -1)
    scores = np.empty((1, table.size), dtype=np.float32)
    clusters = np.empty(1, dtype=np.int64)
    chosen = np.empty(1, dtype=np.int64)
    names = ["model-03", "model-07"]
    steps: dict[str, Callable[[], object]] = {
        "tokenise": lambda: embedder.encode(prompt),
        "embed (onnxruntime)": lambda: embedder.run(encoded.ids, encoded.mask),
        "kernel (nearest centroid + argmin)": lambda: route(
            x, table.centroids, table.psi, table.costs, lams, masks, scores, clusters, chosen
        ),
        "table lookup (reference + candidate mask)": lambda: (
            holder.current.candidate_mask(names) if holder.current else None
        ),
        "serialisation (response + bytes)": lambda: route_response(decision).SerializeToString(),
        "whole Route in-process": lambda: router.route(Query(prompt=prompt)),
    }
    return {name: float(np.median(timed(fn, repeat))) * 1e6 for name, fn in steps.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.route_latency", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--per-round", type=int, default=50, help="calls per series per round")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    with guarded(args.time_limit, "bench.route_latency"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    embedder = Embedder.from_dir(default_embedder_dir(), threads=1)
    series: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        sidecar_process(Path(tmp), "latency") as address,
        sidecar_process(Path(tmp), "cached", "--embedding-cache", "1024") as cached_address,
        grpc.insecure_channel(address) as channel,
        grpc.insecure_channel(cached_address) as cached_channel,
    ):
        register_synthetic_models(channel)
        register_synthetic_models(cached_channel)
        router = router_pb2_grpc.RouterStub(channel)
        cached_router = router_pb2_grpc.RouterStub(cached_channel)
        health = health_pb2_grpc.HealthStub(channel)
        empty = health_pb2.HealthCheckRequest()
        cases = {20: cycle(prompts(20, 200, 1)), 200: cycle(prompts(200, 200, 2))}
        vectors = [embedder.embed(p).vector.tolist() for p in prompts(20, 50, 4)]
        with_vector = itertools.cycle([router_pb2.RouteRequest(embedding=v) for v in vectors])
        repeated = router_pb2.RouteRequest(prompt=prompts(20, 1, 5)[0])
        runs: dict[str, Callable[[], object]] = {
            "empty_rpc": lambda: health.Check(empty),
            "route_precomputed": lambda: router.Route(next(with_vector)),
            "route_cache_hit": lambda: cached_router.Route(repeated),
        }
        for words, next_prompt in cases.items():
            runs[f"route_{words}w"] = route_call(router, next_prompt)
            runs[f"embed_{words}w"] = embed_call(embedder, next_prompt)
        for fn in runs.values():  # warm every path before measuring
            timed(fn, 20)
        for _ in range(args.rounds):
            for name, fn in runs.items():
                series.setdefault(name, []).extend(timed(fn, args.per_round))

    stats = {name: summarise_ms(samples) for name, samples in series.items()}
    stages = stage_breakdown(embedder)
    rows = []
    goals = {}
    for words in (20, 200):
        route, embed, rpc = stats[f"route_{words}w"], stats[f"embed_{words}w"], stats["empty_rpc"]
        budget = embed["p50"] + rpc["p50"] + GOAL_SLACK_MS
        goals[f"{words}w"] = {"budget_ms": budget, "pass": route["p50"] <= budget}
        overhead = route["p50"] - embed["p50"] - rpc["p50"]
        rows.append(
            f"| {words} words | {route['p50']:.3f} | {route['p99']:.3f} | {route['p99.9']:.3f} "
            f"| {embed['p50']:.3f} | {rpc['p50']:.3f} | {overhead:+.3f} "
            f"| {verdict(route['p50'] <= budget)} (≤ {budget:.3f}) |"
        )
    rpc, hit, pre = stats["empty_rpc"], stats["route_cache_hit"], stats["route_precomputed"]
    cache_budget = rpc["p50"] + CACHE_SLACK_MS
    goals["cache_hit"] = {"budget_ms": cache_budget, "pass": hit["p50"] <= cache_budget}
    stage_rows = "\n".join(f"| {name} | {us:.1f} |" for name, us in stages.items())
    markdown = (
        f"{args.rounds} interleaved rounds × {args.per_round} calls per series, single client, "
        f"{N_MODELS} models, starter clustering (K=12), int8 MiniLM, 1 onnxruntime thread.\n\n"
        "| prompt | Route p50 ms | p99 | p99.9 | (a) embed p50 | (b) empty RPC p50 "
        "| overhead p50 | goal: Route p50 ≤ (a)+(b)+0.15 |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"- Route with a precomputed embedding (no embedder): p50 {pre['p50']:.3f} ms, "
        f"p99 {pre['p99']:.3f} ms, against the empty RPC's {rpc['p50']:.3f} ms.\n"
        f"- Embedding-cache hit (`--embedding-cache 1024`, repeated prompt): p50 "
        f"{hit['p50']:.3f} ms, p99 {hit['p99']:.3f} ms. Goal p50 ≤ (b) + 0.1 ms: "
        f"{verdict(hit['p50'] <= cache_budget)} (≤ {cache_budget:.3f})\n\n"
        "Stage breakdown of one 20-word Route, in-process medians (µs):\n\n"
        "| stage | µs |\n|---|---|\n" + stage_rows
    )
    record("route_latency", {"stats_ms": stats, "stages_us": stages, "goals": goals}, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
