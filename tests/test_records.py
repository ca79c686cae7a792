"""Records are defined once: every codec (JSON, SQL row, wire) is derived and exact."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from sidecar._records import (
    MODEL_COLUMNS,
    MODEL_FIELDS,
    ModelRecord,
    model_from_json,
    model_from_row,
    model_table_sql,
    model_to_json,
    model_to_row,
)
from sidecar._wire import model_message, model_record


def record(**overrides: object) -> ModelRecord:
    values: dict[str, object] = {
        "name": "openai/gpt-4o-mini",
        "cost": 0.1 + 0.2,  # not exactly representable: must survive bit for bit
        "error_rates": np.array([1 / 3, 0.25, 2 / 7]),
        "validation_counts": np.array([3, 0, 12], dtype=np.int64),
        "overall_error": 5.5 / 11,
        "result_count": 15,
        "profile_source": "results",
        "clustering_version": "abc123",
        "description": "a model — with ünïcode",
        "labels": {"team": "infra", "upstream": "gpt-4o-mini-2024-07-18"},
        "create_revision": 2,
        "revision": 9,
        "create_time": 1764650000.123456,
        "update_time": 1764650001.5,
    }
    values.update(overrides)
    return ModelRecord(**values)  # type: ignore[arg-type]


def same(a: ModelRecord, b: ModelRecord) -> bool:
    for f in dataclasses.fields(ModelRecord):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or x.tobytes() != y.tobytes():
                return False
        elif x != y or (type(x) is not type(y) and not isinstance(x, dict)):
            return False
    return True


def test_every_field_is_described_once() -> None:
    names = [f.name for f in dataclasses.fields(ModelRecord)]
    assert [name for name, _, _ in MODEL_FIELDS] == names
    assert MODEL_COLUMNS.split(", ") == names
    sql = model_table_sql("models")
    for name in names:
        assert f"\n    {name} " in sql
    assert "name TEXT PRIMARY KEY" in sql


def test_json_round_trip_is_exact() -> None:
    original = record()
    text = model_to_json(original)
    assert set(json.loads(text)) == {f.name for f in dataclasses.fields(ModelRecord)}
    assert same(model_from_json(text), original)


def test_row_round_trip_is_exact() -> None:
    original = record()
    row = model_to_row(original)
    assert len(row) == len(MODEL_FIELDS)
    assert isinstance(row[MODEL_COLUMNS.split(", ").index("error_rates")], bytes)
    assert same(model_from_row(row), original)


def test_wire_round_trip_covers_every_field() -> None:
    original = record(create_time=1764650000.0, update_time=1764650001.0)
    message = model_message(original)
    assert {f.name for f in dataclasses.fields(ModelRecord)} <= {
        f.name for f in message.DESCRIPTOR.fields
    }
    assert same(model_record(message), original)


def test_empty_profile_and_labels_round_trip() -> None:
    original = record(error_rates=np.zeros(0), validation_counts=np.zeros(0, np.int64), labels={})
    assert same(model_from_json(model_to_json(original)), original)
    assert same(model_from_row(model_to_row(original)), original)
