"""Prometheus metrics: what an operator graphs and alerts on.

Everything lives in one ``CollectorRegistry`` owned by a ``Metrics`` instance
(never prometheus_client's global default), so two sidecars in one process,
such as in the tests, never share counters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

# Route stages span microseconds (kernel) to tens of milliseconds (long prompts).
_LATENCY_BUCKETS = (
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


@dataclass
class StageTimes:
    """Seconds spent in each stage of one Route; 0 for stages that did not run."""

    tokenise: float = 0.0
    embed: float = 0.0
    kernel: float = 0.0
    total: float = 0.0


class Metrics:
    """The sidecar's metrics and, once ``serve_http`` is called, their HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.route_seconds = Histogram(
            "uniroute_route_stage_seconds",
            "Time spent per Route stage (tokenise, embed, kernel, total).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.routes = Counter(
            "uniroute_routes_total",
            "Routing decisions by chosen model and path (route: the Route RPCs; extproc: "
            "requests rewritten as Envoy's external processor).",
            ["model", "path"],
            registry=r,
        )
        self.routes_by_cluster = Counter(
            "uniroute_routes_by_cluster_total",
            "Routing decisions by prompt cluster.",
            ["cluster"],
            registry=r,
        )
        self.extproc_requests = Counter(
            "uniroute_extproc_requests_total",
            "HTTP requests seen as Envoy's external processor, by outcome: routed, passed "
            "(not for the alias), cancelled (the stream ended first), or the HTTP status "
            "of the processor's own answer (400, 413, 503, 500).",
            ["outcome"],
            registry=r,
        )
        self.table_revision = Gauge(
            "uniroute_table_revision", "Registry revision of the routing table served.", registry=r
        )
        self.table_models = Gauge(
            "uniroute_table_models", "Models in the routing table served.", registry=r
        )
        self.registrations = Counter(
            "uniroute_registrations_total",
            "RegisterModel calls by outcome (OK or the gRPC status code).",
            ["code"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "uniroute_rpc_errors_total",
            "Failed RPCs by method and gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self._stages = {
            name: self.route_seconds.labels(stage=name)
            for name in ("tokenise", "embed", "kernel", "total")
        }
        self._http: Any = None

    def observe_route(
        self, times: StageTimes, model: str, cluster: int, path: str = "route"
    ) -> None:
        for name, child in self._stages.items():
            value = getattr(times, name)
            if value or name in ("kernel", "total"):
                child.observe(value)
        self.routes.labels(model=model, path=path).inc()
        self.routes_by_cluster.labels(cluster=str(cluster)).inc()

    def observe_table(self, revision: int, models: int) -> None:
        self.table_revision.set(revision)
        self.table_models.set(models)

    def observe_error(self, method: str, code: str) -> None:
        self.rpc_errors.labels(method=method, code=code).inc()

    def gauge_from(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read at scrape time (follower lag, cache size...)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def serve_http(self, address: str) -> int:
        """Starts the /metrics endpoint on HOST:PORT (port 0 picks one); returns the port."""
        host, _, port = address.rpartition(":")
        server, thread = start_http_server(
            int(port), addr=host or "127.0.0.1", registry=self.registry
        )
        self._http = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
