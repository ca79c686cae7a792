import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProfileSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROFILE_SOURCE_UNSPECIFIED: _ClassVar[ProfileSource]
    PROFILE_SOURCE_RESULTS: _ClassVar[ProfileSource]
    PROFILE_SOURCE_EXPLICIT: _ClassVar[ProfileSource]

class MapKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAP_KIND_UNSPECIFIED: _ClassVar[MapKind]
    MAP_KIND_KMEANS: _ClassVar[MapKind]
    MAP_KIND_LEARNED: _ClassVar[MapKind]

class SnapshotReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_REASON_UNSPECIFIED: _ClassVar[SnapshotReason]
    SNAPSHOT_REASON_REQUESTED: _ClassVar[SnapshotReason]
    SNAPSHOT_REASON_COMPACTED: _ClassVar[SnapshotReason]
    SNAPSHOT_REASON_AHEAD: _ClassVar[SnapshotReason]
    SNAPSHOT_REASON_STORE_CHANGED: _ClassVar[SnapshotReason]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_PUT: _ClassVar[EventType]
    EVENT_TYPE_DELETE: _ClassVar[EventType]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_LEADER: _ClassVar[Role]
    ROLE_FOLLOWER: _ClassVar[Role]
PROFILE_SOURCE_UNSPECIFIED: ProfileSource
PROFILE_SOURCE_RESULTS: ProfileSource
PROFILE_SOURCE_EXPLICIT: ProfileSource
MAP_KIND_UNSPECIFIED: MapKind
MAP_KIND_KMEANS: MapKind
MAP_KIND_LEARNED: MapKind
SNAPSHOT_REASON_UNSPECIFIED: SnapshotReason
SNAPSHOT_REASON_REQUESTED: SnapshotReason
SNAPSHOT_REASON_COMPACTED: SnapshotReason
SNAPSHOT_REASON_AHEAD: SnapshotReason
SNAPSHOT_REASON_STORE_CHANGED: SnapshotReason
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_PUT: EventType
EVENT_TYPE_DELETE: EventType
ROLE_UNSPECIFIED: Role
ROLE_LEADER: Role
ROLE_FOLLOWER: Role

class Model(_message.Message):
    __slots__ = ("name", "cost", "error_rates", "validation_counts", "overall_error", "revision", "create_time", "update_time", "clustering_version", "description", "labels", "profile_source", "result_count", "create_revision")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_COUNTS_FIELD_NUMBER: _ClassVar[int]
    OVERALL_ERROR_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CLUSTERING_VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    cost: float
    error_rates: _containers.RepeatedScalarFieldContainer[float]
    validation_counts: _containers.RepeatedScalarFieldContainer[int]
    overall_error: float
    revision: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    clustering_version: str
    description: str
    labels: _containers.ScalarMap[str, str]
    profile_source: ProfileSource
    result_count: int
    create_revision: int
    def __init__(self, name: _Optional[str] = ..., cost: _Optional[float] = ..., error_rates: _Optional[_Iterable[float]] = ..., validation_counts: _Optional[_Iterable[int]] = ..., overall_error: _Optional[float] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., clustering_version: _Optional[str] = ..., description: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., profile_source: _Optional[_Union[ProfileSource, str]] = ..., result_count: _Optional[int] = ..., create_revision: _Optional[int] = ...) -> None: ...

class ValidationResult(_message.Message):
    __slots__ = ("item_id", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ValidationResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ValidationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ValidationResult, _Mapping]]] = ...) -> None: ...

class ErrorProfile(_message.Message):
    __slots__ = ("error_rates",)
    ERROR_RATES_FIELD_NUMBER: _ClassVar[int]
    error_rates: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, error_rates: _Optional[_Iterable[float]] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ("name", "cost", "results", "profile", "description", "labels", "allow_update")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UPDATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cost: float
    results: ValidationResults
    profile: ErrorProfile
    description: str
    labels: _containers.ScalarMap[str, str]
    allow_update: bool
    def __init__(self, name: _Optional[str] = ..., cost: _Optional[float] = ..., results: _Optional[_Union[ValidationResults, _Mapping]] = ..., profile: _Optional[_Union[ErrorProfile, _Mapping]] = ..., description: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., allow_update: _Optional[bool] = ...) -> None: ...

class DeregisterModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeregisterModelResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token", "revision")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    revision: int
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class GetClusteringRequest(_message.Message):
    __slots__ = ("include_assignment",)
    INCLUDE_ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    include_assignment: bool
    def __init__(self, include_assignment: _Optional[bool] = ...) -> None: ...

class Clustering(_message.Message):
    __slots__ = ("version", "k", "dim", "embedder_fingerprint", "validation_counts", "revision", "create_time", "validation_item_ids", "validation_clusters", "map_kind", "validation_weights")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_COUNTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    MAP_KIND_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    version: str
    k: int
    dim: int
    embedder_fingerprint: str
    validation_counts: _containers.RepeatedScalarFieldContainer[int]
    revision: int
    create_time: _timestamp_pb2.Timestamp
    validation_item_ids: _containers.RepeatedScalarFieldContainer[str]
    validation_clusters: _containers.RepeatedScalarFieldContainer[int]
    map_kind: MapKind
    validation_weights: bytes
    def __init__(self, version: _Optional[str] = ..., k: _Optional[int] = ..., dim: _Optional[int] = ..., embedder_fingerprint: _Optional[str] = ..., validation_counts: _Optional[_Iterable[int]] = ..., revision: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., validation_item_ids: _Optional[_Iterable[str]] = ..., validation_clusters: _Optional[_Iterable[int]] = ..., map_kind: _Optional[_Union[MapKind, str]] = ..., validation_weights: _Optional[bytes] = ...) -> None: ...

class ClusteringSpec(_message.Message):
    __slots__ = ("version", "embedder_fingerprint", "k", "dim", "centroids", "validation_item_ids", "validation_clusters", "activated_revision", "map_kind", "theta", "bias", "validation_weights")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_REVISION_FIELD_NUMBER: _ClassVar[int]
    MAP_KIND_FIELD_NUMBER: _ClassVar[int]
    THETA_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    version: str
    embedder_fingerprint: str
    k: int
    dim: int
    centroids: bytes
    validation_item_ids: _containers.RepeatedScalarFieldContainer[str]
    validation_clusters: _containers.RepeatedScalarFieldContainer[int]
    activated_revision: int
    map_kind: MapKind
    theta: bytes
    bias: bytes
    validation_weights: bytes
    def __init__(self, version: _Optional[str] = ..., embedder_fingerprint: _Optional[str] = ..., k: _Optional[int] = ..., dim: _Optional[int] = ..., centroids: _Optional[bytes] = ..., validation_item_ids: _Optional[_Iterable[str]] = ..., validation_clusters: _Optional[_Iterable[int]] = ..., activated_revision: _Optional[int] = ..., map_kind: _Optional[_Union[MapKind, str]] = ..., theta: _Optional[bytes] = ..., bias: _Optional[bytes] = ..., validation_weights: _Optional[bytes] = ...) -> None: ...

class ActivateClusteringRequest(_message.Message):
    __slots__ = ("clustering",)
    CLUSTERING_FIELD_NUMBER: _ClassVar[int]
    clustering: ClusteringSpec
    def __init__(self, clustering: _Optional[_Union[ClusteringSpec, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("start_revision", "store_id")
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    start_revision: int
    store_id: str
    def __init__(self, start_revision: _Optional[int] = ..., store_id: _Optional[str] = ...) -> None: ...

class ResponseHeader(_message.Message):
    __slots__ = ("revision", "compact_revision", "store_id")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    revision: int
    compact_revision: int
    store_id: str
    def __init__(self, revision: _Optional[int] = ..., compact_revision: _Optional[int] = ..., store_id: _Optional[str] = ...) -> None: ...

class RegistrySnapshot(_message.Message):
    __slots__ = ("reason", "clustering", "models")
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLUSTERING_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    reason: SnapshotReason
    clustering: ClusteringSpec
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, reason: _Optional[_Union[SnapshotReason, str]] = ..., clustering: _Optional[_Union[ClusteringSpec, _Mapping]] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "model", "clustering")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLUSTERING_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    model: Model
    clustering: ClusteringSpec
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., clustering: _Optional[_Union[ClusteringSpec, _Mapping]] = ...) -> None: ...

class ChangeSet(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class ProgressNotification(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("header", "snapshot", "changes", "progress")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    snapshot: RegistrySnapshot
    changes: ChangeSet
    progress: ProgressNotification
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., snapshot: _Optional[_Union[RegistrySnapshot, _Mapping]] = ..., changes: _Optional[_Union[ChangeSet, _Mapping]] = ..., progress: _Optional[_Union[ProgressNotification, _Mapping]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerStatus(_message.Message):
    __slots__ = ("role", "revision", "clustering_version", "model_count", "leader", "connected", "since_leader_contact", "reconnect_count", "applied_snapshot_count", "applied_change_set_count", "last_error", "watcher_count", "compact_revision")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CLUSTERING_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SINCE_LEADER_CONTACT_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_COUNT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SNAPSHOT_COUNT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_CHANGE_SET_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    WATCHER_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    role: Role
    revision: int
    clustering_version: str
    model_count: int
    leader: str
    connected: bool
    since_leader_contact: _duration_pb2.Duration
    reconnect_count: int
    applied_snapshot_count: int
    applied_change_set_count: int
    last_error: str
    watcher_count: int
    compact_revision: int
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., revision: _Optional[int] = ..., clustering_version: _Optional[str] = ..., model_count: _Optional[int] = ..., leader: _Optional[str] = ..., connected: _Optional[bool] = ..., since_leader_contact: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reconnect_count: _Optional[int] = ..., applied_snapshot_count: _Optional[int] = ..., applied_change_set_count: _Optional[int] = ..., last_error: _Optional[str] = ..., watcher_count: _Optional[int] = ..., compact_revision: _Optional[int] = ...) -> None: ...
