"""Conversions between the registry's records and their protobuf messages.

One place for both directions, so the leader's Watch stream and the follower
that applies it cannot drift apart.
"""

from __future__ import annotations

import numpy as np
from google.protobuf import timestamp_pb2
from uniroute.v1 import registry_pb2

from ._clustering import Clustering
from ._errors import InvalidArgument
from ._registry import SOURCE_EXPLICIT, SOURCE_RESULTS, ModelRecord

_PROFILE_SOURCES = {
    SOURCE_RESULTS: registry_pb2.PROFILE_SOURCE_RESULTS,
    SOURCE_EXPLICIT: registry_pb2.PROFILE_SOURCE_EXPLICIT,
}
_SOURCE_NAMES = {v: k for k, v in _PROFILE_SOURCES.items()}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def model_message(record: ModelRecord) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=record.name,
        cost=record.cost,
        error_rates=record.error_rates.tolist(),
        validation_counts=record.validation_counts.tolist(),
        overall_error=record.overall_error,
        revision=record.revision,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        clustering_version=record.clustering_version,
        description=record.description,
        labels=dict(record.labels),
        profile_source=_PROFILE_SOURCES.get(
            record.profile_source, registry_pb2.PROFILE_SOURCE_UNSPECIFIED
        ),
        result_count=record.result_count,
        create_revision=record.create_revision,
    )


def model_record(message: registry_pb2.Model) -> ModelRecord:
    """The inverse of model_message (times to the nanosecond)."""
    return ModelRecord(
        name=message.name,
        cost=message.cost,
        error_rates=np.asarray(message.error_rates, dtype=np.float64),
        validation_counts=np.asarray(message.validation_counts, dtype=np.int64),
        overall_error=message.overall_error,
        result_count=message.result_count,
        profile_source=_SOURCE_NAMES.get(message.profile_source, SOURCE_RESULTS),
        clustering_version=message.clustering_version,
        description=message.description,
        labels=dict(message.labels),
        create_revision=message.create_revision,
        revision=message.revision,
        create_time=message.create_time.ToNanoseconds() / 1e9,
        update_time=message.update_time.ToNanoseconds() / 1e9,
    )


def clustering_spec(
    clustering: Clustering, activated_revision: int = 0
) -> registry_pb2.ClusteringSpec:
    return registry_pb2.ClusteringSpec(
        activated_revision=activated_revision,
        version=clustering.version,
        embedder_fingerprint=clustering.embedder_fingerprint,
        k=clustering.k,
        dim=clustering.dim,
        centroids=np.ascontiguousarray(clustering.centroids, dtype="<f4").tobytes(),
        validation_item_ids=list(clustering.item_ids),
        validation_clusters=[int(c) for c in clustering.item_clusters],
    )


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
    clustering = Clustering(
        centroids=np.ascontiguousarray(centroids),
        embedder_fingerprint=spec.embedder_fingerprint,
        item_ids=tuple(spec.validation_item_ids),
        item_clusters=clusters,
    )
    if spec.version and spec.version != clustering.version:
        raise InvalidArgument(
            f"clustering version {spec.version!r} does not match its content "
            f"({clustering.version!r})"
        )
    return clustering
