"""Every conversion between the sidecar's records and its protobuf messages.

This is the only module that reads or builds generated messages field by
field, in both directions, so the leader's Watch stream and the follower that
applies it, or the servicer and its clients, cannot drift apart. Model
messages are derived from ``ModelRecord``'s field list: the two share every
field name.

Longer than 400 lines on purpose: it is the one place for every wire conversion
(models, clusterings, Watch, Route, ext_proc), which is the point of it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf import duration_pb2, timestamp_pb2

from ._clustering import MAP_KMEANS, MAP_LEARNED, Clustering, LearnedMap, hard_clusters
from ._errors import InvalidArgument
from ._proto import (
    envoy_base_pb2,
    ext_proc_pb2,
    http_status_pb2,
    processing_mode_pb2,
    registry_pb2,
    router_pb2,
)
from ._records import SOURCE_EXPLICIT, SOURCE_RESULTS, Change, ChangeSet, ModelRecord, Snapshot
from ._route_records import Decision, Query

if TYPE_CHECKING:
    from ._http_route import Step

_PROFILE_SOURCES = {
    SOURCE_RESULTS: registry_pb2.PROFILE_SOURCE_RESULTS,
    SOURCE_EXPLICIT: registry_pb2.PROFILE_SOURCE_EXPLICIT,
}
_SOURCE_NAMES = {v: k for k, v in _PROFILE_SOURCES.items()}
_EVENT_TYPES = {"put": registry_pb2.EVENT_TYPE_PUT, "delete": registry_pb2.EVENT_TYPE_DELETE}
_EVENT_NAMES = {v: k for k, v in _EVENT_TYPES.items()}
_MAP_KINDS = {MAP_KMEANS: registry_pb2.MAP_KIND_KMEANS, MAP_LEARNED: registry_pb2.MAP_KIND_LEARNED}
_TIMES = ("create_time", "update_time")
_PAGE_TOKEN_PREFIX = "v1:"


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


# ------------------------------------------------------------------------ models


def model_message(record: ModelRecord) -> registry_pb2.Model:
    values: dict[str, Any] = {}
    for f in fields(ModelRecord):
        value = getattr(record, f.name)
        if f.name in _TIMES:
            value = timestamp(value)
        elif f.name == "profile_source":
            value = _PROFILE_SOURCES.get(value, registry_pb2.PROFILE_SOURCE_UNSPECIFIED)
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif f.name == "labels":
            value = dict(value)
        values[f.name] = value
    return registry_pb2.Model(**values)


def model_record(message: registry_pb2.Model) -> ModelRecord:
    """The inverse of model_message (times to the nanosecond)."""
    values: dict[str, Any] = {}
    for f in fields(ModelRecord):
        value = getattr(message, f.name)
        if f.name in _TIMES:
            value = value.ToNanoseconds() / 1e9
        elif f.name == "profile_source":
            value = _SOURCE_NAMES.get(value, SOURCE_RESULTS)
        elif f.name == "error_rates":
            value = np.asarray(value, dtype=np.float64)
        elif f.name == "validation_counts":
            value = np.asarray(value, dtype=np.int64)
        elif f.name == "labels":
            value = dict(value)
        values[f.name] = value
    return ModelRecord(**values)


def page_token(last_name: str) -> str:
    """An opaque page token (AIP-158): clients must not build or parse it."""
    raw = (_PAGE_TOKEN_PREFIX + last_name).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_token_after(token: str) -> str:
    """The last name of the previous page, from a page token; '' for the first page."""
    if not token:
        return ""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith(_PAGE_TOKEN_PREFIX):
        raise InvalidArgument(
            "page_token is not one this server issued; pass next_page_token unchanged, "
            "or leave it empty for the first page"
        )
    return raw[len(_PAGE_TOKEN_PREFIX) :]


# ------------------------------------------------------------------- clusterings


def clustering_spec(
    clustering: Clustering, activated_revision: int = 0
) -> registry_pb2.ClusteringSpec:
    spec = registry_pb2.ClusteringSpec(
        activated_revision=activated_revision,
        version=clustering.version,
        embedder_fingerprint=clustering.embedder_fingerprint,
        k=clustering.k,
        dim=clustering.dim,
        centroids=_f32_bytes(clustering.centroids),
        validation_item_ids=list(clustering.item_ids),
        validation_clusters=[int(c) for c in clustering.item_clusters],
        map_kind=_MAP_KINDS[clustering.map_kind],
    )
    if clustering.learned is not None:
        spec.theta = _f32_bytes(clustering.learned.theta)
        spec.bias = _f32_bytes(clustering.learned.bias)
        spec.validation_weights = _f32_bytes(clustering.learned.item_weights)
    return spec


def _f32_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _f32_array(data: bytes, shape: tuple[int, int] | tuple[int], what: str) -> np.ndarray:
    """Little-endian float32 bytes of exactly ``shape``, finite, as a native float32 array."""
    size = int(np.prod(shape))
    if len(data) != 4 * size:
        raise InvalidArgument(f"{what} must be {4 * size} bytes (float32 {shape}), got {len(data)}")
    array = np.frombuffer(data, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise InvalidArgument(f"{what} must be finite")
    return np.ascontiguousarray(array)


def _learned_map_from_spec(spec: registry_pb2.ClusteringSpec, clusters: np.ndarray) -> LearnedMap:
    k, dim, n = spec.k, spec.dim, len(spec.validation_item_ids)
    learned = LearnedMap(
        theta=_f32_array(spec.theta, (k, dim), "theta"),
        bias=_f32_array(spec.bias, (k,), "bias"),
        item_weights=_f32_array(spec.validation_weights, (n, k), "validation_weights"),
    )
    try:
        learned.check(k, dim, n)
    except ValueError as exc:
        raise InvalidArgument(f"learned map: {exc}") from exc
    if not np.array_equal(clusters, hard_clusters(learned.item_weights)):
        raise InvalidArgument(
            "validation_clusters must be each item's argmax of validation_weights"
        )
    return learned


def clustering_from_spec(spec: registry_pb2.ClusteringSpec) -> Clustering:
    """Decodes and verifies a clustering: shape, cluster range and content hash."""
    k, dim = spec.k, spec.dim
    if k < 1 or dim < 1:
        raise InvalidArgument(f"clustering needs k >= 1 and dim >= 1, got k={k} dim={dim}")
    if len(spec.centroids) != 4 * k * dim:
        raise InvalidArgument(
            f"centroids must be {4 * k * dim} bytes (K*D float32), got {len(spec.centroids)}"
        )
    if len(spec.validation_item_ids) != len(spec.validation_clusters):
        raise InvalidArgument("validation_item_ids and validation_clusters differ in length")
    if len(set(spec.validation_item_ids)) != len(spec.validation_item_ids):
        raise InvalidArgument("validation item ids must be unique")
    clusters = np.asarray(spec.validation_clusters, dtype=np.int64)
    if clusters.size and (clusters.min() < 0 or clusters.max() >= k):
        raise InvalidArgument(f"a validation cluster index is outside [0, {k})")
    centroids = np.frombuffer(spec.centroids, dtype="<f4").reshape(k, dim).astype(np.float32)
    if not np.all(np.isfinite(centroids)):
        raise InvalidArgument("centroids must be finite")
    learned = None
    if spec.map_kind == registry_pb2.MAP_KIND_LEARNED:
        learned = _learned_map_from_spec(spec, clusters)
    elif spec.map_kind not in (registry_pb2.MAP_KIND_UNSPECIFIED, registry_pb2.MAP_KIND_KMEANS):
        raise InvalidArgument(f"unknown map_kind {spec.map_kind}")
    elif spec.theta or spec.bias or spec.validation_weights:
        raise InvalidArgument("theta, bias and validation_weights are for MAP_KIND_LEARNED only")
    clustering = Clustering(
        centroids=np.ascontiguousarray(centroids),
        embedder_fingerprint=spec.embedder_fingerprint,
        item_ids=tuple(spec.validation_item_ids),
        item_clusters=clusters,
        learned=learned,
    )
    if spec.version and spec.version != clustering.version:
        raise InvalidArgument(
            f"clustering version {spec.version!r} does not match its content "
            f"({clustering.version!r})"
        )
    return clustering


def clustering_message(
    clustering: Clustering, revision: int, create_time: float, *, include_assignment: bool = False
) -> registry_pb2.Clustering:
    """The clustering without centroids; with the item -> cluster assignment only on request."""
    message = registry_pb2.Clustering(
        version=clustering.version,
        k=clustering.k,
        dim=clustering.dim,
        embedder_fingerprint=clustering.embedder_fingerprint,
        validation_counts=clustering.cluster_counts().tolist(),
        revision=revision,
        create_time=timestamp(create_time),
        map_kind=_MAP_KINDS[clustering.map_kind],
    )
    if include_assignment:
        message.validation_item_ids.extend(clustering.item_ids)
        message.validation_clusters.extend(int(c) for c in clustering.item_clusters)
        if clustering.learned is not None:
            message.validation_weights = _f32_bytes(clustering.learned.item_weights)
    return message


# ------------------------------------------------------------------------- Watch


def change_set_response(
    change_set: ChangeSet, header: registry_pb2.ResponseHeader
) -> registry_pb2.WatchResponse:
    events = []
    for change in change_set.changes:
        event = registry_pb2.Event(type=_EVENT_TYPES[change.type])
        if change.kind == "clustering" and change.clustering is not None:
            event.clustering.CopyFrom(clustering_spec(change.clustering, change_set.revision))
        elif change.model is not None:
            event.model.CopyFrom(model_message(change.model))
        else:
            event.model.name = change.key
        events.append(event)
    return registry_pb2.WatchResponse(header=header, changes=registry_pb2.ChangeSet(events=events))


def change_set_from_response(response: registry_pb2.WatchResponse) -> ChangeSet:
    """The inverse of change_set_response; clusterings are verified as they are decoded."""
    changes = []
    for event in response.changes.events:
        type_ = _EVENT_NAMES.get(event.type)
        if type_ is None:
            raise InvalidArgument(f"event type {event.type} is not put or delete")
        if event.WhichOneof("target") == "clustering":
            clustering = clustering_from_spec(event.clustering)
            changes.append(Change(type_, "clustering", clustering.version, None, clustering))
        elif type_ == "put":
            changes.append(Change(type_, "model", event.model.name, model_record(event.model)))
        else:
            changes.append(Change(type_, "model", event.model.name))
    return ChangeSet(response.header.revision, tuple(changes))


def snapshot_response(
    snapshot: Snapshot, reason: registry_pb2.SnapshotReason, header: registry_pb2.ResponseHeader
) -> registry_pb2.WatchResponse:
    message = registry_pb2.RegistrySnapshot(
        reason=reason, models=[model_message(m) for m in snapshot.models]
    )
    if snapshot.clustering is not None:
        active = snapshot.clustering
        message.clustering.CopyFrom(clustering_spec(active.clustering, active.revision))
    return registry_pb2.WatchResponse(header=header, snapshot=message)


# ------------------------------------------------------------------------- Route


def route_query(request: router_pb2.RouteRequest) -> Query:
    return Query(
        prompt=request.prompt,
        candidates=request.candidate_models,
        cost_weight=request.cost_weight if request.HasField("cost_weight") else None,
        embedding=request.embedding,
        request_id=request.request_id,
    )


def route_response(decision: Decision) -> router_pb2.RouteResponse:
    response = _decision_fields(decision)
    _set_request_fields(response, decision)
    return response


class RouteResponses:
    """Builds RouteResponses, each table-determined part once.

    Under a K-means table a decision's model, cluster and candidate scores depend
    only on (table, cluster, cost_weight, candidate mask), and building the
    CandidateScore messages field by field in Python was the largest single cost
    of a static Route (about a quarter of it). So that part is built once per key
    into a prototype and copied in C afterwards; only truncated, prompt_tokens and
    request_id are set per request. A LearnedMap decision (its expected errors
    depend on the prompt's Φ) is built in full. The memo belongs to one table
    object: a new table starts a new one, and it is cleared when full.
    Thread-safe: the (table, memo) pair is replaced whole, and a prototype is
    never mutated after it is stored.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._memo: tuple[object, dict[tuple[int, float, bytes], router_pb2.RouteResponse]] = (
            None,
            {},
        )

    def response(self, decision: Decision) -> router_pb2.RouteResponse:
        if decision.weights is not None:
            return route_response(decision)
        table, memo = self._memo
        if table is not decision.table:
            memo = {}
            self._memo = (decision.table, memo)
        key = (decision.cluster, decision.cost_weight, decision.mask.tobytes())
        prototype = memo.get(key)
        if prototype is None:
            prototype = _decision_fields(decision)
            if len(memo) >= self._max_entries:
                memo.clear()
            memo[key] = prototype
        response = router_pb2.RouteResponse()
        response.CopyFrom(prototype)
        _set_request_fields(response, decision)
        return response

    def responses(self, decisions: Sequence[Decision]) -> router_pb2.RouteBatchResponse:
        return router_pb2.RouteBatchResponse(responses=[self.response(d) for d in decisions])


def _decision_fields(decision: Decision) -> router_pb2.RouteResponse:
    """Everything but the request's own fields (for a K-means table: what the memo key fixes)."""
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
    )


def _set_request_fields(response: router_pb2.RouteResponse, decision: Decision) -> None:
    response.truncated = decision.truncated
    response.prompt_tokens = decision.prompt_tokens
    response.request_id = decision.request_id


# ---------------------------------------------------------------- Envoy ext_proc

_OVERWRITE = envoy_base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_MODE = processing_mode_pb2.ProcessingMode
_HEADER_PHASES = ("request_headers", "response_headers")
_BODY_PHASES = ("request_body", "response_body")


def extproc_phase(request: ext_proc_pb2.ProcessingRequest) -> str | None:
    """Which part of the HTTP exchange a ProcessingRequest carries (None: none set)."""
    return request.WhichOneof("request")


def http_headers(message: ext_proc_pb2.HttpHeaders) -> dict[str, str]:
    """Lower-cased header names to values; Envoy sends bytes in raw_value (else value).

    A repeated header's values are joined with commas, as HTTP allows.
    """
    headers: dict[str, str] = {}
    for header in message.headers.headers:
        key = header.key.lower()
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def _header_mutation(headers: Sequence[tuple[str, str]]) -> ext_proc_pb2.HeaderMutation:
    return ext_proc_pb2.HeaderMutation(
        set_headers=[
            envoy_base_pb2.HeaderValueOption(
                header=envoy_base_pb2.HeaderValue(key=key, raw_value=value.encode("utf-8")),
                append_action=_OVERWRITE,
            )
            for key, value in headers
        ]
    )


def extproc_response(phase: str | None, step: Step) -> ext_proc_pb2.ProcessingResponse:
    """The ProcessingResponse that answers ``phase`` with ``step``.

    An answer to request headers also sets the processing mode for the rest of
    the request (Envoy honours it with ``allow_mode_override``): the body
    buffered if the step wants it, else nothing; never the response.
    """
    if step.reply is not None:
        return ext_proc_pb2.ProcessingResponse(
            immediate_response=ext_proc_pb2.ImmediateResponse(
                status=http_status_pb2.HttpStatus(code=step.reply.status),
                headers=_header_mutation([("content-type", "application/json")]),
                body=step.reply.body,
                details=step.reply.details,
            )
        )
    common = ext_proc_pb2.CommonResponse(clear_route_cache=step.clear_route_cache)
    if step.set_headers:
        common.header_mutation.CopyFrom(_header_mutation(step.set_headers))
    if step.body is not None:
        common.body_mutation.body = step.body
    if phase in _HEADER_PHASES:
        headers = ext_proc_pb2.HeadersResponse(response=common)
        response = ext_proc_pb2.ProcessingResponse(**{phase: headers})
    elif phase in _BODY_PHASES:
        body = ext_proc_pb2.BodyResponse(response=common)
        response = ext_proc_pb2.ProcessingResponse(**{phase: body})
    elif phase in ("request_trailers", "response_trailers"):
        trailers = ext_proc_pb2.TrailersResponse()
        response = ext_proc_pb2.ProcessingResponse(**{phase: trailers})
    else:
        response = ext_proc_pb2.ProcessingResponse()
    if phase == "request_headers":
        response.mode_override.CopyFrom(
            _MODE(
                request_body_mode=_MODE.BUFFERED if step.wants_body else _MODE.NONE,
                response_header_mode=_MODE.SKIP,
                response_body_mode=_MODE.NONE,
                request_trailer_mode=_MODE.SKIP,
                response_trailer_mode=_MODE.SKIP,
            )
        )
    return response
