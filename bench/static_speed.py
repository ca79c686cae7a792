"""The static embedder in process: tokenising, and one kernel call from token ids to the model.

Per prompt size (20, 200 and 2,000 words), in rounds of fresh random prompts
(words drawn from the shipped starter prompts, punctuation included), under
two protocols: steady state (each step over a round's prompts back to back,
the step order rotating round by round, as in a server that only routes; the
goals are judged on it, as the issue's reference numbers were measured) and
cold (the steps alternate prompt by prompt, so each call finds its tables
evicted by the others; reported as the worst case):

* ``tokenizers``: the HF tokenizer's encode (no special tokens), the reference;
* ``wordpiece``: the sidecar's Numba WordPiece (``StaticEmbedder.tokens``);
* ``kernel``: ``route_tokens`` from the ids to the chosen model (embedding,
  nearest of the static starter's 12 centroids, argmin over 11 models), one call;
  ``kernel, rows cached`` is the same call again at once, on the same prompt, its
  table rows now in the CPU cache;
* ``tokenise+kernel``: what Route does in process, allocations included.

Goals (issue 10): kernel <= 5 µs at 20 words and <= 20 µs at 200; tokenise+kernel
<= 50 µs at 20 words and <= 100 µs at 200. 2,000 words is reported.

The ids are also checked against ``tokenizers`` on every RouterBench prompt
(train and test, when the data is there: --data or ROUTERBENCH_DIR).

    python -m bench.static_speed [--rounds 5] [--per-round 200] [--data DIR] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import add_time_limit, guarded, record, verdict
from bench.routerbench import data_dir, read_rows
from sidecar._clustering import load_clustering
from sidecar._export_static import default_static_dir
from sidecar._server import starter_artifact_dir
from sidecar._static_embedder import StaticEmbedder
from sidecar._table import RoutingTable

SIZES = (20, 200, 2000)
GOALS_US = {("kernel", 20): 5.0, ("kernel", 200): 20.0}
GOALS_US.update({("tokenise+kernel", 20): 50.0, ("tokenise+kernel", 200): 100.0})
N_MODELS = 11
TIME_LIMIT_S = 15 * 60
SERIES = ("tokenizers", "wordpiece", "kernel", "kernel, rows cached", "tokenise+kernel")
UNITS = [("tokenizers",), ("wordpiece",), ("kernel", "kernel, rows cached"), ("tokenise+kernel",)]


def vocabulary() -> list[str]:
    path = starter_artifact_dir() / "train.jsonl"
    words = [
        w for line in path.read_text().splitlines() for w in json.loads(line)["prompt"].split()
    ]
    return sorted(set(words))


def routing_table(embedder: StaticEmbedder) -> RoutingTable:
    clustering = load_clustering(starter_artifact_dir(embedder.fingerprint))
    rng = np.random.default_rng(0)
    names = tuple(f"model-{m:02d}" for m in range(N_MODELS))
    return RoutingTable(
        revision=1,
        clustering_version=clustering.version,
        embedder_fingerprint=embedder.fingerprint,
        centroids=np.ascontiguousarray(clustering.centroids, dtype=np.float32),
        psi=rng.uniform(0.05, 0.6, (N_MODELS, clustering.k)).astype(np.float32),
        costs=rng.uniform(0.1, 10.0, N_MODELS).astype(np.float32),
        names=names,
        index={n: i for i, n in enumerate(names)},
        all_candidates=np.ones(N_MODELS, dtype=np.bool_),
    )


def series(embedder: StaticEmbedder, table: RoutingTable) -> dict[str, Callable[[str], object]]:
    tokenizer = embedder.wordpiece.tokenizer
    lams, masks = np.zeros(1), np.ones((1, table.size), dtype=np.bool_)
    X = np.empty((1, embedder.dim), dtype=np.float32)
    scores = np.empty((1, table.size), dtype=np.float32)
    clusters, chosen = np.empty(1, dtype=np.int64), np.empty(1, dtype=np.int64)
    prepared: dict[str, tuple[Any, Any]] = {}

    def kernel(prompt: str) -> object:
        ids, spans = prepared[prompt]
        embedder.route_tokens(ids, spans, table, lams, masks, X, scores, clusters, chosen)
        return chosen[0]

    def end_to_end(prompt: str) -> object:
        ids = embedder.tokens(prompt)
        spans = np.array([[0, ids.size]], dtype=np.int64)
        x = np.empty((1, embedder.dim), dtype=np.float32)
        s = np.empty((1, table.size), dtype=np.float32)
        c, m = np.empty(1, dtype=np.int64), np.empty(1, dtype=np.int64)
        embedder.route_tokens(ids, spans, table, lams, masks, x, s, c, m)
        return m[0]

    def prepare(prompt: str) -> None:
        ids = embedder.tokens(prompt)
        prepared[prompt] = (ids, np.array([[0, ids.size]], dtype=np.int64))

    return {
        "prepare": prepare,
        "tokenizers": lambda p: tokenizer.encode(p, add_special_tokens=False),
        "wordpiece": embedder.tokens,
        "kernel": kernel,
        "kernel, rows cached": kernel,  # timed right after "kernel" on the same prompt
        "tokenise+kernel": end_to_end,
    }


def measure(
    fns: dict[str, Callable[[str], object]],
    words: Sequence[str],
    size: int,
    rounds: int,
    per: int,
    *,
    interleaved: bool,
) -> dict[str, dict[str, float]]:
    """p50/p90/mean per series over ``rounds`` x ``per`` fresh prompts of ``size`` words.

    Steady state (``interleaved=False``): each unit of series runs over the whole
    round's prompts before the next unit starts (the unit order rotates round by
    round), as a server that only routes runs one Route after another. Cold
    (``interleaved=True``): the units alternate prompt by prompt, so each call
    follows the others' work, `tokenizers` included, and finds its tables evicted.
    """
    samples: dict[str, list[float]] = {s: [] for s in SERIES}

    def timed(unit: Sequence[str], prompt: str) -> None:
        for name in unit:  # "rows cached" always follows "kernel" on the same prompt
            t0 = time.perf_counter()
            fns[name](prompt)
            samples[name].append(time.perf_counter() - t0)

    for r in range(rounds):
        rng = random.Random(1000 * size + r)
        batch = [" ".join(rng.choice(words) for _ in range(size)) for _ in range(per)]
        for prompt in batch:
            fns["prepare"](prompt)
        for name in SERIES:  # warm every path on this round's first prompt
            fns[name](batch[0])
        if interleaved:
            for i, prompt in enumerate(batch):
                for unit in UNITS[i % len(UNITS) :] + UNITS[: i % len(UNITS)]:
                    timed(unit, prompt)
        else:
            for unit in UNITS[r % len(UNITS) :] + UNITS[: r % len(UNITS)]:
                for prompt in batch:
                    timed(unit, prompt)
    return {
        name: {
            "n": len(v),
            "p50_us": float(np.percentile(v, 50) * 1e6),
            "p90_us": float(np.percentile(v, 90) * 1e6),
            "mean_us": float(np.mean(v) * 1e6),
        }
        for name, v in samples.items()
    }


def _table(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = ["| words | " + " | ".join(SERIES) + " |", "|---|" + "---|" * len(SERIES)]
    for size in SIZES:
        r = results[str(size)]
        cells = [f"{r[s]['p50_us']:.1f} ({r[s]['p90_us']:.1f})" for s in SERIES]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def check_routerbench(embedder: StaticEmbedder, folder: Path) -> dict[str, Any] | None:
    files = [folder / "train.jsonl", folder / "test.jsonl"]
    if not all(f.is_file() for f in files):
        return None
    tokenizer = embedder.wordpiece.tokenizer
    prompts = [str(r["prompt"]) for f in files for r in read_rows(f)]
    mismatched = [
        i
        for i, p in enumerate(prompts)
        if embedder.tokens(p).tolist() != tokenizer.encode(p, add_special_tokens=False).ids
    ]
    return {
        "prompts": len(prompts),
        "ascii_fast_path": sum(p.isascii() for p in prompts),
        "mismatched": len(mismatched),
        "tokens_total": int(sum(embedder.tokens(p).size for p in prompts)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.static_speed", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 50 prompts")
    parser.add_argument("--data", type=Path, default=None, help="the RouterBench folder")
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.per_round = 2, 50
    with guarded(args.time_limit, "bench.static_speed"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    embedder = StaticEmbedder.from_dir(default_static_dir())
    embedder.warm_up()
    table = routing_table(embedder)
    fns = series(embedder, table)
    words = vocabulary()
    protocols = {"steady": False, "cold": True}
    results = {
        protocol: {
            str(size): measure(fns, words, size, args.rounds, args.per_round, interleaved=flag)
            for size in SIZES
        }
        for protocol, flag in protocols.items()
    }
    identity = check_routerbench(embedder, data_dir(args.data))
    goals = {
        f"{name}@{size}": {
            "goal_us": goal,
            "p50_us": results["steady"][str(size)][name]["p50_us"],
            "cold_p50_us": results["cold"][str(size)][name]["p50_us"],
            "pass": results["steady"][str(size)][name]["p50_us"] <= goal,
        }
        for (name, size), goal in GOALS_US.items()
    }
    lines = [
        f"Static embedder `{embedder.path.name}` (dim {embedder.dim}, "
        f"{embedder.manifest['quantization']}), static starter clustering (K = "
        f"{table.k}), {N_MODELS} models; {args.rounds} rounds x {args.per_round} fresh random "
        "prompts per size; p50 (p90) per call in µs.",
        "",
        "**Steady state** (what the goals are judged on): each step runs over the round's "
        "prompts back to back, as in a server that routes one request after another; the "
        "order of the steps rotates round by round.",
        "",
    ]
    lines += _table(results["steady"])
    lines += [
        "",
        "**Cold**: the steps alternate prompt by prompt, so every call follows the others' "
        "work (`tokenizers` included) and finds the table rows, the trie and the "
        "interpreter's own data evicted from the CPU caches: the worst case, reported, not "
        "judged.",
        "",
    ]
    lines += _table(results["cold"])
    lines += ["", "Goals (p50):", ""]
    for key, g in goals.items():
        lines.append(
            f"- {verdict(bool(g['pass']))}: {key} words {g['p50_us']:.1f} µs "
            f"(goal ≤ {g['goal_us']:.0f} µs; cold {g['cold_p50_us']:.1f} µs)"
        )
    if identity is None:
        lines += [
            "",
            "RouterBench id check: skipped (no data; pass --data or set ROUTERBENCH_DIR).",
        ]
    else:
        lines += [
            "",
            f"- {verdict(identity['mismatched'] == 0)}: ids identical to `tokenizers` on all "
            f"{identity['prompts']} RouterBench prompts (train + test; {identity['mismatched']} "
            f"differ; {identity['ascii_fast_path']} took the Numba path, the rest "
            f"`tokenizers`; {identity['tokens_total']:,} tokens).",
        ]
    record(
        "static_speed",
        {"results_us": results, "goals": goals, "routerbench_ids": identity},
        "\n".join(lines),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
