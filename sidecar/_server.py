"""Wiring: ``build()`` assembles a sidecar from its config, ``Sidecar.start()`` runs it.

Building loads and checks everything that can be wrong on disk (security
files, the embedder, the store, the clustering) and binds the listener, so a
bad setting stops the process before it serves anything. Starting warms the
kernels and the embedder while health says NOT_SERVING, then turns SERVING.
A new servicer is one module plus one line in ``_add_services``.

Longer than 400 lines: ``build()`` wires two roles, three services and the
security settings; splitting ``build()`` into parts is the next clean-up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from concurrent import futures
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._admission import AdmissionInterceptor
from ._auth import AuthInterceptor, AuthPolicy, bearer_metadata
from ._batcher import MicroBatcher
from ._cache import EmbeddingCache
from ._clustering import load_clustering, require_embedder
from ._embedder import Embedder
from ._embedder_manifest import default_embedder_dir
from ._embedders import load_embedder
from ._errors import ArtifactError, InvalidArgument
from ._extproc import EXT_PROC_SERVICE, ExternalProcessorServicer
from ._follower import Follower, leader_addresses
from ._http_route import DEFAULT_ALIAS, DEFAULT_MAX_BODY_BYTES, RouteOptions
from ._metrics import Metrics
from ._openai_body import DEFAULT_PROMPT_RULE
from ._proto import ext_proc_pb2_grpc, registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc
from ._registry import DEFAULT_HISTORY, Registry
from ._router import DEFAULT_MAX_BATCH_REQUESTS, DEFAULT_MAX_PROMPT_BYTES, EmbedderLike, Router
from ._servicers import RegistryServicer, RouterServicer
from ._store import is_postgres
from ._table import RoutingTable, TableHolder
from ._tls import channel_credentials, server_credentials
from ._watch import WatchHub

log = logging.getLogger("sidecar.server")

STARTERS = ("starter", "starter_static")  # MiniLM's first: the default embedder's
ROUTER_SERVICE = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def starter_artifact_dir(fingerprint: str | None = None) -> Path:
    """The clustering shipped with the package, used when the store has none.

    One is fitted with each embedder (``starter`` with MiniLM, ``starter_static``
    with the static one); ``fingerprint`` picks the one fitted with that embedder,
    else the MiniLM one (which the embedder check then refuses, naming both).
    """
    data = Path(str(resources.files("sidecar") / "data"))
    if fingerprint is not None:
        for name in STARTERS:
            manifest = data / name / "clustering.json"
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                if json.loads(manifest.read_text("utf-8"))["embedder_fingerprint"] == fingerprint:
                    return data / name
    return data / STARTERS[0]


@dataclass
class ServerConfig:
    """Everything `sidecar serve` can be told; the defaults are the embedded ones."""

    listen: str = "127.0.0.1:50051"
    # Share the port with other processes (`serve --processes`); else a second bind fails.
    reuse_port: bool = False
    # A SQLite file, sqlite:///PATH, or postgresql://USER@HOST:PORT/DBNAME (replicas share it).
    db_path: Path | str = Path("var/registry.db")
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
    # Leader address(es), "a:50051,b:50051" or a sequence: run as a read-only follower.
    follow: str | tuple[str, ...] | None = None
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
    # Envoy's external processor (sidecar/_extproc.py), served on the same listener.
    extproc_alias: str = DEFAULT_ALIAS  # the body's "model" that asks for routing
    extproc_prompt: str = DEFAULT_PROMPT_RULE  # last-user | all-user | conversation
    extproc_max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger bodies get HTTP 413
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
    """A built server and the parts behind it, for the CLI and for tests."""

    def __init__(
        self,
        config: ServerConfig,
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
        self.config = config
        self.server = server
        self.port = port
        self.registry = registry
        self.router = router
        self.health = health_servicer
        self.hub = hub
        self.follower = follower
        self.admission = admission
        self.metrics = metrics
        self.metrics_port = 0  # the /metrics HTTP port, when metrics_listen is set
        self.extproc: ExternalProcessorServicer | None = None  # set by _add_services
        self._ready = threading.Event()
        self._stopped = threading.Event()
        # (revision announced, revision read) of the last table build; see on_commit.
        self._built = (0, 0)

    @property
    def tables(self) -> TableHolder:
        return self.router.tables

    def start(self) -> Sidecar:
        """Listens NOT_SERVING, warms up, then reports SERVING (a table is needed for that)."""
        self.server.start()
        try:
            if self.config.metrics_listen:
                self.metrics_port = self._serve_metrics(self.config.metrics_listen)
            self.router.warm_up()
        except BaseException:
            self.stop(0)
            raise
        self._ready.set()
        if self.tables.current is not None:
            self._set_health(_SERVING)
        if self.follower is not None:
            self.follower.start()
        table = self.tables.current
        log.info(
            "%s on %s (port %d): revision %d, clustering %s, %d model(s)",
            f"following {self.follower.describe_leaders()}" if self.follower else "leading",
            self.config.listen,
            self.port,
            table.revision if table else 0,
            table.clustering_version if table else "-",
            table.size if table else 0,
        )
        return self

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
        if self.router.batcher is not None:
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

    def on_commit(self, revision: int) -> None:
        """Store listener: tell the Watch hub, then rebuild and swap the table.

        The hub goes first so followers do not wait for this server's own
        rebuild; both are done before a local write is acknowledged. Calls come
        in revision order (the store serialises them). The snapshot may already
        be newer than ``revision`` when other replicas wrote meanwhile; the
        revisions it already covers then skip the rebuild.
        """
        if self.hub is not None:
            self.hub.on_commit(revision)
        announced, read = self._built
        if not announced < revision <= read:  # a lower revision: a replica's store was replaced
            snapshot = self.registry.snapshot()
            self._built = (revision, snapshot.revision)
            table = RoutingTable.from_snapshot(snapshot)
            if table is not None:
                self.tables.publish(table, allow_older=True)
                self.metrics.observe_table(table.revision, table.size)
                if self._ready.is_set():
                    self._set_health(_SERVING)

    def on_refused(self, reason: str | None) -> None:
        """Follower: a refused clustering turns the Registry service NOT_SERVING until cleared."""
        self.health.set(REGISTRY_SERVICE, _NOT_SERVING if reason else _SERVING)

    def _set_health(self, status: int) -> None:
        for name in ("", ROUTER_SERVICE, REGISTRY_SERVICE, EXT_PROC_SERVICE):
            self.health.set(name, status)

    def _serve_metrics(self, address: str) -> int:
        try:
            port = self.metrics.serve_http(address)
        except OSError as exc:
            raise ArtifactError(f"cannot serve metrics on {address}: {exc}") from exc
        log.info("metrics on http://%s:%d/metrics", address.rpartition(":")[0], port)
        return port


def serve(config: ServerConfig, *, embedder: EmbedderLike | None = None) -> Sidecar:
    """Builds and starts a sidecar; see ``build`` for what can stop it early."""
    return build(config, embedder=embedder).start()


def build(config: ServerConfig, *, embedder: EmbedderLike | None = None) -> Sidecar:
    """Loads and checks everything and binds the listener, without serving yet.

    Raises a SidecarError (ArtifactError for anything on disk) when a setting,
    the embedder, the clustering or the database is unusable, so the process
    never half-starts. A follower with no local copy yet will start
    NOT_SERVING and turn SERVING at its first snapshot.
    """
    leaders = leader_addresses(config.follow) if config.follow else ()
    if leaders and config.artifact_dir is not None:
        raise InvalidArgument("a follower takes its clustering from the leader; drop --artifact")
    if leaders and is_postgres(config.db_path):
        raise InvalidArgument(
            "a follower keeps its own local copy: give it a SQLite --db; a PostgreSQL --db is "
            "for registry replicas, which take writes"
        )
    # Security settings are checked first: a bad token or PEM must stop start-up early.
    auth = AuthPolicy(config.write_tokens, config.read_tokens)
    _extproc_options(config)  # a bad --extproc-* value stops start-up too
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
        embedder = load_embedder(
            config.embedder_dir or default_embedder_dir(),
            threads=config.embedder_threads,
            truncation=config.truncation,
        )
    registry = Registry.open(config.db_path, history=config.history, durable=not config.follow)
    try:
        _load_clustering(registry, config, embedder.fingerprint)
        metrics = Metrics()
        router = _router(
            config, embedder, TableHolder(RoutingTable.from_snapshot(registry.snapshot())), metrics
        )
        health_servicer = health.HealthServicer()
        admission = AdmissionInterceptor()
        interceptors: list[grpc.ServerInterceptor] = [AuthInterceptor(auth)] if auth.enabled else []
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers),
            interceptors=[*interceptors, admission],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", config.max_receive_message_bytes),
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
                # gRPC turns SO_REUSEPORT on by default: a second sidecar on the
                # same port would then silently take half its connections.
                ("grpc.so_reuseport", int(config.reuse_port)),
            ],
        )
        hub, follower = None, None
        if config.follow:
            follower = Follower(
                leaders,
                registry,
                embedder.fingerprint,
                stale_after=max(5.0, 5 * config.progress_interval),
                credentials=leader_credentials,
                metadata=bearer_metadata(config.leader_token),
            )
        else:
            hub = WatchHub(
                registry,
                buffer=config.watch_buffer,
                progress_interval=config.progress_interval,
                max_watchers=min(config.max_watchers, max(1, config.max_workers - 4)),
            )
        try:
            port = (
                server.add_secure_port(config.listen, listener_credentials)
                if listener_credentials is not None
                else server.add_insecure_port(config.listen)
            )
        except RuntimeError as exc:
            raise ArtifactError(f"cannot listen on {config.listen}: {exc}") from exc
    except BaseException:
        registry.close()
        raise
    sidecar = Sidecar(
        config, server, port, registry, router, health_servicer, hub, follower, admission, metrics
    )
    _add_services(sidecar, embedder.fingerprint)
    if follower is not None:
        follower.on_refused = sidecar.on_refused
    registry.add_listener(sidecar.on_commit)
    if router.tables.current is not None:
        metrics.observe_table(router.tables.current.revision, router.tables.current.size)
    _register_gauges(sidecar)
    sidecar._set_health(_NOT_SERVING)
    return sidecar


def _add_services(sidecar: Sidecar, fingerprint: str) -> None:
    """Every service on the one listener, plus health and reflection."""
    server = sidecar.server
    router_pb2_grpc.add_RouterServicer_to_server(
        RouterServicer(sidecar.router, sidecar.metrics, log_prompts=sidecar.config.log_prompts),
        server,
    )
    registry_pb2_grpc.add_RegistryServicer_to_server(
        RegistryServicer(
            sidecar.registry,
            tables=sidecar.tables,
            embedder_fingerprint=fingerprint,
            hub=sidecar.hub,
            follower=sidecar.follower,
            metrics=sidecar.metrics,
        ),
        server,
    )
    extproc = ExternalProcessorServicer(
        sidecar.router, _extproc_options(sidecar.config), sidecar.metrics
    )
    ext_proc_pb2_grpc.add_ExternalProcessorServicer_to_server(extproc, server)
    sidecar.metrics.gauge_from(
        "uniroute_extproc_streams",
        "Open ext_proc streams (one per HTTP request being decided).",
        lambda: extproc.active_streams,
    )
    sidecar.extproc = extproc
    health_pb2_grpc.add_HealthServicer_to_server(sidecar.health, server)
    services = (
        ROUTER_SERVICE,
        REGISTRY_SERVICE,
        EXT_PROC_SERVICE,
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(services, server)


def _extproc_options(config: ServerConfig) -> RouteOptions:
    return RouteOptions(
        alias=config.extproc_alias,
        prompt_rule=config.extproc_prompt,
        max_body_bytes=config.extproc_max_body_bytes,
    )


def _router(
    config: ServerConfig, embedder: EmbedderLike, tables: TableHolder, metrics: Metrics
) -> Router:
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
    return Router(
        tables,
        embedder,
        default_cost_weight=config.cost_weight,
        cache=EmbeddingCache(config.embedding_cache) if config.embedding_cache > 0 else None,
        batcher=batcher,
        metrics=metrics,
        max_prompt_bytes=config.max_prompt_bytes,
        max_batch_requests=config.max_batch_requests,
    )


def _load_clustering(registry: Registry, config: ServerConfig, fingerprint: str) -> None:
    """Leader: activates --artifact if given, else keeps the stored one, else the starter.

    The embedder check comes before activation, so a mismatch changes nothing.
    A follower only checks its local copy; its clustering comes from the leader.
    """
    stored = registry.active_clustering()
    if (config.follow or config.artifact_dir is None) and stored is not None:
        require_embedder(stored.clustering, fingerprint, registry.store.location)
        return
    if config.follow:
        return
    source = config.artifact_dir or starter_artifact_dir(fingerprint)
    clustering = load_clustering(source)
    require_embedder(clustering, fingerprint, str(source))
    registry.activate_clustering(clustering)


def _register_gauges(sidecar: Sidecar) -> None:
    """Scrape-time gauges: read from the live objects, never copied on the request path."""
    metrics, admission = sidecar.metrics, sidecar.admission
    metrics.gauge_from(
        "uniroute_calls_in_flight",
        "RPCs accepted and not yet finished.",
        lambda: admission.in_flight,
    )
    cache = sidecar.router.cache
    if cache is not None:
        metrics.gauge_from(
            "uniroute_embedding_cache_hits", "Cache hits since start.", lambda: cache.hits
        )
        metrics.gauge_from(
            "uniroute_embedding_cache_misses", "Cache misses since start.", lambda: cache.misses
        )
    if sidecar.follower is not None:
        status = sidecar.follower.status
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
