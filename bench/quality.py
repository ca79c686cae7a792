"""Routing quality on real RouterBench data: deferral-curve Area and QNC, and the truncation choice.

Everything routes through the product: prompts are embedded by
``sidecar.Embedder`` (one truncation strategy at a time), K-means is fitted by
``sidecar._clustering.fit_clustering`` and a LearnedMap by
``sidecar._learned_map.fit_learned_clustering`` (what ``sidecar fit`` and
``sidecar fit --map learned`` run), and every decision comes from an in-process
``sidecar.serve`` over gRPC: the 11 LLMs are registered with ``RegisterModel``
from their graded answers on S_val (cost = mean train cost), and the test
prompts go through ``RouteBatch`` with their cached embeddings. Each response
at λ = 0 carries every model's expected error exactly as the kernel used it
(its score), so the whole λ sweep comes from one call per prompt; λ = 0, 0.1
and 0.5 are also routed by the server itself in every UniRoute run, and its
choice must equal the sweep's on every test prompt.

Protocol (DESIGN.md section 1, issue 4 item 7, issue 8):

- Φ is never fitted on S_val. Per seed, train is split at random in two
  halves: K-means runs on one (the fit half, 1,103 prompts), and S_val is the
  first N_val items of the other (the S_val pool, 1,102), N_val ∈ {100, 300,
  all of the pool}, so the S_val sets are nested. 5 seeds (the seed draws the
  split and seeds K-means).
- Every setting is chosen on a held-out 30% of train, never on test, for each
  N_val separately (the S_val size is known when a clustering is fitted): the
  K-means K from {5, 10, 25, 50}, the LearnedMap K from {5, 10, 25}, K-NN's k
  from {5, 10, 25, 50, 75, 100, 150, 200} (cosine), and which map UniRoute
  uses, each by the mean Area over 3 seeds, the other 70% of train split into
  a fit half and an S_val pool exactly as above. A K whose Area is within
  0.001 of the best counts as a tie and the smaller K wins (the rule of
  ``sidecar fit -k auto``); K-NN takes its best k. The truncation strategy is
  chosen by the best held-out Area with all labels. Test Areas of every
  strategy, map and k are reported too, with the chosen ones marked.
- The LearnedMap is trained on the fit half only, with the 11 LLMs' labels on
  those prompts (``fit --map learned --train-results``): S_val, held-out and
  test labels never reach it.
- Baselines on the same S_val: ZeroRouter (a K = 1 clustering through the same
  server), K-NN (its chosen k), the λ-swept Oracle, every single model, and the
  hull of the single models' test points.
- Curves, Area and QNC: see ``sidecar/_deferral.py`` (``bench.deferral``).
- ``sidecar fit -k auto`` (``sidecar._choose_k``) is also run on the whole of
  train for each map, and its Area-vs-K curve and choice are reported.

Embeddings are cached under bench/out/cache/, keyed by the embedder's
fingerprint (which covers the truncation) and the data file's sha256. A cold
cache costs 2-4 minutes of embedding per strategy on 2 busy cores (3,150 long
prompts, one at a time); warm, the full run takes about 30-60 minutes (it
trains a LearnedMap for every held-out and test run) and ``--quick`` about
40 s.

    python -m bench.quality [--data DIR] [--quick] [--truncation head tail head_tail]
                            [--time-limit 2400]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from bench import deferral
from bench._common import BENCH_DIR, OUT_DIR, add_time_limit, guarded, record, verdict
from bench.routerbench import data_dir, read_rows
from sidecar import Embedder, ServerConfig, default_embedder_dir, serve
from sidecar._choose_k import TOLERANCE, choose_k
from sidecar._clustering import Clustering, fit_clustering, save_clustering
from sidecar._learned_map import fit_learned_clustering

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TRUNCATIONS = ("head", "tail", "head_tail")
N_VALS = (100, 300, 0)  # 0 means the whole S_val pool
SEEDS = 5
K_GRID = (5, 10, 25, 50)
LEARNED_K_GRID = (5, 10, 25)
KMEANS, LEARNED = "UniRoute K-means", "UniRoute LearnedMap"
UNIROUTE = "UniRoute (map chosen on held-out train)"
GRID_SEEDS = 3
HOLDOUT = 0.3
HOLDOUT_SEED = 20250211
# The share of (held-in) train that S_val is drawn from; K-means gets the rest. Half
# of RouterBench's train makes the largest S_val 1,102 items, the top of DESIGN.md's
# 10^2-10^3 range, and leaves 1,103 prompts for K-means (K <= 50).
VAL_POOL = 0.5
KNN_KS = (5, 10, 25, 50, 75, 100, 150, 200)
CHECK_LAMBDAS = (0.0, 0.1, 0.5)  # routed by the server itself and compared with the sweep
TEXT_CHECK = 24  # test prompts routed by text, to show the cache matches the server's embedder
QUICK_N_VAL = 300
QUICK_SEEDS = 2
QUICK_K = 5
QUICK_KNN_K = 50
AUTO_N_VAL = 300  # the S_val size `fit -k auto` simulates in the report
QUICK_CHOICE = {"k": QUICK_K, "learned_k": QUICK_K, "knn_k": QUICK_KNN_K, "map": "learned"}
BATCH = 200  # requests per RouteBatch call (keeps messages far below gRPC's 4 MB)
CACHE_DIR = OUT_DIR / "cache"
PLOT = BENCH_DIR / "deferral_curves.png"
GOAL_GAIN_300 = 0.025
GOAL_GAIN_ALL = 0.03
TIME_LIMIT_S = 90 * 60


@dataclass(frozen=True)
class Split:
    """One RouterBench file as arrays; model columns in ``models`` order."""

    path: Path
    ids: tuple[str, ...]
    tasks: tuple[str, ...]
    prompts: tuple[str, ...]
    correct: FloatArray  # (N, M) 0/1
    cost: FloatArray  # (N, M) USD

    def __len__(self) -> int:
        return len(self.ids)


def load_split(path: Path, models: Sequence[str]) -> Split:
    rows = read_rows(path)
    return Split(
        path=path,
        ids=tuple(str(r["id"]) for r in rows),
        tasks=tuple(str(r["task"]) for r in rows),
        prompts=tuple(str(r["prompt"]) for r in rows),
        correct=np.asarray([[float(r["correct"][m]) for m in models] for r in rows]),
        cost=np.asarray([[float(r["cost_usd"][m]) for m in models] for r in rows]),
    )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def embed_cached(embedder: Embedder, split: Split) -> npt.NDArray[np.float32]:
    """The split's prompt embeddings, from bench/out/cache/ when this exact pair was seen."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{embedder.fingerprint}-{sha256_file(split.path)}.npy"
    if path.exists():
        vectors = np.load(path, allow_pickle=False)
        if vectors.shape == (len(split), embedder.dim):
            return np.ascontiguousarray(vectors, dtype=np.float32)
    started = time.monotonic()
    step = max(1, len(split) // 10)

    def progress(done: int) -> None:
        if done % step < 32 or done == len(split):
            log(f"  embedded {done}/{len(split)} ({time.monotonic() - started:.0f} s)")

    log(f"embedding {split.path.name} with truncation={embedder.truncation} (cache miss)")
    vectors = embedder.embed_batch(list(split.prompts), progress=progress).vectors
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors


@dataclass(frozen=True)
class Served:
    """What the sidecar answered for the test prompts."""

    expected_error: FloatArray  # (N, M): the kernel's expected error term, registration order
    model_cost: FloatArray  # (M,): registered cost, as the server reports it
    clusters: IntArray  # (N,)
    checks: dict[str, dict[str, Any]]  # per check λ: agreement with the sweep
    text_clusters_agree: float | None  # fraction of text-routed prompts in the same cluster


def _route_all(
    router: router_pb2_grpc.RouterStub,
    vectors: npt.NDArray[np.float32],
    cost_weight: float | None = None,
) -> list[router_pb2.RouteResponse]:
    responses: list[router_pb2.RouteResponse] = []
    for start in range(0, vectors.shape[0], BATCH):
        requests = [
            router_pb2.RouteRequest(embedding=v.tolist(), cost_weight=cost_weight)
            for v in vectors[start : start + BATCH]
        ]
        reply = router.RouteBatch(router_pb2.RouteBatchRequest(requests=requests))
        responses.extend(reply.responses)
    return responses


def serve_and_route(
    workdir: Path,
    clustering: Clustering,
    embedder: Embedder,
    models: Sequence[str],
    model_cost: FloatArray,
    val_correct: FloatArray,
    test_vectors: npt.NDArray[np.float32],
    *,
    check_lambdas: Sequence[float] = (),
    text_prompts: Sequence[str] = (),
) -> Served:
    """Serves ``clustering``, registers the models from their S_val results, routes the test set.

    ``val_correct`` rows follow ``clustering.item_ids``.
    """
    artifact = workdir / "clustering"
    save_clustering(clustering, artifact)
    sidecar = serve(
        ServerConfig(
            listen="127.0.0.1:0",
            db_path=workdir / "registry.db",
            artifact_dir=artifact,
            truncation=embedder.truncation,
            max_workers=4,
        ),
        embedder=embedder,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
            registry = registry_pb2_grpc.RegistryStub(channel)
            for j, name in enumerate(models):
                results = [
                    registry_pb2.ValidationResult(item_id=item, score=float(score))
                    for item, score in zip(clustering.item_ids, val_correct[:, j], strict=True)
                ]
                registry.RegisterModel(
                    registry_pb2.RegisterModelRequest(
                        name=name,
                        cost=float(model_cost[j]),
                        results=registry_pb2.ValidationResults(results=results),
                    )
                )
            router = router_pb2_grpc.RouterStub(channel)
            # At λ = 0 a score is exactly the expected error the kernel adds λ·cost to
            # (Ψ[cluster], or Σ_k Φ_k Ψ_k under a LearnedMap), so the sweep below
            # reproduces the server's decision at every λ bit for bit.
            responses = _route_all(router, test_vectors, cost_weight=0.0)
            names = [s.model for s in responses[0].scores]
            if names != list(models):
                raise RuntimeError(f"unexpected model order in scores: {names}")
            if len({r.revision for r in responses}) != 1:
                raise RuntimeError("test prompts were routed from different table revisions")
            err = np.asarray([[s.score for s in r.scores] for r in responses])
            cost = np.asarray([s.cost for s in responses[0].scores])
            clusters = np.asarray([r.cluster for r in responses], dtype=np.int64)
            checks = {}
            for lam in check_lambdas:
                served = _route_all(router, test_vectors, cost_weight=lam)
                picked = np.asarray([models.index(r.model) for r in served])
                swept = deferral.route_sweep(err, cost, [lam])[0]
                checks[f"{lam:g}"] = {
                    "n": len(served),
                    "agree": int(np.sum(picked == swept)),
                    "fraction": float(np.mean(picked == swept)),
                }
            text_agree = None
            if text_prompts:
                reply = router.RouteBatch(
                    router_pb2.RouteBatchRequest(
                        requests=[router_pb2.RouteRequest(prompt=p) for p in text_prompts]
                    )
                )
                by_text = np.asarray([r.cluster for r in reply.responses])
                text_agree = float(np.mean(by_text == clusters[: len(text_prompts)]))
    finally:
        sidecar.stop(0)
    return Served(err, cost, clusters, checks, text_agree)


def fit_and_pool(n: int, seed: int) -> tuple[IntArray, IntArray]:
    """Positions 0..n-1 split at random: (K-means fit set, sorted; S_val pool, in drawn order).

    The two are disjoint, so Φ is never fitted on an S_val item (DESIGN.md: "never
    fit it on S_val"). S_val of size N is the pool's first N (`val_subset`).
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_pool = round(VAL_POOL * n)
    return np.sort(perm[n_pool:]).astype(np.int64), perm[:n_pool].astype(np.int64)


def val_subset(pool: IntArray, n_val: int) -> IntArray:
    """Sorted S_val positions: the pool's first ``n_val`` (nested across N_val); 0 = all."""
    if n_val <= 0 or n_val >= pool.size:
        return np.sort(pool)
    return np.sort(pool[:n_val])


def nval_label(n_val: int, n_pool: int) -> str:
    return f"all ({n_pool})" if n_val <= 0 or n_val >= n_pool else str(n_val)


def select_label(n_val: int) -> str:
    """The key of an N_val in the held-out choices: "100", "300" or "all"."""
    return "all" if n_val <= 0 else str(n_val)


def smallest_within_tolerance(areas: dict[int, float]) -> int:
    """The smallest K whose Area is within TOLERANCE of the best (``fit -k auto``'s rule)."""
    best = max(areas.values())
    return min(k for k, a in areas.items() if a >= best - TOLERANCE)


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample std (None when a value is infinite), the values, and how many are inf."""
    a = np.asarray(values, dtype=np.float64)
    all_finite = bool(np.all(np.isfinite(a)))
    return {
        "values": [float(v) if math.isfinite(v) else None for v in a],
        "mean": float(a.mean()) if all_finite else None,
        "std": (float(a.std(ddof=1)) if a.size > 1 else 0.0) if all_finite else None,
        "n_inf": int(np.sum(~np.isfinite(a))),
    }


class Evaluator:
    """One truncation strategy's embeddings, splits and server runs."""

    def __init__(
        self,
        truncation: str,
        models: Sequence[str],
        train: Split,
        test: Split,
        workdir: Path,
    ) -> None:
        self.models = list(models)
        self.train = train
        self.test = test
        self.workdir = workdir
        self.embedder = Embedder.from_dir(default_embedder_dir(), threads=2, truncation=truncation)
        self.truncation = self.embedder.truncation
        self.train_vectors = embed_cached(self.embedder, train)
        self.test_vectors = embed_cached(self.embedder, test)
        self.train_cost = train.cost.mean(axis=0)  # what each model registers with
        self.runs = 0

    def distinct_test_vectors(self) -> dict[str, list[int]]:
        """Per task: [distinct embeddings, prompts]. Truncation can make prompts embed alike."""
        tasks = np.asarray(self.test.tasks)
        return {
            str(t): [len(np.unique(self.test_vectors[tasks == t], axis=0)), int(np.sum(tasks == t))]
            for t in sorted(set(self.test.tasks))
        }

    def fit(
        self, fit_idx: IntArray, val_idx: IntArray, k: int, seed: int, learned: bool = False
    ) -> Clustering:
        """K-means (or a LearnedMap trained with the 11 LLMs' labels on the same rows) on
        train rows ``fit_idx``; S_val = rows ``val_idx``, which must be disjoint."""
        shared = np.intersect1d(fit_idx, val_idx)
        if shared.size:
            raise ValueError(f"{shared.size} S_val items are in the fit set")
        args = (
            self.train_vectors[fit_idx],
            [self.train.ids[i] for i in val_idx],
            self.train_vectors[val_idx],
        )
        info: dict[str, object] = {"bench": "quality", "truncation": self.truncation}
        if learned and k > 1:
            clustering, _ = fit_learned_clustering(
                args[0],
                self.train.correct[fit_idx],
                args[1],
                args[2],
                k=k,
                embedder_fingerprint=self.embedder.fingerprint,
                seed=seed,
                info=info,
            )
            return clustering
        return fit_clustering(
            *args, k=k, embedder_fingerprint=self.embedder.fingerprint, seed=seed, info=info
        )

    def route(
        self,
        clustering: Clustering,
        val_idx: IntArray,
        query_vectors: npt.NDArray[np.float32],
        model_cost: FloatArray | None = None,
        **kwargs: Any,
    ) -> Served:
        """Serves ``clustering`` with the models' S_val results; ``model_cost`` defaults to
        each model's mean cost over all of train."""
        self.runs += 1
        run_dir = self.workdir / f"run{self.runs:04d}"
        run_dir.mkdir()
        return serve_and_route(
            run_dir,
            clustering,
            self.embedder,
            self.models,
            self.train_cost if model_cost is None else model_cost,
            self.train.correct[val_idx],
            query_vectors,
            **kwargs,
        )

    def choose_settings(
        self,
        k_grid: Sequence[int],
        learned_grid: Sequence[int],
        knn_ks: Sequence[int],
        seeds: int,
        n_vals: Sequence[int] = N_VALS,
    ) -> dict[str, Any]:
        """K per map, the map, and K-NN's k by Area on a held-out 30% of train, never on test.

        The other 70% is split per seed like train in `evaluate`: the map on its
        fit half, S_val = the first N_val of its S_val pool, for each N_val. Models
        register with their mean cost on that 70%, so nothing about the held-out
        rows but the prompts' embeddings reaches the router.
        """
        n = len(self.train)
        perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
        n_hold = round(HOLDOUT * n)
        hold, rest = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        correct, cost = self.train.correct[hold], self.train.cost[hold]
        norm_cost = float(cost.mean(axis=0).max())
        rest_cost = self.train.cost[rest].mean(axis=0)
        hold_vectors = self.train_vectors[hold]
        fit_size, pool_size = (len(part) for part in fit_and_pool(rest.size, 0))

        def area(expected_error: FloatArray, model_cost: FloatArray) -> float:
            chosen = deferral.route_sweep(expected_error, model_cost, deferral.LAMBDAS)
            return deferral.hull_area(deferral.deferral_points(chosen, correct, cost, norm_cost))

        grid: dict[str, dict[str, Any]] = {}
        learned: dict[str, dict[str, Any]] = {}
        knn_grid: dict[str, dict[str, Any]] = {}
        chosen: dict[str, dict[str, Any]] = {}
        for n_val in n_vals:
            label = select_label(n_val)
            areas: dict[int, list[float]] = {k: [] for k in (1, *k_grid)}
            learned_areas: dict[int, list[float]] = {k: [] for k in learned_grid}
            knn_areas: dict[int, list[float]] = {kk: [] for kk in knn_ks}
            for seed in range(seeds):
                fit_pos, pool_pos = fit_and_pool(rest.size, seed)
                fit_idx, val_idx = rest[fit_pos], rest[val_subset(pool_pos, n_val)]
                for map_areas, is_learned in ((areas, False), (learned_areas, True)):
                    for k in map_areas:
                        clustering = self.fit(fit_idx, val_idx, k, seed, learned=is_learned)
                        served = self.route(clustering, val_idx, hold_vectors, rest_cost)
                        map_areas[k].append(area(served.expected_error, served.model_cost))
                val_error = 1.0 - self.train.correct[val_idx]
                for kk in knn_areas:
                    err = deferral.knn_expected_error(
                        hold_vectors, self.train_vectors[val_idx], val_error, min(kk, val_idx.size)
                    )
                    knn_areas[kk].append(area(err, rest_cost))
            grid[label] = {str(k): summarise(v) for k, v in areas.items()}
            learned[label] = {str(k): summarise(v) for k, v in learned_areas.items()}
            knn_grid[label] = {str(kk): summarise(v) for kk, v in knn_areas.items()}
            k_best = smallest_within_tolerance({k: grid[label][str(k)]["mean"] for k in k_grid})
            l_best = smallest_within_tolerance(
                {k: learned[label][str(k)]["mean"] for k in learned_grid}
            )
            km_area, lm_area = grid[label][str(k_best)]["mean"], learned[label][str(l_best)]["mean"]
            chosen[label] = {
                "k": k_best,
                "learned_k": l_best,
                "knn_k": int(max(knn_ks, key=lambda kk: knn_grid[label][str(kk)]["mean"])),
                "map": "learned" if lm_area > km_area else "kmeans",
                "held_out_area": max(km_area, lm_area),
            }
            log(f"   held-out N_val={label}: {chosen[label]}")
        return {
            "holdout": int(hold.size),
            "fit": fit_size,
            "val_pool": pool_size,
            "seeds": seeds,
            "grid": grid,
            "learned_grid": learned,
            "knn_grid": knn_grid,
            "chosen": chosen,
            "chosen_k": chosen["all"]["k"],
            "chosen_knn_k": chosen["all"]["knn_k"],
        }

    def evaluate(
        self,
        choices: dict[str, dict[str, Any]],
        n_vals: Sequence[int],
        seeds: int,
        keep_points_for: int | None = 0,
    ) -> dict[str, Any]:
        """The protocol on test.jsonl for every N_val and seed.

        ``choices[select_label(n_val)]`` holds the settings chosen on held-out
        train for that N_val (K per map, the map, K-NN's k); every K-NN k in
        KNN_KS is reported too. Every UniRoute run is also routed by the server
        itself at CHECK_LAMBDAS and compared with the sweep, prompt by prompt.
        """
        test, train = self.test, self.train
        norm_cost = float(test.cost.mean(axis=0).max())
        singles = deferral.single_model_points(test.correct, test.cost, norm_cost)
        best_model = int(np.argmax(singles[:, 1]))
        target = float(singles[best_model, 1])
        oracle_points = deferral.deferral_points(
            deferral.route_sweep(1.0 - test.correct, test.cost, deferral.LAMBDAS),
            test.correct,
            test.cost,
            norm_cost,
        )
        splits = [fit_and_pool(len(train), seed) for seed in range(seeds)]
        n_pool = splits[0][1].size
        out: dict[str, Any] = {
            "k": choices["all"]["k"] if "all" in choices else next(iter(choices.values()))["k"],
            "knn_k": next(iter(choices.values()))["knn_k"],
            "fit_size": int(splits[0][0].size),
            "val_pool": int(n_pool),
            "norm_cost_usd": norm_cost,
            "target_quality": target,
            "best_model": self.models[best_model],
            "single_models": {
                m: {"cost": float(singles[j, 0]), "quality": float(singles[j, 1])}
                for j, m in enumerate(self.models)
            },
            "oracle": {
                "area": deferral.hull_area(oracle_points),
                "qnc": deferral.qnc(oracle_points, target),
                "lambda0": oracle_points[0].tolist(),
            },
            "single_hull": {
                "area": deferral.hull_area(singles),
                "qnc": deferral.qnc(singles, target),
            },
            "by_n_val": {},
        }
        curves: dict[str, Any] = {}
        for n_val in n_vals:
            label = nval_label(n_val, n_pool)
            choice = choices[select_label(n_val)]
            area: dict[str, list[float]] = {}
            qncs: dict[str, list[float]] = {}
            checks: list[dict[str, Any]] = []
            for seed, (fit_idx, pool) in enumerate(splits):
                val_idx = val_subset(pool, n_val)
                val_error = 1.0 - train.correct[val_idx]
                first = seed == 0 and n_val == n_vals[-1]
                points: dict[str, FloatArray] = {}
                runs = (
                    (KMEANS, choice["k"], False),
                    (LEARNED, choice["learned_k"], True),
                    ("ZeroRouter", 1, False),
                )
                for name, kk, learned in runs:
                    uniroute = name != "ZeroRouter"
                    served = self.route(
                        self.fit(fit_idx, val_idx, kk, seed, learned=learned),
                        val_idx,
                        self.test_vectors,
                        check_lambdas=CHECK_LAMBDAS if uniroute else (),
                        text_prompts=test.prompts[:TEXT_CHECK] if first and uniroute else (),
                    )
                    if uniroute:
                        checks.append(
                            {
                                "router": name,
                                "k": kk,
                                "seed": seed,
                                "lambdas": served.checks,
                                "text_cluster_agreement": served.text_clusters_agree,
                            }
                        )
                    chosen = deferral.route_sweep(
                        served.expected_error, served.model_cost, deferral.LAMBDAS
                    )
                    points[name] = deferral.deferral_points(
                        chosen, test.correct, test.cost, norm_cost
                    )
                points[UNIROUTE] = points[LEARNED if choice["map"] == "learned" else KMEANS]
                for kk in KNN_KS:
                    if kk > val_idx.size:
                        continue
                    err = deferral.knn_expected_error(
                        self.test_vectors, self.train_vectors[val_idx], val_error, kk
                    )
                    chosen = deferral.route_sweep(err, self.train_cost, deferral.LAMBDAS)
                    points[f"K-NN k={kk}"] = deferral.deferral_points(
                        chosen, test.correct, test.cost, norm_cost
                    )
                points[KNN_CHOSEN] = points[f"K-NN k={min(choice['knn_k'], val_idx.size)}"]
                for name, p in points.items():
                    area.setdefault(name, []).append(deferral.hull_area(p))
                    qncs.setdefault(name, []).append(deferral.qnc(p, target))
                if keep_points_for is not None and n_val == keep_points_for and seed == 0:
                    curves = {name: p.tolist() for name, p in points.items()}
                    curves["Oracle"] = oracle_points.tolist()

            def paired(a: str, b: str, area: dict[str, list[float]] = area) -> dict[str, Any]:
                return summarise([x - y for x, y in zip(area[a], area[b], strict=True)])

            out["by_n_val"][label] = {
                "n_val": int(val_idx.size),
                "chosen": choice,
                "area": {name: summarise(v) for name, v in area.items()},
                "qnc": {name: summarise(v) for name, v in qncs.items()},
                "uniroute_minus_zero": paired(UNIROUTE, "ZeroRouter"),
                "uniroute_minus_knn": paired(UNIROUTE, KNN_CHOSEN),
                "learned_minus_kmeans": paired(LEARNED, KMEANS),
                "server_checks": checks,
            }
        out["curves"] = curves
        return out


KNN_CHOSEN = "K-NN, k chosen on held-out train"


def knn_name(result: dict[str, Any]) -> str:
    """The K-NN baseline compared against: its k was chosen on held-out train per N_val."""
    return KNN_CHOSEN


def fmt(s: dict[str, Any], digits: int = 4) -> str:
    if s["mean"] is None:
        finite = [v for v in s["values"] if v is not None]
        tail = f", {np.mean(finite):.{digits}f} over the rest" if finite else ""
        return f"inf in {s['n_inf']}/{len(s['values'])}{tail}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def goals(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, block in result["by_n_val"].items():
        gain = block["uniroute_minus_zero"]["mean"]
        ch = block["chosen"]
        k = ch["learned_k"] if ch["map"] == "learned" else ch["k"]
        base = {"map": ch["map"], "k": k}
        if block["n_val"] == 300:
            out["gain_300"] = {
                **base,
                "want": GOAL_GAIN_300,
                "got": gain,
                "pass": gain >= GOAL_GAIN_300,
            }
        if label.startswith("all"):
            out["gain_all"] = {
                **base,
                "want": GOAL_GAIN_ALL,
                "got": gain,
                "pass": gain >= GOAL_GAIN_ALL,
            }
        d = block["uniroute_minus_knn"]
        out[f"beats_knn_{block['n_val']}"] = {
            **base,
            "knn_k": ch["knn_k"],
            "got": d["mean"],
            "std": d["std"],
            "pass": d["mean"] >= 0.0,
        }
    checks = [c for b in result["by_n_val"].values() for c in b["server_checks"]]
    agree = sum(v["agree"] for c in checks for v in c["lambdas"].values())
    total = sum(v["n"] for c in checks for v in c["lambdas"].values())
    out["served_equals_sweep"] = {
        "agree": agree,
        "n": total,
        "runs": len(checks),
        "pass": total > 0 and agree == total,
    }
    return out


def goal_lines(g: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for key, v in g.items():
        if key == "served_equals_sweep":
            lines.append(
                f"- {verdict(v['pass'])}: the server's own choice equals the offline sweep's on "
                f"{v['agree']}/{v['n']} test decisions ({v['runs']} UniRoute server runs, every "
                f"test prompt at λ ∈ {{{', '.join(f'{lam:g}' for lam in CHECK_LAMBDAS)}}})"
            )
            continue
        what = f"UniRoute ({v['map']}, K = {v['k']})"
        if key.startswith("gain"):
            n = "300" if key == "gain_300" else "all"
            lines.append(
                f"- {verdict(v['pass'])}: {what} − ZeroRouter Area at N_val = {n} is "
                f"{v['got']:+.4f} (goal ≥ +{v['want']:.3f})"
            )
        else:
            n = key.rsplit("_", 1)[1]
            lines.append(
                f"- {verdict(v['pass'])}: {what} − K-NN (k = {v['knn_k']}, chosen on held-out "
                f"train) Area at N_val = {n} is {v['got']:+.4f} ± {v['std']:.4f} (paired by "
                "seed; goal ≥ 0)"
            )
    return lines


def router_table(result: dict[str, Any], what: str) -> str:
    """Routers as rows, N_val as columns; ``what`` is "area" or "qnc"."""
    blocks = result["by_n_val"]
    names: list[str] = []
    for block in blocks.values():
        names += [n for n in block[what] if n not in names]
    head = "| router | " + " | ".join(f"N_val = {lab}" for lab in blocks) + " |\n"
    head += "|---|" + "---|" * len(blocks) + "\n"
    rows = []
    chosen = {uni_name(result), knn_name(result)}
    for name in names:
        cells = [fmt(b[what][name]) if name in b[what] else "—" for b in blocks.values()]
        shown = f"**{name}** (chosen)" if name in chosen else name
        rows.append(f"| {shown} | " + " | ".join(cells) + " |")
    for name, key in (
        ("Oracle (λ-swept)", "oracle"),
        ("hull of single models (test-set accuracies)", "single_hull"),
    ):
        value = result[key][what]
        rows.append(f"| {name} | " + " | ".join([f"{value:.4f}"] * len(blocks)) + " |")
    return head + "\n".join(rows)


def plot(result: dict[str, Any], n_label: str, path: Path) -> None:
    """Hull curves of UniRoute, ZeroRouter, the chosen K-NN and the Oracle, plus every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {n: np.asarray(p) for n, p in result["curves"].items()}
    knn = knn_name(result)
    styles = [
        (KMEANS, "tab:blue", "-"),
        (LEARNED, "tab:purple", "-"),
        ("ZeroRouter", "tab:orange", "--"),
        (knn, "tab:green", "-."),
        ("Oracle", "tab:gray", ":"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    for ax, log_x in zip(axes, (False, True), strict=True):
        xs = np.geomspace(5e-3, 1.0, 600) if log_x else np.linspace(0.0, 1.0, 601)
        for name, color, ls in styles:
            p = curves[name]
            label = f"{name} (Area {deferral.hull_area(p):.3f})"
            ax.plot(xs, deferral.curve(p, xs), color=color, ls=ls, lw=2, label=label)
            if name != "Oracle":
                ax.scatter(p[:, 0], p[:, 1], s=7, color=color, alpha=0.35)
        for m, v in result["single_models"].items():
            ax.scatter(v["cost"], v["quality"], marker="x", color="black", s=30, zorder=5)
            if log_x or v["quality"] > 0.7:
                ax.annotate(
                    m.split("/")[-1],
                    (v["cost"], v["quality"]),
                    fontsize=7,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
        ax.axhline(result["target_quality"], color="black", lw=0.6, alpha=0.4)
        ax.set_ylabel("quality (mean correct on test)")
        ax.grid(alpha=0.3, which="both")
        if log_x:
            ax.set_xscale("log")
            ax.set_xlim(8e-3, 1.15)
            ax.set_ylim(0.54, 0.92)
            ax.set_xlabel("normalised cost, log scale")
            ax.set_title("same curves, log cost (single models labelled)", fontsize=10)
        else:
            ax.set_xlim(0.0, 1.02)
            ax.set_ylim(0.5, 1.0)
            ax.set_xlabel("normalised cost (mean cost / gpt-4's mean cost)")
            ax.set_title("deferral curves (hulls of each router's λ points)", fontsize=10)
    ch = result["by_n_val"][n_label]["chosen"]
    fig.suptitle(
        f"RouterBench test (945 prompts): N_val = {n_label}, seed 0, "
        f"truncation {result['truncation']}, K-means K = {ch['k']}, LearnedMap K = "
        f"{ch['learned_k']}, K-NN k = {ch['knn_k']}",
        fontsize=11,
    )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0.0, 0.09, 1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def uni_name(result: dict[str, Any]) -> str:
    return UNIROUTE


def selection_area(result: dict[str, Any]) -> float:
    """Held-out train Area of the strategy's chosen map and K with all labels (no test data)."""
    return float(result["k_selection"]["chosen"]["all"]["held_out_area"])


def choose_truncation(results: dict[str, Any]) -> str:
    """Like K, the truncation is chosen on the held-out split of train, never on test."""
    if any(r["k_selection"] is None for r in results.values()):
        return next(iter(results))
    return max(results, key=lambda t: selection_area(results[t]))


def paired_vs(results: dict[str, Any], truncation: str, base: str) -> dict[str, Any]:
    """UniRoute Area of ``truncation`` minus ``base`` per N_val, paired by seed (same S_val)."""
    out = {}
    mine, theirs = results[truncation], results[base]
    for label, block in mine["by_n_val"].items():
        a = block["area"][uni_name(mine)]["values"]
        b = theirs["by_n_val"][label]["area"][uni_name(theirs)]["values"]
        d = np.asarray(a) - np.asarray(b)
        stats = summarise(d)
        se = stats["std"] / math.sqrt(d.size) if d.size > 1 else 0.0
        stats["t"] = float(stats["mean"] / se) if se > 0 else None
        out[label] = stats
    return out


def truncation_table(results: dict[str, Any]) -> str:
    labels = list(next(iter(results.values()))["by_n_val"])
    head = (
        "| truncation | map (all), K-means K / LearnedMap K | "
        + " | ".join(f"UniRoute N_val = {lab}" for lab in labels)
        + " | ZeroRouter (all) | K-NN, chosen k (all) | UniRoute − ZeroRouter (all) |\n"
        + "|---|---|"
        + "---|" * (len(labels) + 3)
        + "\n"
    )
    rows = []
    for result in results.values():
        uni = uni_name(result)
        blocks = result["by_n_val"]
        last = blocks[labels[-1]]
        knn = knn_name(result)
        cells = [fmt(blocks[lab]["area"][uni]) for lab in labels]
        ch = last["chosen"]
        rows.append(
            f"| {result['truncation']} | {ch['map']}, {ch['k']} / {ch['learned_k']} | "
            + " | ".join(cells)
            + f" | {fmt(last['area']['ZeroRouter'])} | {fmt(last['area'][knn])} ({knn}) "
            + f"| {fmt(last['uniroute_minus_zero'], 4)} |"
        )
    return head + "\n".join(rows)


def grid_table(result: dict[str, Any]) -> str:
    """Held-out Area of every K per map (ZeroRouter is K = 1) and every K-NN k; chosen bold."""
    sel = result["k_selection"]
    first = next(iter(sel["grid"]))
    ks, lks = list(sel["grid"][first]), list(sel["learned_grid"][first])
    knns = list(sel["knn_grid"][first])
    heads = (
        ["ZeroRouter" if k == "1" else f"K-means K={k}" for k in ks]
        + [f"Learned K={k}" for k in lks]
        + [f"K-NN k={k}" for k in knns]
    )
    head = "| S_val | " + " | ".join(heads) + " | chosen |\n"
    head += "|---|" + "---|" * (len(heads) + 1) + "\n"
    rows = []
    for label in sel["grid"]:
        ch = sel["chosen"][label]
        cells = []
        for which, keys, chosen in (
            ("grid", ks, ch["k"]),
            ("learned_grid", lks, ch["learned_k"]),
            ("knn_grid", knns, ch["knn_k"]),
        ):
            for k in keys:
                cell = fmt(sel[which][label][k])
                cells.append(f"**{cell}**" if int(k) == chosen and k != "1" else cell)
        shown = f"all ({sel['val_pool']})" if label == "all" else label
        rows.append(f"| {shown} | " + " | ".join(cells) + f" | {ch['map']} |")
    return head + "\n".join(rows)


def auto_k_table(auto: dict[str, Any]) -> str:
    """``sidecar fit -k auto``'s Area-vs-K curve per map on all of train."""
    kinds = list(auto)
    ks = [c["k"] for c in auto[kinds[0]]["curve"]]
    head = "| map | " + " | ".join(f"K={k}" for k in ks) + " | chosen K |\n"
    head += "|---|" + "---|" * (len(ks) + 1) + "\n"
    rows = []
    for kind in kinds:
        info = auto[kind]
        cells = [
            f"{c['area_mean']:.4f} ± {c['area_std']:.4f}"
            if c["k"] != info["k"]
            else f"**{c['area_mean']:.4f} ± {c['area_std']:.4f}**"
            for c in info["curve"]
        ]
        pools = "/".join(str(n) for n in info["llm_pools"])
        rows.append(
            f"| {kind} (held-out LLM pools {pools}) | " + " | ".join(cells) + f" | {info['k']} |"
        )
    return head + "\n".join(rows)


def render(
    results: dict[str, Any],
    winner: str,
    quick: bool,
    train: Split,
    test: Split,
    timings: dict[str, float],
    auto: dict[str, Any] | None = None,
) -> str:
    best = results[winner]
    uni = uni_name(best)
    labels = list(best["by_n_val"])
    seeds = len(next(iter(best["by_n_val"].values()))["area"][uni]["values"])
    parts = [
        f"RouterBench ({len(train)} train / {len(test)} test prompts; ARC-Challenge, MBPP, "
        f"Winogrande; 11 LLMs). Every decision comes from an in-process `sidecar.serve` over "
        f"gRPC: models registered with `RegisterModel` from their S_val results (cost = mean "
        f"train cost), test prompts routed with `RouteBatch` from cached embeddings, the λ "
        f"sweep ({deferral.LAMBDAS.size} values: 0 and 1e-4…1e3) recomputed from the "
        f"expected errors the server returned at λ = 0 with the kernel's rule. Per seed, train "
        f"is split at random into a fit half ({best['fit_size']} prompts: K-means, and the "
        f"LearnedMap trained on the 11 LLMs' labels of those prompts) and an S_val pool "
        f"({best['val_pool']}); S_val = the pool's first N_val items (nested), so no map sees "
        f"an S_val item; mean ± sample std over {seeds} seeds (the seed draws the split and "
        f"seeds K-means and the LearnedMap). Per N_val, each map's K, the map, K-NN's k and "
        f"the truncation are chosen on a held-out 30% of train, never on test (see Choosing "
        f"settings); every K-NN k's test Area is shown, the chosen one in bold. Cost is "
        f"normalised by the most expensive model's mean test cost "
        f"({best['best_model']}, ${best['norm_cost_usd']:.5f}). Curve = upper concave "
        f"envelope of a router's own λ points and (0, 0) (random mixing and abstaining), "
        f"flat right of its best point; Area = its integral on [0, 1] (`sidecar/_deferral.py`).",
        "",
    ]
    if quick:
        parts += [
            f"**Quick mode**: truncation {best['truncation']}, N_val = {labels[0]}, "
            f"{seeds} seeds, fixed K = {QUICK_K} for both maps, the LearnedMap as UniRoute's "
            f"map and K-NN k = {QUICK_KNN_K}; see the `quality` section for the full protocol.",
            "",
        ]
    if len(results) > 1:
        parts += [
            "### Truncation strategies (Area, mean ± std)",
            "",
            truncation_table(results),
            "",
            f"Chosen like K, on the held-out 30% of train and never on test: "
            f"**{best['truncation']}** (held-out Area at each strategy's K with all labels: "
            + ", ".join(f"{r['truncation']} {selection_area(r):.4f}" for r in results.values())
            + ").",
            "",
            f"UniRoute test Area minus {best['truncation']}'s, paired by seed (same S_val and "
            "K-means seed); t = mean / (std / √seeds):",
            "",
            "| truncation | " + " | ".join(f"N_val = {lab}" for lab in labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for r in results.values():
            if r["truncation"] == best["truncation"]:
                continue
            cells = []
            for lab in labels:
                d = r["paired_vs_chosen"][lab]
                t = "" if d["t"] is None else f" (t = {d['t']:+.1f})"
                cells.append(f"{d['mean']:+.4f} ± {d['std']:.4f}{t}")
            parts.append(f"| {r['truncation']} | " + " | ".join(cells) + " |")
        tasks = list(best["distinct_test_vectors"])
        parts += [
            "",
            "Distinct test embeddings per task (distinct / prompts): with head truncation "
            "every prompt that shares a ≥ 254-token prefix embeds identically.",
            "",
            "| truncation | " + " | ".join(tasks) + " |",
            "|---|" + "---|" * len(tasks),
        ]
        for r in results.values():
            counts = r["distinct_test_vectors"]
            parts.append(
                f"| {r['truncation']} | "
                + " | ".join(f"{counts[t][0]} / {counts[t][1]}" for t in tasks)
                + " |"
            )
        parts.append("")
    parts += [
        f"### Area, truncation = {best['truncation']}",
        "",
        router_table(best, "area"),
        "",
        ("Fixed for quick mode: " if quick else "Chosen on held-out train for each N_val: ")
        + "; ".join(
            f"{label}: K-means K = {b['chosen']['k']}, LearnedMap K = "
            f"{b['chosen']['learned_k']}, map = {b['chosen']['map']}, K-NN k = "
            f"{b['chosen']['knn_k']}"
            for label, b in best["by_n_val"].items()
        )
        + ".",
        "",
        "Each single model (normalised cost, quality): "
        + ", ".join(
            f"{m.split('/')[-1]} ({v['cost']:.3f}, {v['quality']:.3f})"
            for m, v in sorted(best["single_models"].items(), key=lambda kv: kv[1]["cost"])
        )
        + f". Best single model: {best['best_model']} (quality {best['target_quality']:.4f}).",
        "",
        f"### QNC (normalised cost to reach {best['target_quality']:.4f}, the best single "
        f"model's quality; inf = never)",
        "",
        router_table(best, "qnc"),
        "",
        "### Paired differences (same S_val and seeds), Area",
        "",
        "| N_val | difference | per seed | mean ± std |",
        "|---|---|---|---|",
    ]
    for label, block in best["by_n_val"].items():
        for key, what in (
            ("uniroute_minus_zero", "UniRoute (chosen map) − ZeroRouter"),
            ("uniroute_minus_knn", "UniRoute (chosen map) − K-NN (chosen k)"),
            ("learned_minus_kmeans", "LearnedMap − K-means"),
        ):
            d = block[key]
            per_seed = ", ".join(f"{v:+.4f}" for v in d["values"])
            parts.append(f"| {label} | {what} | {per_seed} | {fmt(d, 4)} |")
    parts += ["", "### Goals (informational; they fail no test)", ""]
    ordered = [best, *(r for r in results.values() if r is not best)]
    for result in ordered:
        chosen = " (chosen)" if result is best else ""
        prefix = f"truncation {result['truncation']}{chosen}:" if len(results) > 1 else ""
        if prefix:
            parts.append(f"{prefix}")
            parts.append("")
        parts += goal_lines(result["goals"])
        parts.append("")
    if not quick:
        parts += [
            f"### Choosing settings (held-out 30% of train, Area, mean ± std over {GRID_SEEDS} "
            "seeds)",
            "",
        ]
        for result in results.values():
            sel = result["k_selection"]
            parts += [
                f"truncation {result['truncation']}: pseudo-test {sel['holdout']} train prompts; "
                f"of the other {sel['fit'] + sel['val_pool']}, per seed the maps on "
                f"{sel['fit']} and S_val from the other {sel['val_pool']}. Per S_val size: each "
                f"map's K is the smallest within {TOLERANCE} of its best (bold), the map the one "
                "with the higher Area at its K, K-NN's k its best.",
                "",
                grid_table(result),
                "",
            ]
    if auto:
        parts += [
            "### `sidecar fit -k auto` on all of train",
            "",
            f"`sidecar._choose_k.choose_k` (what `fit -k auto --train-results` runs) on the "
            f"{len(train)} train prompts of truncation {best['truncation']}, simulating an "
            f"S_val of {AUTO_N_VAL}: Area (mean ± std over repetitions) of routing held-out "
            "LLMs, by K; K-means routes all 11 LLMs (it reads no labels), the LearnedMap is "
            "trained without the held-out pool's labels. The chosen K is the smallest within "
            f"{TOLERANCE} of the best (bold). Areas of different maps are not comparable "
            "(different pools).",
            "",
            auto_k_table(auto),
            "",
        ]
    parts += ["### Checks", ""]
    for result in results.values():
        for label, block in result["by_n_val"].items():
            by_router: dict[str, list[int]] = {}
            for check in block["server_checks"]:
                tally = by_router.setdefault(check["router"], [0, 0, 0])
                tally[0] += sum(v["agree"] for v in check["lambdas"].values())
                tally[1] += sum(v["n"] for v in check["lambdas"].values())
                tally[2] += 1
                text = check["text_cluster_agreement"]
                if text is not None:
                    parts.append(
                        f"- {result['truncation']}, {check['router']}, N_val = {label}, seed "
                        f"{check['seed']}: {TEXT_CHECK} test prompts routed by text land in the "
                        f"cluster of their cached embedding: {text:.0%}."
                    )
            for router, (agree, n, runs) in by_router.items():
                parts.append(
                    f"- {result['truncation']}, {router}, N_val = {label}: server's own choice = "
                    f"sweep's choice on {agree}/{n} test decisions ({runs} seeds × "
                    f"{len(CHECK_LAMBDAS)} λ × every test prompt)."
                )
    parts += [
        "",
        "Runtime: "
        + ", ".join(
            f"{t} {v:.0f} s" for t, v in timings.items() if not t.endswith("_embedding_or_cache")
        )
        + " (embedding "
        + ", ".join(
            f"{t.split('_embedding')[0]} {v:.0f} s"
            for t, v in timings.items()
            if t.endswith("_embedding_or_cache")
        )
        + "; near 0 when the cache under bench/out/cache/ is warm).",
    ]
    if not quick:
        parts += [
            "",
            f"![deferral curves](deferral_curves.png) — `bench/deferral_curves.png`: "
            f"N_val = {labels[-1]}, seed 0, truncation {best['truncation']}.",
        ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=None, help="the RouterBench folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"one truncation, N_val={QUICK_N_VAL}, {QUICK_SEEDS} seeds, K={QUICK_K}, "
        f"K-NN k={QUICK_KNN_K}",
    )
    parser.add_argument(
        "--truncation",
        nargs="+",
        choices=TRUNCATIONS,
        default=None,
        help="strategies to run (default: all three; with --quick, the embedder's own)",
    )
    add_time_limit(parser, TIME_LIMIT_S)
    args = parser.parse_args(argv)
    with guarded(args.time_limit, "bench.quality"):
        return run(args)


def run(args: argparse.Namespace) -> int:
    folder = data_dir(args.data)
    train_path, test_path = folder / "train.jsonl", folder / "test.jsonl"
    if not (train_path.is_file() and test_path.is_file()):
        print(
            f"bench.quality: skipped, no RouterBench data at {folder} "
            "(pass --data DIR or set ROUTERBENCH_DIR to a folder with train.jsonl and test.jsonl)"
        )
        return 0
    if args.truncation:
        truncations = list(dict.fromkeys(args.truncation))
    elif args.quick:
        truncations = [Embedder.from_dir(default_embedder_dir()).truncation.partition(":")[0]]
    else:
        truncations = list(TRUNCATIONS)
    n_vals = (QUICK_N_VAL,) if args.quick else N_VALS
    seeds = QUICK_SEEDS if args.quick else SEEDS

    started = time.monotonic()
    models = sorted(read_rows(test_path)[0]["correct"])
    train, test = load_split(train_path, models), load_split(test_path, models)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    train_vectors: dict[str, npt.NDArray[np.float32]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for truncation in truncations:
            t0 = time.monotonic()
            log(f"== truncation {truncation}")
            (Path(tmp) / truncation).mkdir()
            ev = Evaluator(truncation, models, train, test, Path(tmp) / truncation)
            t_embed = time.monotonic() - t0
            selection = None
            if args.quick:
                choices = {select_label(n): dict(QUICK_CHOICE) for n in n_vals}
            else:
                selection = ev.choose_settings(K_GRID, LEARNED_K_GRID, KNN_KS, GRID_SEEDS)
                choices = selection["chosen"]
            result = ev.evaluate(choices, n_vals, seeds, keep_points_for=n_vals[-1])
            train_vectors[truncation] = ev.train_vectors
            result["truncation"] = ev.truncation
            result["distinct_test_vectors"] = ev.distinct_test_vectors()
            result["k_selection"] = selection
            result["server_runs"] = ev.runs
            results[truncation] = result
            timings[truncation] = time.monotonic() - t0
            timings[f"{truncation}_embedding_or_cache"] = t_embed
            log(f"   done in {timings[truncation]:.0f} s ({ev.runs} server runs)")
    label_all = list(next(iter(results.values()))["by_n_val"])[-1]
    winner = choose_truncation(results)
    auto = None
    if not args.quick:
        t0 = time.monotonic()
        auto = {}
        for kind in ("kmeans", "learned"):
            log(f"== fit -k auto ({kind}) on train, truncation {winner}")
            auto[kind] = choose_k(
                train_vectors[winner],
                train.correct,
                train.cost.mean(axis=0),
                n_val=AUTO_N_VAL,
                map_kind=kind,
                seed=0,
                progress=lambda line: log("   " + line),
            ).info()
        timings["fit_k_auto"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - started
    for t in results:
        results[t]["paired_vs_chosen"] = paired_vs(results, t, winner)
    if not args.quick:
        plot(results[winner], label_all, PLOT)
    for result in results.values():
        result["goals"] = goals(result)
    markdown = render(results, winner, args.quick, train, test, timings, auto)
    data = {
        "fit_k_auto": auto,
        "quick": args.quick,
        "data_dir": str(folder),
        "models": models,
        "lambdas": {"n": int(deferral.LAMBDAS.size), "min_positive": 1e-4, "max": 1e3},
        "winner": winner,
        "timings_s": timings,
        "results": results,
    }
    record("quality_quick" if args.quick else "quality", data, markdown)
    if not args.quick:
        print(f"drew {PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
