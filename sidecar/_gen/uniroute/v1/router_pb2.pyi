from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteRequest(_message.Message):
    __slots__ = ("prompt", "candidate_models", "cost_weight", "embedding", "request_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_MODELS_FIELD_NUMBER: _ClassVar[int]
    COST_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    candidate_models: _containers.RepeatedScalarFieldContainer[str]
    cost_weight: float
    embedding: _containers.RepeatedScalarFieldContainer[float]
    request_id: str
    def __init__(self, prompt: _Optional[str] = ..., candidate_models: _Optional[_Iterable[str]] = ..., cost_weight: _Optional[float] = ..., embedding: _Optional[_Iterable[float]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CandidateScore(_message.Message):
    __slots__ = ("model", "expected_error", "cost", "score")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ERROR_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    model: str
    expected_error: float
    cost: float
    score: float
    def __init__(self, model: _Optional[str] = ..., expected_error: _Optional[float] = ..., cost: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("model", "cluster", "scores", "revision", "clustering_version", "cost_weight", "truncated", "prompt_tokens", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CLUSTERING_VERSION_FIELD_NUMBER: _ClassVar[int]
    COST_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    cluster: int
    scores: _containers.RepeatedCompositeFieldContainer[CandidateScore]
    revision: int
    clustering_version: str
    cost_weight: float
    truncated: bool
    prompt_tokens: int
    request_id: str
    def __init__(self, model: _Optional[str] = ..., cluster: _Optional[int] = ..., scores: _Optional[_Iterable[_Union[CandidateScore, _Mapping]]] = ..., revision: _Optional[int] = ..., clustering_version: _Optional[str] = ..., cost_weight: _Optional[float] = ..., truncated: _Optional[bool] = ..., prompt_tokens: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RouteBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RouteRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RouteRequest, _Mapping]]] = ...) -> None: ...

class RouteBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RouteResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RouteResponse, _Mapping]]] = ...) -> None: ...
