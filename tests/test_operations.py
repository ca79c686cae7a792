"""Load, faults and shutdown with real processes: a bounded soak and SIGTERM under load."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from _processes import CONVERGE, PROMPTS, RPC_TIMEOUT, STARTER_ITEMS, Proc, Sidecars
from uniroute.v1 import registry_pb2, router_pb2

from sidecar._clustering import fit_clustering, load_clustering
from sidecar._jsonl import read_items, read_prompts
from sidecar._readiness import wait_until
from sidecar._server import starter_artifact_dir
from sidecar._wire import clustering_spec

SOAK_SECONDS = float(os.environ.get("UNIROUTE_SOAK_SECONDS", "60"))


def rss_mb(proc: Proc) -> float:
    for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def caught_up(followers: list[Proc], revision: int) -> bool:
    """Asserts every follower is at revision (the message names the one that is not)."""
    for follower in followers:
        assert follower.status().revision == revision, follower.name
    return True


def results_request(name: str, skill: float, rng: random.Random) -> Any:
    """Results-based, so the model survives a re-clustering with a recomputed Ψ."""
    return registry_pb2.RegisterModelRequest(
        name=name,
        cost=rng.uniform(0.1, 10.0),
        allow_update=True,
        results=registry_pb2.ValidationResults(
            results=[
                registry_pb2.ValidationResult(item_id=i, score=float(rng.random() < skill))
                for i, _ in STARTER_ITEMS
            ]
        ),
    )


def second_clustering(embedder: Any) -> Any:
    """A K=6 refit of the starter prompts: the same validation ids, other clusters."""
    starter = starter_artifact_dir()
    train = read_prompts(starter / "train.jsonl")
    ids, val = read_items(starter / "val.jsonl")
    return fit_clustering(
        embedder.embed_batch(train).vectors,
        ids,
        embedder.embed_batch(val).vectors,
        k=6,
        embedder_fingerprint=embedder.fingerprint,
        seed=3,
    )


@pytest.mark.slow
def test_soak_routes_never_fail_and_followers_converge(sidecars: Sidecars, embedder: Any) -> None:
    leader = sidecars.leader("leader")
    followers = [sidecars.follower(f"follower{i}", leader) for i in range(3)]
    sidecars.wait_serving(leader, *followers)
    clusterings = [load_clustering(starter_artifact_dir()), second_clustering(embedder)]
    rng = random.Random(7)
    # The model set at every revision, written only by the single writer below.
    models_at: dict[int, frozenset[str]] = {}
    live: set[str] = set()
    for i in range(3):
        name = f"base-{i}"
        models_at[leader.registry.RegisterModel(results_request(name, 0.7, rng)).revision] = (
            frozenset(live | {name})
        )
        live.add(name)
    wait_until(lambda: caught_up(followers, max(models_at)), timeout=CONVERGE)

    stop = threading.Event()
    failures: list[str] = []
    answers: list[tuple[int, str]] = []
    writes = {"register": 0, "deregister": 0, "recluster": 0}

    def router_loop(proc: Proc, seed: int) -> None:
        local = random.Random(seed)
        while not stop.is_set():
            try:
                response = proc.route(prompt=local.choice(PROMPTS))
                answers.append((response.revision, response.model))
            except grpc.RpcError as exc:
                failures.append(f"{proc.name}: {exc.code().name} {exc.details()}")

    def writer_loop() -> None:
        n, which = 0, 0
        next_recluster = time.monotonic() + SOAK_SECONDS / 3
        while not stop.is_set():
            if time.monotonic() >= next_recluster:
                which = 1 - which
                spec = clustering_spec(clusterings[which])
                got = leader.registry.ActivateClustering(
                    registry_pb2.ActivateClusteringRequest(clustering=spec), timeout=RPC_TIMEOUT
                )
                models_at[got.revision] = frozenset(live)
                writes["recluster"] += 1
                next_recluster += SOAK_SECONDS / 3
            elif len(live) > 3 and rng.random() < 0.4:
                name = rng.choice(sorted(live - {"base-0", "base-1", "base-2"}))
                revision = leader.registry.DeregisterModel(
                    registry_pb2.DeregisterModelRequest(name=name), timeout=RPC_TIMEOUT
                ).revision
                live.discard(name)
                models_at[revision] = frozenset(live)
                writes["deregister"] += 1
            else:
                name = f"m-{n}"
                n += 1
                revision = leader.registry.RegisterModel(
                    results_request(name, rng.uniform(0.3, 0.9), rng), timeout=RPC_TIMEOUT
                ).revision
                live.add(name)
                models_at[revision] = frozenset(live)
                writes["register"] += 1
            time.sleep(0.05)

    rss_before = {p.name: rss_mb(p) for p in (leader, *followers)}
    threads = [threading.Thread(target=writer_loop)]
    threads += [
        threading.Thread(target=router_loop, args=(proc, seed))
        for seed, proc in enumerate([leader, *followers, followers[0]])
    ]
    for t in threads:
        t.start()
    time.sleep(SOAK_SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    growth = {p.name: round(rss_mb(p) - rss_before[p.name]) for p in (leader, *followers)}
    print(
        f"soak {SOAK_SECONDS:.0f}s: {len(answers)} routes, {len(failures)} failed, "
        f"writes {writes}, "
        f"final revision {leader.status().revision}, RSS growth MB {growth}"
    )
    assert failures == [], failures[:5]
    assert len(answers) > 100
    assert writes["register"] > 10 and writes["deregister"] > 0 and writes["recluster"] >= 2
    wrong = [(rev, model) for rev, model in answers if model not in models_at.get(rev, ())]
    assert wrong == [], f"{len(wrong)} answers named a model not registered at their revision"

    final = leader.status()
    wait_until(lambda: caught_up(followers, final.revision), timeout=CONVERGE)
    leader_view = [(m.name, list(m.error_rates)) for m in leader.models().models]
    for follower in followers:
        assert [(m.name, list(m.error_rates)) for m in follower.models().models] == leader_view
        assert follower.status().clustering_version == final.clustering_version
    for proc in (leader, *followers):
        grown = rss_mb(proc) - rss_before[proc.name]
        assert grown < 150, f"{proc.name} RSS grew {grown:.0f} MB during the soak"


def test_sigterm_under_load_drops_no_accepted_call(sidecars: Sidecars) -> None:
    leader = sidecars.leader("leader")
    sidecars.wait_serving(leader)
    leader.registry.RegisterModel(
        registry_pb2.RegisterModelRequest(
            name="only", cost=1.0, profile=registry_pb2.ErrorProfile(error_rates=[0.2] * 12)
        )
    )
    outcomes: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with grpc.insecure_channel(leader.address) as channel:
            from uniroute.v1 import router_pb2_grpc

            stub = router_pb2_grpc.RouterStub(channel)
            while not stop.is_set():
                try:
                    stub.Route(router_pb2.RouteRequest(prompt=PROMPTS[0]), timeout=10)
                    outcome = "ok"
                except grpc.RpcError as exc:
                    outcome = exc.code().name + ": " + str(exc.details())
                with lock:
                    outcomes.append(outcome)
                if outcome != "ok":
                    return

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: len(outcomes) >= 30, timeout=CONVERGE)
    sidecars.stop(leader)  # SIGTERM; asserts a clean exit 0
    stop.set()
    for t in threads:
        t.join(timeout=30)
    errors = {o.split(":")[0] for o in outcomes if o != "ok"}
    # Calls that reach the socket after shutdown began are refused: UNAVAILABLE, or
    # CANCELLED when gRPC had read them but never handed them to the servicer.
    assert errors <= {"UNAVAILABLE", "CANCELLED"}, [o for o in outcomes if o != "ok"]
    assert outcomes.count("ok") > 30
    log = leader.log.read_text()
    assert "received SIGTERM" in log
    # Every call the servicer accepted finished within the grace period.
    stopped = re.search(r"stopped: (\d+) call\(s\) accepted, (\d+) finished, (\d+) cut off", log)
    assert stopped is not None, log
    accepted, finished, cut_off = map(int, stopped.groups())
    assert cut_off == 0 and accepted == finished
    assert finished >= outcomes.count("ok")
