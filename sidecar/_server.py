"""The gRPC server: thin servicers over the router and registry, wired by one ``serve()``.

Servicers only translate messages and map the exception tree to status codes;
every decision lives in the plain modules. Health starts NOT_SERVING and turns
SERVING only after the embedder and kernels are warm and a table is loaded.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from ._clustering import Clustering, load_clustering
from ._embedder import Embedder, default_embedder_dir
from ._errors import ArtifactError, FailedPrecondition, InvalidArgument, SidecarError
from ._registry import SOURCE_EXPLICIT, SOURCE_RESULTS, ModelRecord, Registry
from ._router import Decision, EmbedderLike, Query, Router
from ._table import RoutingTable, TableHolder

log = logging.getLogger("sidecar.server")

ROUTER_SERVICE = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
MAX_PAGE_SIZE = 1000

_PROFILE_SOURCES = {
    SOURCE_RESULTS: registry_pb2.PROFILE_SOURCE_RESULTS,
    SOURCE_EXPLICIT: registry_pb2.PROFILE_SOURCE_EXPLICIT,
}

Handler = TypeVar("Handler", bound=Callable[..., Any])


def starter_artifact_dir() -> Path:
    """The clustering shipped with the package, used when the store has none."""
    return Path(str(resources.files("sidecar") / "data" / "starter"))


def _status_from_errors(method: Handler) -> Handler:
    """Maps SidecarError to its status; anything else is INTERNAL without a stack trace."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except SidecarError as exc:
            context.abort(exc.code, str(exc))
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the sidecar's log")

    return wrapper  # type: ignore[return-value]


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, router: Router) -> None:
        self.router = router

    @_status_from_errors
    def Route(
        self, request: router_pb2.RouteRequest, context: grpc.ServicerContext
    ) -> router_pb2.RouteResponse:
        return _route_response(self.router.route(_query(request)))

    @_status_from_errors
    def RouteBatch(
        self, request: router_pb2.RouteBatchRequest, context: grpc.ServicerContext
    ) -> router_pb2.RouteBatchResponse:
        decisions = self.router.route_batch([_query(r) for r in request.requests])
        return router_pb2.RouteBatchResponse(responses=[_route_response(d) for d in decisions])


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @_status_from_errors
    def RegisterModel(
        self, request: registry_pb2.RegisterModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Model:
        evidence = request.WhichOneof("evidence")
        if evidence is None:
            raise InvalidArgument("set either results (graded validation items) or profile")
        results = None
        rates = None
        if evidence == "results":
            results = [(r.item_id, r.score) for r in request.results.results]
        else:
            rates = list(request.profile.error_rates)
        record = self.registry.register_model(
            request.name,
            request.cost,
            results=results,
            error_rates=rates,
            description=request.description,
            labels=dict(request.labels),
            allow_update=request.allow_update,
        )
        return _model_message(record)

    @_status_from_errors
    def DeregisterModel(
        self, request: registry_pb2.DeregisterModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.DeregisterModelResponse:
        return registry_pb2.DeregisterModelResponse(
            revision=self.registry.deregister_model(request.name)
        )

    @_status_from_errors
    def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Model:
        return _model_message(self.registry.get_model(request.name))

    @_status_from_errors
    def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
        limit = request.page_size or MAX_PAGE_SIZE
        models, revision = self.registry.list_models(after=request.page_token, limit=limit + 1)
        more = len(models) > limit
        models = models[:limit]
        return registry_pb2.ListModelsResponse(
            models=[_model_message(m) for m in models],
            next_page_token=models[-1].name if more else "",
            revision=revision,
        )

    @_status_from_errors
    def GetClustering(
        self, request: registry_pb2.GetClusteringRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Clustering:
        active = self.registry.active_clustering()
        if active is None:
            raise FailedPrecondition("no clustering is loaded")
        clustering = active.clustering
        return registry_pb2.Clustering(
            version=clustering.version,
            k=clustering.k,
            dim=clustering.dim,
            embedder_fingerprint=clustering.embedder_fingerprint,
            validation_counts=clustering.cluster_counts().tolist(),
            revision=active.revision,
            create_time=_timestamp(active.create_time),
        )


def _query(request: router_pb2.RouteRequest) -> Query:
    return Query(
        prompt=request.prompt,
        candidates=request.candidate_models,
        cost_weight=request.cost_weight if request.HasField("cost_weight") else None,
        embedding=request.embedding,
        request_id=request.request_id,
    )


def _route_response(decision: Decision) -> router_pb2.RouteResponse:
    return router_pb2.RouteResponse(
        model=decision.model,
        cluster=decision.cluster,
        scores=[
            router_pb2.CandidateScore(model=m, expected_error=e, cost=c, score=s)
            for m, e, c, s in decision.candidates()
        ],
        revision=decision.table.revision,
        clustering_version=decision.table.clustering_version,
        cost_weight=decision.cost_weight,
        truncated=decision.truncated,
        prompt_tokens=decision.prompt_tokens,
        request_id=decision.request_id,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _model_message(record: ModelRecord) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=record.name,
        cost=record.cost,
        error_rates=record.error_rates.tolist(),
        validation_counts=record.validation_counts.tolist(),
        overall_error=record.overall_error,
        revision=record.revision,
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
        clustering_version=record.clustering_version,
        description=record.description,
        labels=dict(record.labels),
        profile_source=_PROFILE_SOURCES.get(
            record.profile_source, registry_pb2.PROFILE_SOURCE_UNSPECIFIED
        ),
        result_count=record.result_count,
        create_revision=record.create_revision,
    )


@dataclass
class ServerConfig:
    """Everything `sidecar serve` can be told; the defaults are the embedded ones."""

    listen: str = "127.0.0.1:50051"
    db_path: Path = Path("var/registry.db")
    artifact_dir: Path | None = None
    embedder_dir: Path | None = None
    cost_weight: float = 0.0
    max_workers: int = 16
    embedder_threads: int = 1


class Sidecar:
    """A running server and the parts behind it, for the CLI and for tests."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        registry: Registry,
        router: Router,
        health_servicer: health.HealthServicer,
    ) -> None:
        self.server = server
        self.port = port
        self.registry = registry
        self.router = router
        self.health = health_servicer
        self._stopped = threading.Event()

    @property
    def tables(self) -> TableHolder:
        return self.router.tables

    def stop(self, grace: float | None = 1.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.registry.close()

    def wait(self) -> None:
        self.server.wait_for_termination()


def check_fingerprint(clustering: Clustering, embedder: EmbedderLike, source: str) -> None:
    """Refuses a clustering fitted with another embedder: its centroids would be meaningless."""
    if clustering.embedder_fingerprint != embedder.fingerprint:
        raise ArtifactError(
            f"clustering {clustering.version} from {source} was fitted with embedder "
            f"{clustering.embedder_fingerprint[:16]}…, but this server's embedder is "
            f"{embedder.fingerprint[:16]}…; re-run `sidecar fit` with this embedder"
        )


def serve(config: ServerConfig, *, embedder: EmbedderLike | None = None) -> Sidecar:
    """Loads everything, starts the server NOT_SERVING, warms up, then reports SERVING.

    Raises ArtifactError (before listening) when the embedder, clustering or
    database is unusable, so the process never half-starts.
    """
    if embedder is None:
        embedder = Embedder.from_dir(
            config.embedder_dir or default_embedder_dir(), threads=config.embedder_threads
        )
    registry = Registry(config.db_path)
    try:
        _load_clustering(registry, config, embedder)
        tables = TableHolder(RoutingTable.from_snapshot(registry.snapshot()))
        registry.add_listener(lambda _rev: _republish(registry, tables))
        router = Router(tables, embedder, default_cost_weight=config.cost_weight)
    except BaseException:
        registry.close()
        raise

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.max_workers))
    router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(router), server)
    registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(registry), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (ROUTER_SERVICE, REGISTRY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(services, server)
    for name in ("", ROUTER_SERVICE, REGISTRY_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError as exc:
        registry.close()
        raise ArtifactError(f"cannot listen on {config.listen}: {exc}") from exc
    server.start()
    sidecar = Sidecar(server, port, registry, router, health_servicer)
    try:
        router.warm_up()
    except BaseException:
        sidecar.stop(0)
        raise
    for name in ("", ROUTER_SERVICE, REGISTRY_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    table = tables.current
    log.info(
        "serving on %s (port %d): revision %d, clustering %s, %d model(s)",
        config.listen,
        port,
        table.revision if table else 0,
        table.clustering_version if table else "-",
        table.size if table else 0,
    )
    return sidecar


def _load_clustering(registry: Registry, config: ServerConfig, embedder: EmbedderLike) -> None:
    """Activates --artifact if given, else keeps the stored one, else the shipped starter.

    The embedder check comes before activation so a mismatch changes nothing.
    """
    stored = registry.active_clustering()
    if config.artifact_dir is None and stored is not None:
        check_fingerprint(stored.clustering, embedder, str(config.db_path))
        return
    source = config.artifact_dir or starter_artifact_dir()
    clustering = load_clustering(source)
    check_fingerprint(clustering, embedder, str(source))
    registry.activate_clustering(clustering)


def _republish(registry: Registry, tables: TableHolder) -> None:
    table = RoutingTable.from_snapshot(registry.snapshot())
    if table is not None:
        tables.publish(table)
