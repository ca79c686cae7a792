"""End to end with the static embedder, as real processes: fit, serve, register, route,
Watch and re-clustering, and the refusal of clusterings across embedders.

The same steps the MiniLM suites take (test_cli.py, test_replication.py,
test_watch.py), run with `--embedder var/embedder-static`: a leader that
starts on the static starter clustering, a static follower, a MiniLM follower
that must refuse the leader's clustering, then a re-fitted clustering through
`sidecar activate-clustering` reaching the static follower.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT
from _processes import CONVERGE, RPC_TIMEOUT, Proc, Sidecars
from grpc_health.v1 import health_pb2, health_pb2_grpc
from uniroute.v1 import registry_pb2, router_pb2

from sidecar._clustering import load_clustering
from sidecar._export_static import default_static_dir
from sidecar._readiness import free_port, wait_until

SIDECAR = [sys.executable, "-m", "sidecar._cli"]
pytestmark = pytest.mark.slow  # several processes, each loading its embedder


@pytest.fixture(scope="module")
def static_dir() -> Path:
    directory = default_static_dir()
    if not (directory / "manifest.json").exists():
        pytest.fail(f"no static embedder at {directory}: run `make embedder-static` first")
    return directory


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*SIDECAR, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def start(group: Sidecars, name: str, static_dir: Path | None, *args: str) -> Proc:
    extra = ["--progress-interval", "0.5", *args]
    if static_dir is not None:
        extra += ["--embedder", str(static_dir)]
    return group._start(name, f"127.0.0.1:{free_port()}", group.root / f"{name}.db", extra)


def test_fit_serve_register_route_watch_and_recluster(
    sidecars: Sidecars, static_dir: Path, topic_files: dict[str, Path], tmp_path: Path
) -> None:
    # fit with the static embedder (the kind comes from its manifest)
    out = tmp_path / "clustering"
    fitted = cli(
        "fit", "--embedder", str(static_dir), "--train", str(topic_files["train"]),
        "--val", str(topic_files["val"]), "-k", "2", "--out", str(out),
    )  # fmt: skip
    assert "truncated=0" in fitted.stdout
    static_fp = json.loads((static_dir / "manifest.json").read_text())["fingerprint"]
    assert load_clustering(out).embedder_fingerprint == static_fp

    # serve: a leader on the static starter, a static follower and a MiniLM follower
    leader = start(sidecars, "leader", static_dir)
    sidecars.wait_serving(leader)
    starter = leader.registry.GetClustering(registry_pb2.GetClusteringRequest())
    assert starter.embedder_fingerprint == static_fp and starter.k == 12
    follower = start(sidecars, "follower", static_dir, "--follow", leader.address)
    minilm = start(sidecars, "minilm", None, "--follow", leader.address)
    sidecars.wait_serving(follower)

    # the MiniLM follower refuses the static clustering: Registry health NOT_SERVING
    health = health_pb2_grpc.HealthStub(minilm.channel)

    def refused() -> bool:
        try:
            reply = health.Check(
                health_pb2.HealthCheckRequest(service="uniroute.v1.Registry"), timeout=2
            )
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

    wait_until(refused, timeout=CONVERGE)

    # activate the fitted clustering on the leader; register; route on the follower
    cli("activate-clustering", "--server", leader.address, "--artifact", str(out))
    for name, cost in (("coder", "10"), ("chef", "8")):
        cli("register", "--server", leader.address, "--name", name, "--cost", cost,
            "--results", str(topic_files[name]))  # fmt: skip
    revision = leader.status().revision

    def follower_at_revision() -> bool:
        return follower.status().revision >= revision

    wait_until(follower_at_revision, timeout=CONVERGE)
    for proc in (leader, follower):
        code = proc.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT), timeout=RPC_TIMEOUT)
        cook = proc.router.Route(router_pb2.RouteRequest(prompt=COOK_PROMPT), timeout=RPC_TIMEOUT)
        assert (code.model, cook.model) == ("coder", "chef"), proc.name
        assert code.clustering_version == load_clustering(out).version
        assert not code.truncated

    # the CLI's route against the follower, and a MiniLM clustering refused by the leader
    routed = json.loads(
        cli("route", "--server", follower.address, "--prompt", COOK_PROMPT, "--json").stdout
    )
    assert routed["model"] == "chef"
    minilm_out = tmp_path / "minilm-clustering"
    cli("fit", "--train", str(topic_files["train"]), "--val", str(topic_files["val"]),
        "-k", "2", "--out", str(minilm_out))  # fmt: skip
    refused_activation = subprocess.run(
        [*SIDECAR, "activate-clustering", "--server", leader.address, "--artifact",
         str(minilm_out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused_activation.returncode != 0
    assert "Traceback" not in refused_activation.stderr
    assert leader.status().revision == revision  # nothing changed
    for proc in (leader, follower, minilm):
        sidecars.stop(proc)
