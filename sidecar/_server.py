"""The gRPC server: thin servicers over the router and registry, wired by one ``serve()``.

Servicers only translate messages and map the exception tree to status codes;
every decision lives in the plain modules. Health starts NOT_SERVING and turns
SERVING only after the embedder and kernels are warm and a table is loaded.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from ._admission import AdmissionInterceptor
from ._auth import AuthInterceptor, AuthPolicy, bearer_metadata
from ._batcher import MicroBatcher
from ._cache import EmbeddingCache
from ._clustering import Clustering, load_clustering
from ._embedder import Embedder, default_embedder_dir
from ._errors import ArtifactError, FailedPrecondition, InvalidArgument, SidecarError
from ._follower import Follower
from ._metrics import Metrics
from ._registry import DEFAULT_HISTORY, Registry
from ._router import (
    DEFAULT_MAX_BATCH_REQUESTS,
    DEFAULT_MAX_PROMPT_BYTES,
    Decision,
    EmbedderLike,
    Query,
    Router,
)
from ._table import RoutingTable, TableHolder
from ._tls import channel_credentials, server_credentials
from ._watch import WatchHub
from ._wire import clustering_from_spec, model_message, timestamp

log = logging.getLogger("sidecar.server")

ROUTER_SERVICE = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
MAX_PAGE_SIZE = 1000

Handler = TypeVar("Handler", bound=Callable[..., Any])


def starter_artifact_dir() -> Path:
    """The clustering shipped with the package, used when the store has none."""
    return Path(str(resources.files("sidecar") / "data" / "starter"))


def _status_from_errors(method: Handler) -> Handler:
    """Maps SidecarError to its status; anything else is INTERNAL without a stack trace."""

    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except SidecarError as exc:
            _count_error(self, name, exc.code.name)
            log.info(
                "%s failed request_id=%s code=%s: %s",
                name,
                getattr(request, "request_id", "") or "-",
                exc.code.name,
                exc,
            )
            context.abort(exc.code, str(exc))
        except Exception:
            _count_error(self, name, "INTERNAL")
            log.exception("unexpected error in %s", name)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the sidecar's log")

    return wrapper  # type: ignore[return-value]


def _count_error(servicer: Any, method: str, code: str) -> None:
    metrics: Metrics = servicer.metrics
    metrics.observe_error(method, code)
    if method == "RegisterModel":
        metrics.registrations.labels(code=code).inc()


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, router: Router, metrics: Metrics, *, log_prompts: bool = False) -> None:
        self.router = router
        self.metrics = metrics
        self.log_prompts = log_prompts

    @_status_from_errors
    def Route(
        self, request: router_pb2.RouteRequest, context: grpc.ServicerContext
    ) -> router_pb2.RouteResponse:
        decision = self.router.route(_query(request))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "route request_id=%s model=%s cluster=%d revision=%d tokens=%d truncated=%s%s",
                request.request_id or "-",
                decision.model,
                decision.cluster,
                decision.table.revision,
                decision.prompt_tokens,
                decision.truncated,
                f" prompt={request.prompt!r}" if self.log_prompts else "",
            )
        return _route_response(decision)

    @_status_from_errors
    def RouteBatch(
        self, request: router_pb2.RouteBatchRequest, context: grpc.ServicerContext
    ) -> router_pb2.RouteBatchResponse:
        decisions = self.router.route_batch([_query(r) for r in request.requests])
        return router_pb2.RouteBatchResponse(responses=[_route_response(d) for d in decisions])


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    """Leader: reads and writes. Follower: reads only; writes name the leader."""

    def __init__(
        self,
        registry: Registry,
        *,
        tables: TableHolder,
        embedder_fingerprint: str,
        hub: WatchHub | None = None,
        follower: Follower | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.registry = registry
        self.tables = tables
        self.embedder_fingerprint = embedder_fingerprint
        self.hub = hub
        self.follower = follower

    def _require_leader(self) -> None:
        if self.follower is not None:
            raise FailedPrecondition(
                f"this sidecar is a read-only follower of {self.follower.leader}; "
                "send writes to the leader"
            )

    @_status_from_errors
    def RegisterModel(
        self, request: registry_pb2.RegisterModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Model:
        self._require_leader()
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
        self.metrics.registrations.labels(code="OK").inc()
        log.info(
            "registered model=%s revision=%d items=%d",
            record.name,
            record.revision,
            record.result_count,
        )
        return model_message(record)

    @_status_from_errors
    def DeregisterModel(
        self, request: registry_pb2.DeregisterModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.DeregisterModelResponse:
        self._require_leader()
        return registry_pb2.DeregisterModelResponse(
            revision=self.registry.deregister_model(request.name)
        )

    @_status_from_errors
    def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Model:
        return model_message(self.registry.get_model(request.name))

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
            models=[model_message(m) for m in models],
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
            create_time=timestamp(active.create_time),
        )

    @_status_from_errors
    def ActivateClustering(
        self, request: registry_pb2.ActivateClusteringRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Clustering:
        self._require_leader()
        if not request.HasField("clustering"):
            raise InvalidArgument("clustering is required")
        clustering = clustering_from_spec(request.clustering)
        check_fingerprint(clustering, self.embedder_fingerprint, "the request")
        self.registry.activate_clustering(clustering)
        return self.GetClustering(registry_pb2.GetClusteringRequest(), context)

    def Watch(
        self, request: registry_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[registry_pb2.WatchResponse]:
        if self.hub is None:
            leader = self.follower.leader if self.follower else "the leader"
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this sidecar is a follower; watch {leader} instead",
            )
            return
        if request.start_revision < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start_revision must be >= 0")
        yield from self.hub.stream(request.start_revision, context, request.store_id)

    @_status_from_errors
    def GetStatus(
        self, request: registry_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ServerStatus:
        table = self.tables.current
        status = registry_pb2.ServerStatus(
            role=registry_pb2.ROLE_FOLLOWER if self.follower else registry_pb2.ROLE_LEADER,
            revision=table.revision if table else 0,
            clustering_version=table.clustering_version if table else "",
            models=table.size if table else 0,
        )
        if self.follower is not None:
            f = self.follower.status
            status.leader = f.leader
            status.connected = f.connected
            status.seconds_since_leader_contact = f.seconds_since_contact()
            status.reconnects = f.reconnects
            status.snapshots_applied = f.snapshots_applied
            status.change_sets_applied = f.change_sets_applied
            status.last_error = f.last_error
        if self.hub is not None:
            status.watchers = self.hub.watcher_count
            status.compact_revision = self.registry.compact_revision
        return status


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


@dataclass
class ServerConfig:
    """Everything `sidecar serve` can be told; the defaults are the embedded ones."""

    listen: str = "127.0.0.1:50051"
    db_path: Path = Path("var/registry.db")
    artifact_dir: Path | None = None
    embedder_dir: Path | None = None
    cost_weight: float = 0.0
    max_workers: int = 32  # Watch streams hold a thread each; see max_watchers
    embedder_threads: int = 1
    truncation: str | None = None  # override the embedder manifest's strategy
    embedding_cache: int = 0  # LRU entries for repeated prompts; 0 turns the cache off
    batch_max_size: int = 0  # micro-batching: up to this many concurrent Routes per run; 0 = off
    batch_max_wait_ms: float = 0.0  # how long a forming batch may wait for more requests
    batch_workers: int = 2  # batches run concurrently (one onnxruntime thread each)
    follow: str | None = None  # leader address: run as a read-only follower
    history: int = DEFAULT_HISTORY  # revisions of change events kept for Watch resumes
    progress_interval: float = 2.0  # seconds between Watch heartbeats on an idle stream
    watch_buffer: int = 1024  # revisions a watcher may lag before it is dropped
    max_watchers: int = 16
    # Limits and operations.
    max_concurrent_rpcs: int = 256  # beyond this, calls get RESOURCE_EXHAUSTED at once
    max_receive_message_bytes: int = 16 * 1024 * 1024  # a large RegisterModel fits
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES
    max_batch_requests: int = DEFAULT_MAX_BATCH_REQUESTS
    metrics_listen: str | None = None  # HOST:PORT for Prometheus /metrics; None = off
    log_prompts: bool = False  # prompts are never logged unless this debug switch is on
    # Security (see sidecar/_auth.py and sidecar/_tls.py). Token values never appear in repr.
    write_tokens: tuple[str, ...] = field(default=(), repr=False)  # empty: writes are open
    read_tokens: tuple[str, ...] = field(default=(), repr=False)  # empty: reads are open
    tls_cert: Path | None = None  # PEM chain for the listener; with tls_key turns TLS on
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # require client certificates signed by these (mTLS)
    leader_token: str | None = field(default=None, repr=False)  # sent on Watch to the leader
    leader_ca: Path | None = None  # verify the leader with these CAs (TLS to the leader)
    leader_cert: Path | None = None  # client certificate for mTLS to the leader
    leader_key: Path | None = None


class Sidecar:
    """A running server and the parts behind it, for the CLI and for tests."""

    def __init__(
        self,
        server: grpc.Server,
        port: int,
        registry: Registry,
        router: Router,
        health_servicer: health.HealthServicer,
        hub: WatchHub | None,
        follower: Follower | None,
        admission: AdmissionInterceptor,
        metrics: Metrics,
    ) -> None:
        self.admission = admission
        self.metrics = metrics
        self.metrics_port = 0  # the /metrics HTTP port, when metrics_listen is set
        self.server = server
        self.port = port
        self.registry = registry
        self.router = router
        self.health = health_servicer
        self.hub = hub
        self.follower = follower
        self._stopped = threading.Event()

    @property
    def tables(self) -> TableHolder:
        return self.router.tables

    def stop(self, grace: float | None = 1.0) -> None:
        """NOT_SERVING first, then end Watch streams and in-flight calls, then close the store."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        if self.follower is not None:
            self.follower.stop()
        if self.hub is not None:
            self.hub.close()
        self.server.stop(grace).wait()
        if isinstance(self.router.batcher, MicroBatcher):
            self.router.batcher.close()
        self.registry.close()
        self.metrics.close()
        a = self.admission
        log.info(
            "stopped: %d call(s) accepted, %d finished, %d cut off by the %.1fs grace period",
            a.accepted,
            a.finished,
            a.in_flight,
            grace or 0.0,
        )

    def wait(self) -> None:
        self.server.wait_for_termination()


def check_fingerprint(clustering: Clustering, fingerprint: str, source: str) -> None:
    """Refuses a clustering fitted with another embedder: its centroids would be meaningless."""
    if clustering.embedder_fingerprint != fingerprint:
        raise ArtifactError(
            f"clustering {clustering.version} from {source} was fitted with embedder "
            f"{clustering.embedder_fingerprint[:16]}…, but this server's embedder is "
            f"{fingerprint[:16]}…; re-run `sidecar fit` with this embedder"
        )


def serve(config: ServerConfig, *, embedder: EmbedderLike | None = None) -> Sidecar:
    """Loads everything, starts the server NOT_SERVING, warms up, then reports SERVING.

    Raises ArtifactError (before listening) when the embedder, clustering or
    database is unusable, so the process never half-starts. A follower with no
    local copy yet starts NOT_SERVING and turns SERVING at its first snapshot.
    """
    if config.follow and config.artifact_dir is not None:
        raise InvalidArgument("a follower takes its clustering from the leader; drop --artifact")
    # Security settings are checked first: a bad token or PEM must stop start-up early.
    auth = AuthPolicy(config.write_tokens, config.read_tokens)
    listener_credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    leader_credentials = channel_credentials(
        config.leader_ca,
        config.leader_cert,
        config.leader_key,
        flags=("--leader-ca", "--leader-cert", "--leader-key"),
    )
    if not config.follow and (leader_credentials is not None or config.leader_token):
        raise InvalidArgument("--leader-ca/--leader-cert/--leader-key/leader token need --follow")
    if embedder is None:
        embedder = Embedder.from_dir(
            config.embedder_dir or default_embedder_dir(),
            threads=config.embedder_threads,
            truncation=config.truncation,
        )
    registry = Registry(config.db_path, history=config.history, durable=not config.follow)
    try:
        if config.follow:
            stored = registry.active_clustering()
            if stored is not None:
                check_fingerprint(stored.clustering, embedder.fingerprint, str(config.db_path))
        else:
            _load_clustering(registry, config, embedder)
        tables = TableHolder(RoutingTable.from_snapshot(registry.snapshot()))
        batcher = None
        if config.batch_max_size > 1:
            if not isinstance(embedder, Embedder):
                raise InvalidArgument("micro-batching needs the ONNX embedder")
            batcher = MicroBatcher(
                embedder,
                max_batch=config.batch_max_size,
                max_wait=config.batch_max_wait_ms / 1000.0,
                workers=config.batch_workers,
            )
        metrics = Metrics()
        router = Router(
            tables,
            embedder,
            default_cost_weight=config.cost_weight,
            cache=EmbeddingCache(config.embedding_cache) if config.embedding_cache > 0 else None,
            batcher=batcher,
            metrics=metrics,
            max_prompt_bytes=config.max_prompt_bytes,
            max_batch_requests=config.max_batch_requests,
        )
        if tables.current is not None:
            metrics.observe_table(tables.current.revision, tables.current.size)
    except BaseException:
        registry.close()
        raise

    health_servicer = health.HealthServicer()
    hub = None
    follower = None
    if config.follow:
        follower = Follower(
            config.follow,
            registry,
            embedder.fingerprint,
            stale_after=max(5.0, 5 * config.progress_interval),
            credentials=leader_credentials,
            metadata=bearer_metadata(config.leader_token),
            on_refused=lambda reason: health_servicer.set(
                REGISTRY_SERVICE,
                health_pb2.HealthCheckResponse.NOT_SERVING
                if reason
                else health_pb2.HealthCheckResponse.SERVING,
            ),
        )
    else:
        hub = WatchHub(
            registry,
            buffer=config.watch_buffer,
            progress_interval=config.progress_interval,
            max_watchers=min(config.max_watchers, max(1, config.max_workers - 4)),
        )
    ready = threading.Event()

    def on_commit(revision: int) -> None:
        table = _republish(registry, tables)
        if table is not None:
            metrics.observe_table(table.revision, table.size)
        if table is not None and ready.is_set():
            _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
        if hub is not None:
            hub.on_commit(revision)

    registry.add_listener(on_commit)

    admission = AdmissionInterceptor()
    interceptors: list[grpc.ServerInterceptor] = [AuthInterceptor(auth)] if auth.enabled else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers),
        interceptors=[*interceptors, admission],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", config.max_receive_message_bytes),
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ],
    )
    router_pb2_grpc.add_RouterServicer_to_server(
        RouterServicer(router, metrics, log_prompts=config.log_prompts), server
    )
    registry_servicer = RegistryServicer(
        registry,
        tables=tables,
        embedder_fingerprint=embedder.fingerprint,
        hub=hub,
        follower=follower,
        metrics=metrics,
    )
    registry_pb2_grpc.add_RegistryServicer_to_server(registry_servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = (ROUTER_SERVICE, REGISTRY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(services, server)
    _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        if listener_credentials is not None:
            port = server.add_secure_port(config.listen, listener_credentials)
        else:
            port = server.add_insecure_port(config.listen)
    except RuntimeError as exc:
        registry.close()
        raise ArtifactError(f"cannot listen on {config.listen}: {exc}") from exc
    server.start()
    sidecar = Sidecar(
        server, port, registry, router, health_servicer, hub, follower, admission, metrics
    )
    _register_gauges(metrics, router, follower, admission)
    if config.metrics_listen:
        try:
            sidecar.metrics_port = metrics.serve_http(config.metrics_listen)
        except OSError as exc:
            sidecar.stop(0)
            raise ArtifactError(f"cannot serve metrics on {config.metrics_listen}: {exc}") from exc
        log.info(
            "metrics on http://%s:%d/metrics",
            config.metrics_listen.rpartition(":")[0],
            sidecar.metrics_port,
        )
    try:
        router.warm_up()
    except BaseException:
        sidecar.stop(0)
        raise
    ready.set()
    if tables.current is not None:
        _set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING)
    if follower is not None:
        follower.start()
    table = tables.current
    log.info(
        "%s on %s (port %d): revision %d, clustering %s, %d model(s)",
        f"following {config.follow}" if config.follow else "leading",
        config.listen,
        port,
        table.revision if table else 0,
        table.clustering_version if table else "-",
        table.size if table else 0,
    )
    return sidecar


def _register_gauges(
    metrics: Metrics,
    router: Router,
    follower: Follower | None,
    admission: AdmissionInterceptor,
) -> None:
    """Scrape-time gauges: read from the live objects, never copied on the request path."""
    metrics.gauge_from(
        "uniroute_calls_in_flight",
        "RPCs accepted and not yet finished.",
        lambda: admission.in_flight,
    )
    cache = router.cache
    if cache is not None:
        metrics.gauge_from(
            "uniroute_embedding_cache_hits", "Cache hits since start.", lambda: cache.hits
        )
        metrics.gauge_from(
            "uniroute_embedding_cache_misses", "Cache misses since start.", lambda: cache.misses
        )
    if follower is not None:
        status = follower.status
        metrics.gauge_from(
            "uniroute_follower_seconds_since_leader_contact",
            "Seconds since the last message from the leader (-1: never).",
            status.seconds_since_contact,
        )
        metrics.gauge_from(
            "uniroute_follower_reconnects", "Watch stream reconnects.", lambda: status.reconnects
        )
        metrics.gauge_from(
            "uniroute_follower_connected",
            "1 while a Watch stream is open.",
            lambda: float(status.connected),
        )


def _set_health(servicer: health.HealthServicer, status: int) -> None:
    for name in ("", ROUTER_SERVICE, REGISTRY_SERVICE):
        servicer.set(name, status)


def _load_clustering(registry: Registry, config: ServerConfig, embedder: EmbedderLike) -> None:
    """Activates --artifact if given, else keeps the stored one, else the shipped starter.

    The embedder check comes before activation so a mismatch changes nothing.
    """
    stored = registry.active_clustering()
    if config.artifact_dir is None and stored is not None:
        check_fingerprint(stored.clustering, embedder.fingerprint, str(config.db_path))
        return
    source = config.artifact_dir or starter_artifact_dir()
    clustering = load_clustering(source)
    check_fingerprint(clustering, embedder.fingerprint, str(source))
    registry.activate_clustering(clustering)


def _republish(registry: Registry, tables: TableHolder) -> RoutingTable | None:
    """Rebuilds the table after a commit; the registry's write lock already orders these."""
    table = RoutingTable.from_snapshot(registry.snapshot())
    if table is not None:
        tables.publish(table, allow_older=True)
    return table
