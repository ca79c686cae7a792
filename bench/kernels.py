"""The Numba routing kernels against a NumPy implementation of the same decision.

One decision is: nearest centroid (maximum dot product) for a D = 384
embedding, then the argmin over M models of psi[m, c] + λ·cost[m] / max
candidate cost, ties to the lower raw cost, then the lower index. We time
`sidecar._kernels.route` with N = 1 (what every Route pays) and a NumPy
reference that makes exactly the same
decision (checked on every query used), for K ∈ {16, 64, 256} clusters and
M ∈ {10, 50, 500} models, all candidates allowed, in this one process. Rounds
interleave every series (and alternate their order) so machine noise hits all
of them alike; each round times many back-to-back calls with
`time.perf_counter_ns`, and we report the median over rounds of the per-call
time. Per-call times include the Python call itself, as a caller pays it.

The batch (the same `route` kernel with N = 1,024 rows per call) is reported as ns per
decision, against a NumPy batch (one BLAS GEMM, default BLAS threads) and, to
separate blocking from threading, the same NumPy batch limited to 1 BLAS thread.

The LearnedMap kernel `route_soft` (N = 1) is timed in the same rounds on
the same problems, with θ = 20·centroids and b = 0: a softmax over K logits
and Σ_k Φ_k Ψ[m, k] for every model instead of one nearest centroid.

Goals: single decision at K=64, M=50 ≤ 2 µs and ≥ 3× faster than NumPy;
batch ≤ 0.5 µs per decision at K=64, M=50; the soft single decision within
2× of the hard one at K=64, M=50.

    python -m bench.kernels [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from bench._common import record, verdict
from sidecar import _kernels

DIM = 384
KS = (16, 64, 256)
MS = (10, 50, 500)
HEADLINE = (64, 50)
BATCH = 1024
LAM = 0.2
N_QUERIES = 256  # distinct embeddings cycled through by the single-decision loops
GOAL_SINGLE_US = 2.0
GOAL_SPEEDUP = 3.0
GOAL_BATCH_US = 0.5
GOAL_SOFT_RATIO = 2.0
SOFT_TEMPERATURE = 20.0

# Target wall time of one timed block, in ns: long enough that perf_counter_ns
# resolution and the loop set-up vanish, short enough that many rounds fit.
BLOCK_NS = {"full": 1_000_000, "quick": 500_000}
# Many short blocks rather than a few long ones: on a shared machine a block that
# loses its core to another process is an outlier the median drops.
ROUNDS = {"full": 101, "quick": 25}
# A batch call is already 0.3-15 ms, so it needs fewer rounds for a stable median.
BATCH_ROUNDS = {"full": 41, "quick": 9}


@dataclass(frozen=True)
class Problem:
    k: int
    m: int
    centroids: np.ndarray  # float32 (K, D), unit rows
    psi: np.ndarray  # float32 (M, K)
    cost: np.ndarray  # float32 (M,)
    mask: np.ndarray  # bool (M,)
    queries: np.ndarray  # float32 (N_QUERIES, D), unit rows
    batch: np.ndarray  # float32 (BATCH, D), unit rows


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, DIM)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return np.ascontiguousarray(a)


def make_problem(k: int, m: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    centroids = unit_rows(rng, k)

    # Queries near a centroid, as real prompts are, so the nearest one is clear-cut
    # for most rows but every cluster gets used.
    def near(n: int) -> np.ndarray:
        base = centroids[rng.integers(0, k, n)] + 0.6 * unit_rows(rng, n)
        return np.ascontiguousarray(base / np.linalg.norm(base, axis=1, keepdims=True))

    return Problem(
        k=k,
        m=m,
        centroids=centroids,
        psi=rng.uniform(0.05, 0.6, (m, k)).astype(np.float32),
        cost=rng.uniform(0.1, 10.0, m).astype(np.float32),
        mask=np.ones(m, dtype=np.bool_),
        queries=near(N_QUERIES).astype(np.float32),
        batch=near(BATCH).astype(np.float32),
    )


def tiny_problem() -> Problem:
    rng = np.random.default_rng(0)
    x = np.ones((1, 4), dtype=np.float32) / 2
    return Problem(
        k=1,
        m=1,
        centroids=x.copy(),
        psi=np.full((1, 1), 0.5, dtype=np.float32),
        cost=np.ones(1, dtype=np.float32),
        mask=np.ones(1, dtype=np.bool_),
        queries=np.repeat(x, N_QUERIES, axis=0) + rng.random((N_QUERIES, 4), dtype=np.float32),
        batch=np.repeat(x, BATCH, axis=0),
    )


# --------------------------------------------------------------------------- NumPy reference


def numpy_route_one(
    x: np.ndarray,
    centroids: np.ndarray,
    psi: np.ndarray,
    cost: np.ndarray,
    lam: float,
    mask: np.ndarray,
    out_scores: np.ndarray,
) -> tuple[int, int]:
    """One decision in plain NumPy, scores formed in float64 and stored as float32."""
    cluster = int(np.argmax(centroids @ x))
    candidate_costs = cost[mask]
    if candidate_costs.size == 0:
        out_scores[:] = np.inf
        return cluster, -1
    max_cost = float(candidate_costs.max())
    term = lam * (cost.astype(np.float64) / max_cost) if max_cost > 0.0 else 0.0
    out_scores[:] = psi[:, cluster] + term
    out_scores[~mask] = np.inf
    chosen = int(np.argmin(out_scores))
    ties = np.flatnonzero(out_scores == out_scores[chosen])
    if ties.size > 1:  # lower raw cost, then lower index (argmin keeps the first)
        chosen = int(ties[np.argmin(cost[ties])])
    return cluster, chosen


def numpy_route_batch(
    X: np.ndarray,
    centroids: np.ndarray,
    psi: np.ndarray,
    cost: np.ndarray,
    lam: float,
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of decisions in NumPy: one GEMM for the clusters, one gather for Ψ."""
    clusters = np.argmax(X @ centroids.T, axis=1)
    candidate_costs = cost[mask]
    if candidate_costs.size == 0:
        return clusters, np.full(X.shape[0], -1, dtype=np.int64)
    max_cost = float(candidate_costs.max())
    term = lam * (cost.astype(np.float64) / max_cost) if max_cost > 0.0 else np.zeros(cost.size)
    scores = (psi.T[clusters] + term).astype(np.float32)
    scores[:, ~mask] = np.inf
    # Visiting models in (cost, index) order makes argmin's first-hit rule the tie rule.
    order = np.argsort(cost, kind="stable")
    chosen = order[np.argmin(scores[:, order], axis=1)]
    return clusters, chosen


# --------------------------------------------------------------------------- timing


Timer = Callable[[], tuple[int, int]]


def single_loop(fn: Callable[..., Any], p: Problem, calls: int) -> Timer:
    """A closure timing `calls` decisions over the cycled queries.

    It returns (wall ns, this thread's CPU ns): on a shared machine the two differ
    by the time the thread waited for a core.
    """
    centroids, psi, cost, mask = p.centroids, p.psi, p.cost, p.mask
    if fn is _kernels.route_soft:
        rows = [p.queries[i : i + 1] for i in range(N_QUERIES)]
        xs_soft = [rows[i % N_QUERIES] for i in range(calls)]
        theta = np.ascontiguousarray(centroids * np.float32(SOFT_TEMPERATURE))
        bias = np.zeros(p.k, dtype=np.float32)
        lams1 = np.full(1, LAM)
        masks1 = np.ascontiguousarray(mask[None, :])
        weights = np.empty((1, p.k), dtype=np.float64)
        scores1 = np.empty((1, p.m), dtype=np.float32)
        clusters1 = np.empty(1, dtype=np.int64)
        chosen1 = np.empty(1, dtype=np.int64)

        def run_soft() -> tuple[int, int]:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            for x in xs_soft:
                fn(x, theta, bias, psi, cost, lams1, masks1, weights, scores1, clusters1, chosen1)
            return time.perf_counter_ns() - t0, time.thread_time_ns() - c0

        return run_soft
    if fn is _kernels.route or fn is noop:
        # The kernel's own calling convention for one Route: a 1 x D row, N = 1 buffers.
        rows = [p.queries[i : i + 1] for i in range(N_QUERIES)]
        xs1 = [rows[i % N_QUERIES] for i in range(calls)]
        lams = np.full(1, LAM)
        masks = np.ascontiguousarray(mask[None, :])
        scores = np.empty((1, p.m), dtype=np.float32)
        clusters = np.empty(1, dtype=np.int64)
        chosen = np.empty(1, dtype=np.int64)

        def run1() -> tuple[int, int]:
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            for x in xs1:
                fn(x, centroids, psi, cost, lams, masks, scores, clusters, chosen)
            return time.perf_counter_ns() - t0, time.thread_time_ns() - c0

        return run1
    xs = [p.queries[i % N_QUERIES] for i in range(calls)]
    out = np.empty(p.m, dtype=np.float32)

    def run() -> tuple[int, int]:
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        for x in xs:
            fn(x, centroids, psi, cost, LAM, mask, out)
        return time.perf_counter_ns() - t0, time.thread_time_ns() - c0

    return run


def batch_loop(
    fn: Callable[..., Any],
    p: Problem,
    calls: int,
    limit: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> Timer:
    centroids, psi, cost, mask, X = p.centroids, p.psi, p.cost, p.mask, p.batch
    n = X.shape[0]
    kernel_args = (
        np.full(n, LAM),
        np.ascontiguousarray(np.broadcast_to(mask, (n, p.m))),
        np.empty((n, p.m), dtype=np.float32),
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.int64),
    )
    args = (X, centroids, psi, cost, *kernel_args) if fn is _kernels.route else None

    def run() -> tuple[int, int]:
        with limit() if limit is not None else contextlib.nullcontext():
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                if args is not None:
                    fn(*args)
                else:
                    fn(X, centroids, psi, cost, LAM, mask)
            return time.perf_counter_ns() - t0, time.thread_time_ns() - c0

    return run


def noop(*_: object) -> None:
    """The Python loop and call overhead alone, for scale."""


def calibrate(make: Callable[[int], Timer], block_ns: int) -> tuple[int, int]:
    """Calls per block so one block takes about block_ns; returns (calls, per-call ns)."""
    calls = 1
    while True:
        elapsed = min(make(calls)()[0] for _ in range(3))
        if elapsed >= block_ns / 4 or calls >= 1 << 20:
            per_call = elapsed / calls
            return max(1, int(block_ns / per_call)), int(per_call)
        calls *= 4


@dataclass
class Series:
    name: str
    decisions_per_call: int
    run: Timer
    calls: int
    per_decision_ns: list[float]
    cpu_per_decision_ns: list[float] = field(default_factory=list)


def one_thread_blas() -> Callable[[], contextlib.AbstractContextManager[Any]] | None:
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        return None
    return lambda: threadpool_limits(limits=1, user_api="blas")


def blas_info() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "architecture")
    return [{k: v for k, v in info.items() if k in keep} for info in threadpool_info()]


def check_agreement(p: Problem) -> dict[str, int]:
    """Numba and NumPy decisions on every query used, single and batch forms."""
    out_a = np.empty((1, p.m), dtype=np.float32)
    out_b = np.empty(p.m, dtype=np.float32)
    lam1, mask1 = np.full(1, LAM), np.ascontiguousarray(p.mask[None, :])
    ca, ka = np.empty(1, dtype=np.int64), np.empty(1, dtype=np.int64)
    single = 0
    for i in range(len(p.queries)):
        x = p.queries[i : i + 1]
        _kernels.route(x, p.centroids, p.psi, p.cost, lam1, mask1, out_a, ca, ka)
        b = numpy_route_one(x[0], p.centroids, p.psi, p.cost, LAM, p.mask, out_b)
        single += int((int(ca[0]), int(ka[0])) == b and np.array_equal(out_a[0], out_b))
    n = p.batch.shape[0]
    ca, ka = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    _kernels.route(
        p.batch,
        p.centroids,
        p.psi,
        p.cost,
        np.full(n, LAM),
        np.ascontiguousarray(np.broadcast_to(p.mask, (n, p.m))),
        np.empty((n, p.m), dtype=np.float32),
        ca,
        ka,
    )
    cb, kb = numpy_route_batch(p.batch, p.centroids, p.psi, p.cost, LAM, p.mask)
    return {
        "single_agree": single,
        "single_total": len(p.queries),
        "batch_agree": int(np.sum((ca == cb) & (ka == kb))),
        "batch_total": BATCH,
    }


def build_series(problems: Sequence[Problem], mode: str) -> dict[tuple[int, int], list[Series]]:
    block = BLOCK_NS[mode]
    limit1 = one_thread_blas()
    out: dict[tuple[int, int], list[Series]] = {}
    for p in problems:
        single: list[tuple[str, Callable[..., Any]]] = [
            ("numba_single", _kernels.route),
            ("numpy_single", numpy_route_one),
            ("numba_soft_single", _kernels.route_soft),
        ]
        series = []
        for name, fn in single:
            calls, _ = calibrate(functools.partial(single_loop, fn, p), block)
            series.append(Series(name, 1, single_loop(fn, p, calls), calls, []))
        batch: list[tuple[str, Callable[..., Any], Any]] = [
            ("numba_batch", _kernels.route, None),
            ("numpy_batch", numpy_route_batch, None),
        ]
        if limit1 is not None:
            batch.append(("numpy_batch_1thread", numpy_route_batch, limit1))
        for name, fn, limit in batch:
            calls, _ = calibrate(functools.partial(batch_loop, fn, p, limit=limit), block)
            series.append(Series(name, BATCH, batch_loop(fn, p, calls, limit), calls, []))
        out[(p.k, p.m)] = series
    return out


def interleaved(
    series: dict[tuple[int, int], list[Series]], rounds: int, batch_rounds: int
) -> None:
    """Every series once per round; batch series (one call is ms) only in the first batch_rounds."""
    flat = [s for group in series.values() for s in group]
    for r in range(rounds):
        due = [s for s in flat if s.decisions_per_call == 1 or r < batch_rounds]
        for s in due if r % 2 == 0 else reversed(due):
            wall, cpu = s.run()
            s.per_decision_ns.append(wall / (s.calls * s.decisions_per_call))
            s.cpu_per_decision_ns.append(cpu / (s.calls * s.decisions_per_call))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------- report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    rounds = args.rounds or ROUNDS[mode]
    batch_rounds = min(rounds, BATCH_ROUNDS[mode])

    problems = [make_problem(k, m, seed=1000 * k + m) for k in KS for m in MS]
    agreement = {f"K{p.k}_M{p.m}": check_agreement(p) for p in problems}
    # An empty-bodied Python function with the same arguments: the floor any call pays.
    p0 = problems[0]
    noop_calls, _ = calibrate(lambda c: single_loop(noop, p0, c), BLOCK_NS[mode])
    series = build_series(problems, mode)
    floor = Series("python_call_floor", 1, single_loop(noop, p0, noop_calls), noop_calls, [])
    # route (N = 1) on a 1-model, 1-cluster, 4-dimension problem: Numba's dispatch cost alone.
    tiny = tiny_problem()
    tiny_calls, _ = calibrate(lambda c: single_loop(_kernels.route, tiny, c), BLOCK_NS[mode])
    dispatch = Series(
        "numba_dispatch_floor", 1, single_loop(_kernels.route, tiny, tiny_calls), tiny_calls, []
    )
    series[(0, 0)] = [floor, dispatch]
    with gc_paused():
        interleaved(series, rounds, batch_rounds)
    del series[(0, 0)]

    def med(s: Series) -> float:
        return statistics.median(s.per_decision_ns)

    results: dict[str, dict[str, Any]] = {}
    for (k, m), group in series.items():
        by = {s.name: s for s in group}
        results[f"K{k}_M{m}"] = {
            s.name: {
                "median_ns": med(s),
                "p10_ns": float(np.percentile(s.per_decision_ns, 10)),
                "p90_ns": float(np.percentile(s.per_decision_ns, 90)),
                "min_ns": min(s.per_decision_ns),
                "max_ns": max(s.per_decision_ns),
                # main thread only: for the BLAS-threaded series this leaves out the workers
                "cpu_median_ns": statistics.median(s.cpu_per_decision_ns),
                "calls_per_round": s.calls,
                "decisions_per_call": s.decisions_per_call,
            }
            for s in group
        }
        results[f"K{k}_M{m}"]["single_speedup"] = med(by["numpy_single"]) / med(by["numba_single"])
        results[f"K{k}_M{m}"]["batch_speedup"] = med(by["numpy_batch"]) / med(by["numba_batch"])
        results[f"K{k}_M{m}"]["soft_ratio"] = med(by["numba_soft_single"]) / med(by["numba_single"])

    head = results[f"K{HEADLINE[0]}_M{HEADLINE[1]}"]
    single_us = head["numba_single"]["median_ns"] / 1e3
    speedup = head["single_speedup"]
    batch_us = head["numba_batch"]["median_ns"] / 1e3
    numpy_batch_us = head["numpy_batch"]["median_ns"] / 1e3
    goals = {
        "single_us": {
            "value": single_us,
            "limit": GOAL_SINGLE_US,
            "pass": single_us <= GOAL_SINGLE_US,
        },
        "single_speedup": {
            "value": speedup,
            "limit": GOAL_SPEEDUP,
            "pass": speedup >= GOAL_SPEEDUP,
        },
        "batch_us_per_decision": {
            "value": batch_us,
            "limit": GOAL_BATCH_US,
            "pass": batch_us <= GOAL_BATCH_US,
        },
        "soft_single_ratio": {
            "value": head["soft_ratio"],
            "limit": GOAL_SOFT_RATIO,
            "pass": head["soft_ratio"] <= GOAL_SOFT_RATIO,
        },
    }

    def spread(series_name: str) -> str:
        r = head[series_name]
        return f"rounds p10–p90 {r['p10_ns'] / 1e3:.2f}–{r['p90_ns'] / 1e3:.2f} µs"

    floor_ns = med(floor)
    dispatch_ns = med(dispatch)
    # Wall time well above the thread's own CPU time means it waited for a core.
    waited = {
        name: head[name]["median_ns"] / max(head[name]["cpu_median_ns"], 1.0)
        for name in ("numba_single", "numba_batch")
    }
    busy_note = (
        ""
        if max(waited.values()) < 1.15
        else (
            "\n\nThe machine was busy: at the goal point the median wall time is "
            f"{waited['numba_single']:.2f}× (single) and {waited['numba_batch']:.2f}× (batch) "
            'the thread\'s own CPU time ("on-CPU" columns), i.e. the benchmark waited for '
            "a core. Verdicts use wall time; rerun on a quiet machine before trusting a "
            "FAIL that the on-CPU column would pass."
        )
    )
    agree_ok = all(
        a["single_agree"] == a["single_total"] and a["batch_agree"] == a["batch_total"]
        for a in agreement.values()
    )

    def us(x: float) -> str:
        return f"{x / 1e3:.2f}"

    single_rows = []
    batch_rows = []
    for k, m in series:
        r = results[f"K{k}_M{m}"]
        single_rows.append(
            f"| {k} | {m} | {us(r['numba_single']['median_ns'])} "
            f"| {us(r['numba_single']['cpu_median_ns'])} "
            f"| {us(r['numpy_single']['median_ns'])} | {r['single_speedup']:.1f}× "
            f"| {us(r['numba_soft_single']['median_ns'])} | {r['soft_ratio']:.2f}× |"
        )
        one = r.get("numpy_batch_1thread")
        batch_rows.append(
            f"| {k} | {m} | {r['numba_batch']['median_ns']:.0f} "
            f"| {r['numba_batch']['cpu_median_ns']:.0f} "
            f"| {r['numpy_batch']['median_ns']:.0f} "
            f"| {one['median_ns'] if one else float('nan'):.0f} "
            f"| {r['batch_speedup']:.2f}× |"
        )
    blas = blas_info()
    blas_text = (
        ", ".join(
            f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads)"
            for b in blas
        )
        or "unknown"
    )
    batch_ok = goals["batch_us_per_decision"]["pass"]
    m_min = min(MS)  # fewest models: the batch time is almost all nearest-centroid work
    # On-CPU time, so a batch call that lost its core to another process does not skew it.
    per_centroid = {k: results[f"K{k}_M{m_min}"]["numba_batch"]["cpu_median_ns"] / k for k in KS}
    per_centroid_text = ", ".join(f"K={k}: {v:.0f} ns" for k, v in per_centroid.items())
    why_batch = (
        ""
        if batch_ok
        else (
            "\n\nWhy batch misses: `route` runs the single decision's loop row by row, so each "
            "decision computes K dot products of D = 384 through `_dot4`, which loads every "
            "centroid element once per row and uses it for a single multiply-add (5 vector "
            "loads per 4 FMAs: one of x, one of each of 4 centroid rows), then reduces "
            "each group of 4 horizontally. That is bound by load throughput on one core, "
            "not by cache size: the cost per centroid is about the same whether the "
            f"centroids fit in L1 or not (on-CPU, M={m_min}: {per_centroid_text} per centroid "
            f"per decision), so at K={HEADLINE[0]} a decision costs about "
            f"{HEADLINE[0]} × {per_centroid[HEADLINE[0]]:.0f} ns. NumPy's GEMM "
            "(`X @ centroids.T`) blocks in registers so each loaded value feeds several "
            "rows (see the 1-thread column), and can use both cores; with BLAS threads it "
            f"took {numpy_batch_us:.2f} µs per decision in this run (a GEMM split over both "
            "cores waits for its slower half, so on a busy machine the threaded figure "
            "swings far more than the 1-thread one). What would fix it (the kernels are "
            "not this bench's to change): register-block rows as well as centroids in "
            "`route` (e.g. 4 rows × 4 centroids per pass, so each loaded centroid "
            "vector feeds 4 FMAs), keeping each dot product's reduction order so decisions "
            "stay bit-identical to N = 1 calls (tests/test_kernels.py pins that), and "
            "split rows over the cores with `prange` (`parallel=True`). Computing clusters "
            "with a BLAS GEMM would also be fast but would give up bit-identity with "
            "N = 1 calls on near-ties."
        )
    )
    single_ok = goals["single_us"]["pass"]
    why_single = (
        ""
        if single_ok
        else (
            f"\n\nSingle decision at K={HEADLINE[0]}: {dispatch_ns:.0f} ns of the "
            f"{single_us:.2f} µs is Numba's dispatch of 9 arguments (see above); the rest is "
            "the nearest-centroid loop (see the batch note below). "
            "Fewer array arguments per call (Numba type-checks each one; e.g. Ψ, costs and "
            "mask packed in one array) would buy back part of it; the kernels are not this "
            "bench's to change."
        )
    )
    markdown = (
        f"{rounds} interleaved rounds (order alternating; batch series in the first "
        f"{batch_rounds}), each timing ~"
        f"{BLOCK_NS[mode] / 1e6:.1f} ms of back-to-back calls per series; medians over rounds "
        f"of per-call (per-decision) time. D = {DIM}, λ = {LAM}, all models candidates, "
        f"{N_QUERIES} distinct queries cycled. numba {numba.__version__}, numpy "
        f"{np.__version__}, BLAS: {blas_text}. A no-op Python function with the same 9 "
        f"arguments costs {floor_ns:.0f} ns per call in the same loop, and `route` (N = 1) on a "
        f"1-model, 1-cluster, 4-dimension problem (Numba's dispatch: type-checking 9 "
        f"arguments) {dispatch_ns:.0f} ns; both are included in every single-decision time "
        'below. "On-CPU" is the median of the timing thread\'s own CPU time '
        "(`time.thread_time_ns`), which excludes time spent waiting for a core.\n\n"
        "Single decision (`route` with N = 1 vs a NumPy implementation of the same decision):\n\n"
        "| K | M | Numba µs | Numba on-CPU µs | NumPy µs | speed-up | soft µs | soft/hard |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "\n".join(single_rows)
        + f"\n\nBatch of {BATCH} (`route` with N = {BATCH} vs NumPy GEMM + gather), "
        "ns per decision:\n\n"
        "| K | M | Numba | Numba on-CPU | NumPy (BLAS threads) | NumPy (1 BLAS thread) "
        "| NumPy/Numba |\n|---|---|---|---|---|---|---|\n" + "\n".join(batch_rows) + "\n\n"
        f"Decisions agree between Numba and NumPy on every query (clusters, choices and "
        f"stored scores): {'yes' if agree_ok else 'NO, see JSON'}.\n\n"
        f"Goals at K={HEADLINE[0]}, M={HEADLINE[1]}:\n\n"
        f"- single decision ≤ {GOAL_SINGLE_US:.0f} µs: {verdict(goals['single_us']['pass'])} "
        f"({single_us:.2f} µs; {spread('numba_single')})\n"
        f"- single decision ≥ {GOAL_SPEEDUP:.0f}× faster than NumPy: "
        f"{verdict(goals['single_speedup']['pass'])} ({speedup:.1f}×)\n"
        f"- batch ≤ {GOAL_BATCH_US} µs per decision: {verdict(batch_ok)} "
        f"({batch_us:.2f} µs, {spread('numba_batch')}; NumPy batch {numpy_batch_us:.2f} µs)\n"
        f"- LearnedMap soft single decision (`route_soft`, θ = {SOFT_TEMPERATURE:g}·centroids) "
        f"≤ {GOAL_SOFT_RATIO:.0f}× the hard one: {verdict(goals['soft_single_ratio']['pass'])} "
        f"({head['numba_soft_single']['median_ns'] / 1e3:.2f} µs, "
        f"{head['soft_ratio']:.2f}×; {spread('numba_soft_single')})"
        + busy_note
        + why_single
        + why_batch
    )
    record(
        "kernels",
        {
            "mode": mode,
            "rounds": rounds,
            "batch_rounds": batch_rounds,
            "dim": DIM,
            "batch": BATCH,
            "lam": LAM,
            "python_call_floor_ns": floor_ns,
            "numba_dispatch_floor_ns": dispatch_ns,
            "blas": blas,
            "numba": numba.__version__,
            "numpy": np.__version__,
            "results": results,
            "agreement": agreement,
            "goals": goals,
        },
        markdown,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
