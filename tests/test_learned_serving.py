"""A LearnedMap served for real: fit -> serve -> register -> route, Watch to a follower,
and a re-clustering from K-means to learned, over real sockets and processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import CODE_PROMPT, CODE_TASKS, COOK_DISHES, COOK_PROMPT, two_topic_prompts
from uniroute.v1 import registry_pb2, router_pb2

from sidecar._clustering import load_clustering, save_clustering
from sidecar._learned_map import fit_learned_clustering
from sidecar._readiness import wait_until
from sidecar._wire import clustering_spec

SIDECAR = [sys.executable, "-m", "sidecar._cli"]
PROMPTS = [
    CODE_PROMPT,
    COOK_PROMPT,
    "How do I sort a dictionary by value in Python?",
    "What wine goes with a mushroom risotto?",
    "Explain recursion with a short example in Python, then bake a cake.",
]


def train_labels() -> tuple[list[str], list[str], dict[str, dict[str, float]]]:
    """Training prompts with ids; training LLMs 'coder' (right on code) and 'chef' (cooking)."""
    train, _ = two_topic_prompts()
    ids = [f"t{i}" for i in range(len(train))]
    n_code = 2 * len(CODE_TASKS)  # two_topic_prompts puts the code prompts first
    assert len(train) == n_code + 2 * len(COOK_DISHES)
    coder = {i: float(row < n_code) for row, i in enumerate(ids)}
    chef = {i: 1.0 - s for i, s in coder.items()}
    return ids, train, {"coder": coder, "chef": chef}


@pytest.fixture(scope="module")
def learned_artifact(embedder, tmp_path_factory) -> Path:
    ids, train, results = train_labels()
    _, val = two_topic_prompts()
    scores = np.array([[results["chef"][i], results["coder"][i]] for i in ids])
    clustering, _ = fit_learned_clustering(
        embedder.embed_batch(train).vectors,
        scores,
        [i for i, _, _ in val],
        embedder.embed_batch([p for _, p, _ in val]).vectors,
        k=2,
        embedder_fingerprint=embedder.fingerprint,
        seed=0,
    )
    out = tmp_path_factory.mktemp("learned")
    save_clustering(clustering, out)
    return out


def register(client, name, topic, cost):
    from _helpers import topic_results

    client.registry.RegisterModel(
        registry_pb2.RegisterModelRequest(
            name=name,
            cost=cost,
            results=registry_pb2.ValidationResults(results=topic_results(topic)),
        )
    )


def routes(client) -> list[tuple[str, int, list[tuple[str, float, float]]]]:
    out = []
    for prompt in PROMPTS:
        for lam in (0.0, 0.3, 5.0):
            r = client.router.Route(router_pb2.RouteRequest(prompt=prompt, cost_weight=lam))
            out.append(
                (r.model, r.cluster, [(s.model, s.expected_error, s.score) for s in r.scores])
            )
    return out


def test_a_follower_receives_the_learned_map_over_watch_and_routes_identically(
    make_sidecar, connect, learned_artifact, tmp_path
):
    leader = make_sidecar(artifact_dir=learned_artifact, db_path=tmp_path / "leader.db")
    lc = connect(leader.port)
    register(lc, "coder", "code", 10.0)
    register(lc, "chef", "cook", 8.0)
    register(lc, "coin", None, 0.5)
    follower = make_sidecar(follow=f"127.0.0.1:{leader.port}", db_path=tmp_path / "f.db")
    fc = connect(follower.port)
    wait_until(lambda: fc.registry.GetStatus(registry_pb2.GetStatusRequest()).model_count == 3)
    assert follower.tables.current.soft and leader.tables.current.soft
    clustering = fc.registry.GetClustering(registry_pb2.GetClusteringRequest())
    assert clustering.map_kind == registry_pb2.MAP_KIND_LEARNED
    assert clustering.version == load_clustering(learned_artifact).version
    assert routes(fc) == routes(lc)  # models, clusters, expected errors and scores
    assert lc.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT)).model == "coder"
    assert lc.router.Route(router_pb2.RouteRequest(prompt=COOK_PROMPT)).model == "chef"
    # The expected error is the soft mixture, strictly between the clusters' Ψ.
    psi = leader.tables.current.psi[leader.tables.current.index["coder"]]
    best = lc.router.Route(router_pb2.RouteRequest(prompt=PROMPTS[4], cost_weight=0.0))
    coder = next(s for s in best.scores if s.model == "coder")
    assert psi.min() <= coder.expected_error <= psi.max()


def test_reclustering_from_k_means_to_learned_reaches_a_follower_in_one_revision(
    make_sidecar, connect, topic_artifact, learned_artifact, tmp_path
):
    leader = make_sidecar(artifact_dir=topic_artifact, db_path=tmp_path / "leader.db")
    lc = connect(leader.port)
    register(lc, "coder", "code", 10.0)
    register(lc, "chef", "cook", 8.0)
    follower = make_sidecar(follow=f"127.0.0.1:{leader.port}", db_path=tmp_path / "f.db")
    fc = connect(follower.port)
    status = lambda: fc.registry.GetStatus(registry_pb2.GetStatusRequest())  # noqa: E731
    wait_until(lambda: status().model_count == 2)
    before = status().applied_change_set_count
    learned = load_clustering(learned_artifact)
    active = lc.registry.ActivateClustering(
        registry_pb2.ActivateClusteringRequest(clustering=clustering_spec(learned))
    )
    assert active.map_kind == registry_pb2.MAP_KIND_LEARNED
    wait_until(lambda: status().revision == active.revision)
    assert status().applied_change_set_count == before + 1  # clustering and Ψ together
    table = follower.tables.current
    assert table.soft and table.clustering_version == learned.version
    np.testing.assert_array_equal(table.psi, leader.tables.current.psi)
    model = lc.registry.GetModel(registry_pb2.GetModelRequest(name="coder"))
    assert model.clustering_version == learned.version and model.revision == active.revision
    assert sum(model.validation_counts) == model.result_count == 20
    assert routes(fc) == routes(lc)


# --------------------------------------------------------------------------- the CLI


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*SIDECAR, *args], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"sidecar {args} failed ({result.returncode}): {result.stderr}")
    return result


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, topic_files) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("learned-cli")
    ids, train, results = train_labels()
    files = {"train": d / "train.jsonl", "results": d / "results", "val": topic_files["val"]}
    files["train"].write_text(
        "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in zip(ids, train, strict=True))
    )
    files["results"].mkdir()
    for name, scores in results.items():
        (files["results"] / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": i, "correct": int(s)}) + "\n" for i, s in scores.items())
        )
    (files["results"] / "costs.tsv").write_text("coder\t10\nchef\t8\n")
    return files


def test_fit_learned_with_k_auto_then_serve_register_route(
    cli_files, topic_files, tmp_path, sidecars
):
    out = tmp_path / "clustering"
    fitted = run(
        "fit",
        "--train",
        str(cli_files["train"]),
        "--val",
        str(cli_files["val"]),
        "-k",
        "auto",
        "--map",
        "learned",
        "--train-results",
        str(cli_files["results"]),
        "--cv-reps",
        "1",
        "--out",
        str(out),
    )
    assert "<- chosen" in fitted.stdout and "LearnedMap: temperature" in fitted.stdout
    clustering = load_clustering(out)
    assert clustering.map_kind == "learned" and f"map=learned k={clustering.k}" in fitted.stdout
    selection = clustering.info["k_selection"]
    assert isinstance(selection, dict) and selection["k"] == clustering.k >= 2
    assert selection["method"] == "cv-held-out-llms" and selection["curve"]
    leader = sidecars.leader("leader", artifact=out)
    sidecars.wait_serving(leader)
    address = leader.address
    for name, cost in (("coder", "10"), ("chef", "8"), ("cheap", "0.1")):
        run(
            "register",
            "--server",
            address,
            "--name",
            name,
            "--cost",
            cost,
            "--results",
            str(topic_files[name]),
        )
    code = json.loads(
        run(
            "route", "--server", address, "--prompt", CODE_PROMPT, "--cost-weight", "0", "--json"
        ).stdout
    )
    cook = run("route", "--server", address, "--prompt", COOK_PROMPT, "--cost-weight", "0")
    cheap = json.loads(
        run(
            "route", "--server", address, "--prompt", COOK_PROMPT, "--cost-weight", "100", "--json"
        ).stdout
    )
    assert code["model"] == "coder"
    assert cook.stdout.startswith("chef")
    assert cheap["model"] == "cheap"


def test_fit_learned_without_training_results_is_a_clear_error(cli_files, tmp_path):
    result = subprocess.run(
        [
            *SIDECAR,
            "fit",
            "--train",
            str(cli_files["train"]),
            "--val",
            str(cli_files["val"]),
            "-k",
            "2",
            "--map",
            "learned",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--map learned needs --train-results" in result.stderr
    assert "Traceback" not in result.stderr


def test_k_auto_without_labels_uses_the_rule(cli_files, tmp_path):
    out = tmp_path / "rule"
    fitted = run(
        "fit",
        "--train",
        str(cli_files["train"]),
        "--val",
        str(cli_files["val"]),
        "-k",
        "auto",
        "--out",
        str(out),
    )
    assert "by rule" in fitted.stdout
    info = load_clustering(out).info["k_selection"]
    assert isinstance(info, dict) and info["method"] == "rule" and info["k"] == 1  # 20 items
