"""The gRPC servicers: thin adapters from messages to the router and the registry.

A servicer decodes its request through ``_wire``, calls one plain module and
encodes the answer; ``answer_errors`` maps the exception tree to status codes
in one place. No decision is made here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from ._clustering import require_embedder
from ._errors import FailedPrecondition, InvalidArgument, SidecarError
from ._follower import Follower
from ._metrics import Metrics
from ._proto import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc
from ._registry import Registry
from ._router import Router
from ._table import TableHolder
from ._watch import WatchHub
from ._wire import (
    RouteResponses,
    clustering_from_spec,
    clustering_message,
    duration,
    model_message,
    page_token,
    page_token_after,
    route_query,
)

log = logging.getLogger("sidecar.server")

MAX_PAGE_SIZE = 1000

Handler = TypeVar("Handler", bound=Callable[..., Any])


def answer_errors(method: Handler) -> Handler:
    """Maps SidecarError to its status; anything else is INTERNAL without a stack trace."""

    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except SidecarError as exc:
            self.count_error(name, exc.code)
            log.info(
                "%s failed request_id=%s code=%s: %s",
                name,
                getattr(request, "request_id", "") or "-",
                exc.code,
                exc,
            )
            context.abort(grpc.StatusCode[exc.code], str(exc))
        except Exception:
            self.count_error(name, "INTERNAL")
            log.exception("unexpected error in %s", name)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; see the sidecar's log")

    return wrapper  # type: ignore[return-value]


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, router: Router, metrics: Metrics, *, log_prompts: bool = False) -> None:
        self.router = router
        self.metrics = metrics
        self.log_prompts = log_prompts
        self.responses = RouteResponses()

    def count_error(self, method: str, code: str) -> None:
        self.metrics.observe_error(method, code)

    @answer_errors
    def Route(
        self, request: router_pb2.RouteRequest, context: grpc.ServicerContext
    ) -> router_pb2.RouteResponse:
        decision = self.router.route(route_query(request))
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
        return self.responses.response(decision)

    @answer_errors
    def RouteBatch(
        self, request: router_pb2.RouteBatchRequest, context: grpc.ServicerContext
    ) -> router_pb2.RouteBatchResponse:
        decisions = self.router.route_batch([route_query(r) for r in request.requests])
        return self.responses.responses(decisions)


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

    def count_error(self, method: str, code: str) -> None:
        self.metrics.observe_error(method, code)
        if method == "RegisterModel":
            self.metrics.registrations.labels(code=code).inc()

    def _require_leader(self) -> None:
        if self.follower is not None:
            raise FailedPrecondition(
                f"this sidecar is a read-only follower of {self.follower.describe_leaders()}; "
                "send writes to the leader"
            )

    @answer_errors
    def RegisterModel(
        self, request: registry_pb2.RegisterModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Model:
        self._require_leader()
        if not request.HasField("cost"):
            raise InvalidArgument(
                "cost is required: the cost of one request in your unit (0 for a free model)"
            )
        evidence = request.WhichOneof("evidence")
        if evidence is None:
            raise InvalidArgument("set either results (graded validation items) or profile")
        record = self.registry.register_model(
            request.name,
            request.cost,
            results=[(r.item_id, r.score) for r in request.results.results]
            if evidence == "results"
            else None,
            error_rates=list(request.profile.error_rates) if evidence == "profile" else None,
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

    @answer_errors
    def DeregisterModel(
        self, request: registry_pb2.DeregisterModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.DeregisterModelResponse:
        self._require_leader()
        return registry_pb2.DeregisterModelResponse(
            revision=self.registry.deregister_model(request.name)
        )

    @answer_errors
    def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Model:
        return model_message(self.registry.get_model(request.name))

    @answer_errors
    def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
        limit = request.page_size or MAX_PAGE_SIZE
        after = page_token_after(request.page_token)
        models, revision = self.registry.list_models(after=after, limit=limit + 1)
        more = len(models) > limit
        models = models[:limit]
        return registry_pb2.ListModelsResponse(
            models=[model_message(m) for m in models],
            next_page_token=page_token(models[-1].name) if more else "",
            revision=revision,
        )

    @answer_errors
    def GetClustering(
        self, request: registry_pb2.GetClusteringRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Clustering:
        active = self.registry.active_clustering()
        if active is None:
            raise FailedPrecondition("no clustering is loaded")
        return clustering_message(
            active.clustering,
            active.revision,
            active.create_time,
            include_assignment=request.include_assignment,
        )

    @answer_errors
    def ActivateClustering(
        self, request: registry_pb2.ActivateClusteringRequest, context: grpc.ServicerContext
    ) -> registry_pb2.Clustering:
        self._require_leader()
        if not request.HasField("clustering"):
            raise InvalidArgument("clustering is required")
        clustering = clustering_from_spec(request.clustering)
        require_embedder(clustering, self.embedder_fingerprint, "the request")
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
        try:
            yield from self.hub.stream(request.start_revision, context, request.store_id)
        except SidecarError as exc:  # e.g. the registry database is away: UNAVAILABLE
            log.info("Watch failed code=%s: %s", exc.code, exc)
            context.abort(grpc.StatusCode[exc.code], str(exc))

    @answer_errors
    def GetStatus(
        self, request: registry_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ServerStatus:
        table = self.tables.current
        status = registry_pb2.ServerStatus(
            role=registry_pb2.ROLE_FOLLOWER if self.follower else registry_pb2.ROLE_LEADER,
            revision=table.revision if table else 0,
            clustering_version=table.clustering_version if table else "",
            model_count=table.size if table else 0,
        )
        if self.follower is not None:
            f = self.follower.status
            status.leader = f.leader
            status.connected = f.connected
            since = f.seconds_since_contact()
            if since >= 0:
                status.since_leader_contact.CopyFrom(duration(since))
            status.reconnect_count = f.reconnects
            status.applied_snapshot_count = f.snapshots_applied
            status.applied_change_set_count = f.change_sets_applied
            status.last_error = f.last_error
        if self.hub is not None:
            status.watcher_count = self.hub.watcher_count
            status.compact_revision = self.hub.compact_revision()
        return status
