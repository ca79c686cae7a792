"""Prometheus metrics from a live server, scraped over HTTP like an operator's Prometheus."""

from __future__ import annotations

import re
import urllib.request

import grpc
import pytest
from _helpers import CODE_PROMPT, topic_results
from uniroute.v1 import registry_pb2, router_pb2


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(\{{{re.escape(selector)}\}})? ([0-9.e+-]+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m and (not labels or m.group(1)):
            return float(m.group(2))
    raise AssertionError(f"no sample {name}{labels} in:\n{text[:2000]}")


def test_metrics_endpoint_reports_routes_registrations_and_errors(
    make_sidecar, connect, topic_artifact
):
    sidecar = make_sidecar(
        artifact_dir=topic_artifact, metrics_listen="127.0.0.1:0", embedding_cache=16
    )
    port = sidecar.metrics_port
    client = connect(sidecar.port)
    client.registry.RegisterModel(
        registry_pb2.RegisterModelRequest(
            name="coder",
            cost=1.0,
            results=registry_pb2.ValidationResults(results=topic_results("code")),
        )
    )
    with pytest.raises(grpc.RpcError):
        client.registry.RegisterModel(registry_pb2.RegisterModelRequest(name="bad", cost=-1))
    for _ in range(3):
        client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT))
    with pytest.raises(grpc.RpcError):
        client.router.Route(router_pb2.RouteRequest(prompt="  "))
    text = scrape(port)
    assert sample(text, "uniroute_route_stage_seconds_count", stage="total") == 3
    assert sample(text, "uniroute_route_stage_seconds_count", stage="embed") == 1  # 2 hits
    assert sample(text, "uniroute_route_stage_seconds_count", stage="tokenise") == 1
    assert sample(text, "uniroute_route_stage_seconds_count", stage="kernel") == 3
    assert sample(text, "uniroute_routes_total", model="coder", path="route") == 3
    assert sample(text, "uniroute_table_revision") == 2
    assert sample(text, "uniroute_table_models") == 1
    assert sample(text, "uniroute_registrations_total", code="OK") == 1
    assert sample(text, "uniroute_registrations_total", code="INVALID_ARGUMENT") == 1
    assert sample(text, "uniroute_rpc_errors_total", method="Route", code="INVALID_ARGUMENT") == 1
    assert sample(text, "uniroute_embedding_cache_hits") == 2
    assert sample(text, "uniroute_calls_in_flight") == 0
    assert CODE_PROMPT not in text


def test_follower_metrics_show_leader_contact(make_sidecar, topic_artifact, tmp_path):
    leader = make_sidecar(artifact_dir=topic_artifact, progress_interval=0.2)
    follower = make_sidecar(
        follow=f"127.0.0.1:{leader.port}", db_path=tmp_path / "f.db", metrics_listen="127.0.0.1:0"
    )
    port = follower.metrics_port
    import time

    deadline = time.monotonic() + 10
    while sample(scrape(port), "uniroute_follower_connected") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    text = scrape(port)
    assert 0 <= sample(text, "uniroute_follower_seconds_since_leader_contact") < 5
    assert sample(text, "uniroute_table_revision") == 1


def test_route_stats_expose_what_prometheus_client_would():
    """The one-lock RouteStats against prometheus_client's own Histogram and Counter,
    fed the same observations: every bucket, sum and count sample is equal."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Histogram

    from sidecar._metrics import _LATENCY_BUCKETS, STAGES, RouteStats, StageTimes

    ours, reference = CollectorRegistry(), CollectorRegistry()
    stats = RouteStats()
    ours.register(stats)
    histogram = Histogram(
        "uniroute_route_stage_seconds", "h", ["stage"], buckets=_LATENCY_BUCKETS,
        registry=reference,
    )  # fmt: skip
    for stage in STAGES:  # every stage's series exists from the start, as a scrape shows
        histogram.labels(stage=stage)
    routes = Counter("uniroute_routes", "c", ["model", "path"], registry=reference)
    clusters = Counter("uniroute_routes_by_cluster", "c", ["cluster"], registry=reference)
    rng = random.Random(0)
    values = [0.0, 1e-05, 0.00005, 1.0, 2.5, *(10 ** rng.uniform(-6, 0.5) for _ in range(300))]
    for i, total in enumerate(values):
        times = StageTimes(tokenise=total / 3 if i % 2 else 0.0, kernel=total / 10, total=total)
        model, path, cluster = f"m{i % 3}", ("route", "extproc")[i % 2], i % 5
        stats.observe(times, model, cluster, path)
        for stage in STAGES:
            value = getattr(times, stage)
            if value or stage in ("kernel", "total"):
                histogram.labels(stage=stage).observe(value)
        routes.labels(model=model, path=path).inc()
        clusters.labels(cluster=str(cluster)).inc()

    Key = tuple[str, tuple[tuple[str, str], ...]]

    def samples(registry: CollectorRegistry) -> dict[Key, float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    expected = samples(reference)
    got = samples(ours)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got[("uniroute_route_stage_seconds_count", (("stage", "embed"),))] == 0
    assert got[("uniroute_routes_total", (("model", "m0"), ("path", "route")))] > 0
