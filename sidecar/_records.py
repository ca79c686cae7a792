"""The control plane's records, each defined once, with codecs derived from the definition.

A model record's fields are declared in one dataclass. Each field carries its
storage kind in ``metadata``, and every codec (the JSON of the event log, the
SQL columns and rows of the stores) walks ``dataclasses.fields``, so adding a
field is one line here, never seven edits across the code base.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ._clustering import Clustering

SOURCE_RESULTS = "results"
SOURCE_EXPLICIT = "explicit"

# Storage kinds: how one field is written to SQL and JSON.
TEXT, REAL, INTEGER, FLOAT_ARRAY, INT_ARRAY, STRING_MAP = (
    "text",
    "real",
    "integer",
    "float64[]",
    "int64[]",
    "map<string,string>",
)


def _kind(kind: str, *, key: bool = False) -> dict[str, Any]:
    return {"kind": kind, "key": key}


@dataclass(frozen=True)
class ModelRecord:
    """One registered model exactly as stored at ``revision``."""

    name: str = field(metadata=_kind(TEXT, key=True))
    cost: float = field(metadata=_kind(REAL))
    error_rates: np.ndarray = field(metadata=_kind(FLOAT_ARRAY))  # Ψ, float64 (K,)
    validation_counts: np.ndarray = field(metadata=_kind(INT_ARRAY))  # n_k, int64 (K,)
    overall_error: float = field(metadata=_kind(REAL))
    result_count: int = field(metadata=_kind(INTEGER))
    profile_source: str = field(metadata=_kind(TEXT))  # SOURCE_RESULTS | SOURCE_EXPLICIT
    clustering_version: str = field(metadata=_kind(TEXT))
    description: str = field(metadata=_kind(TEXT))
    labels: Mapping[str, str] = field(metadata=_kind(STRING_MAP))
    create_revision: int = field(metadata=_kind(INTEGER))
    revision: int = field(metadata=_kind(INTEGER))
    create_time: float = field(metadata=_kind(REAL))
    update_time: float = field(metadata=_kind(REAL))


MODEL_FIELDS = tuple((f.name, f.metadata["kind"], f.metadata["key"]) for f in fields(ModelRecord))
MODEL_COLUMNS = ", ".join(name for name, _, _ in MODEL_FIELDS)

_SQL_TYPES = {
    TEXT: "TEXT",
    REAL: "REAL",
    INTEGER: "INTEGER",
    FLOAT_ARRAY: "BLOB",
    INT_ARRAY: "BLOB",
    STRING_MAP: "TEXT",
}


def model_table_sql(table: str, types: Mapping[str, str] | None = None) -> str:
    """``CREATE TABLE`` for model records; ``types`` overrides the SQL type of a kind."""
    sql_types = {**_SQL_TYPES, **(types or {})}
    columns = [
        f"{name} {sql_types[kind]} {'PRIMARY KEY' if key else 'NOT NULL'}"
        for name, kind, key in MODEL_FIELDS
    ]
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    " + ",\n    ".join(columns) + "\n)"


def model_to_row(record: ModelRecord) -> tuple[Any, ...]:
    """Column values in MODEL_COLUMNS order: arrays as little-endian bytes, maps as JSON."""
    return tuple(_to_column(kind, getattr(record, name)) for name, kind, _ in MODEL_FIELDS)


def model_from_row(row: Sequence[Any]) -> ModelRecord:
    """The inverse of model_to_row, for rows selected with MODEL_COLUMNS."""
    values = {
        name: _from_column(kind, value)
        for (name, kind, _), value in zip(MODEL_FIELDS, row, strict=True)
    }
    return ModelRecord(**values)


def model_to_json(record: ModelRecord) -> str:
    """A model as JSON, exact: floats round-trip through repr."""
    return json.dumps(
        {name: _to_json(kind, getattr(record, name)) for name, kind, _ in MODEL_FIELDS},
        sort_keys=True,
    )


def model_from_json(text: str) -> ModelRecord:
    data = json.loads(text)
    return ModelRecord(**{name: _from_json(kind, data[name]) for name, kind, _ in MODEL_FIELDS})


def _to_column(kind: str, value: Any) -> Any:
    if kind == FLOAT_ARRAY:
        return np.asarray(value, dtype="<f8").tobytes()
    if kind == INT_ARRAY:
        return np.asarray(value, dtype="<i8").tobytes()
    if kind == STRING_MAP:
        return json.dumps(dict(value), sort_keys=True)
    return value


def _from_column(kind: str, value: Any) -> Any:
    if kind == FLOAT_ARRAY:
        return np.frombuffer(bytes(value), dtype="<f8").astype(np.float64)
    if kind == INT_ARRAY:
        return np.frombuffer(bytes(value), dtype="<i8").astype(np.int64)
    if kind == STRING_MAP:
        return dict(json.loads(str(value)))
    return {TEXT: str, REAL: float, INTEGER: int}[kind](value)


def _to_json(kind: str, value: Any) -> Any:
    if kind == FLOAT_ARRAY:
        return [float(x) for x in value]
    if kind == INT_ARRAY:
        return [int(x) for x in value]
    if kind == STRING_MAP:
        return dict(value)
    return value


def _from_json(kind: str, value: Any) -> Any:
    if kind == FLOAT_ARRAY:
        return np.asarray(value, dtype=np.float64)
    if kind == INT_ARRAY:
        return np.asarray(value, dtype=np.int64)
    if kind == STRING_MAP:
        return dict(value)
    return {TEXT: str, REAL: float, INTEGER: int}[kind](value)


@dataclass(frozen=True)
class ActiveClustering:
    """The clustering in force and the revision at which it became active."""

    clustering: Clustering
    revision: int
    create_time: float


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of the whole store at one revision."""

    revision: int
    clustering: ActiveClustering | None
    models: tuple[ModelRecord, ...] = ()  # registration order


@dataclass(frozen=True)
class Change:
    """One event with its payload: the model as it was at that revision, or the clustering."""

    type: str  # "put" | "delete"
    kind: str  # "model" | "clustering"
    key: str
    model: ModelRecord | None = None  # model puts only
    clustering: Clustering | None = None  # clustering puts only


@dataclass(frozen=True)
class ChangeSet:
    """Every change committed at one revision, in commit order."""

    revision: int
    changes: tuple[Change, ...]
