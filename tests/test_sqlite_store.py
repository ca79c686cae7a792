"""The SQLite store: its schema, old files, corrupt files, how much SQL one write costs, and
processes sharing one file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from sidecar import ArtifactError, Registry
from sidecar._clustering import Clustering, normalize_rows
from sidecar._readiness import wait_until
from sidecar._sqlite_store import SCHEMA_VERSION, SqliteStore

ITEMS = ("i0", "i1", "i2", "i3")
RESULTS = [("i0", 1.0), ("i1", 0.0), ("i2", 1.0), ("i3", 0.5)]


def clustering() -> Clustering:
    rng = np.random.default_rng(3)
    return Clustering(
        centroids=normalize_rows(rng.standard_normal((2, 4))),
        embedder_fingerprint="fp",
        item_ids=ITEMS,
        item_clusters=np.array([0, 0, 1, 1], dtype=np.int64),
    )


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Registry, list[str]]]:
    store = SqliteStore(tmp_path / "r.db")
    registry = Registry(store)
    registry.activate_clustering(clustering())
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    yield registry, statements
    registry.close()


def test_a_registration_writes_the_model_once_and_reads_nothing_back(traced) -> None:
    """It used to insert a placeholder row, update it, then read it back twice."""
    registry, statements = traced
    record = registry.register_model("m", 1.0, results=RESULTS, labels={"a": "b"})
    writes = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO MODELS")]
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE MODELS")]
    model_reads = [s for s in statements if "FROM models" in s]
    assert len(writes) == 1 and not updates
    assert len(model_reads) == 1  # the existence check before the write, nothing after
    stored = registry.get_model("m")
    assert (stored.name, stored.revision, dict(stored.labels)) == ("m", record.revision, {"a": "b"})
    np.testing.assert_array_equal(stored.error_rates, record.error_rates)


def test_a_file_from_the_first_schema_still_works(tmp_path: Path) -> None:
    """Schema 1 files list the model columns in another order; columns are always named."""
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE models (name TEXT PRIMARY KEY, cost REAL NOT NULL, "
            "description TEXT NOT NULL, labels TEXT NOT NULL, profile_source TEXT NOT NULL, "
            "error_rates BLOB NOT NULL, validation_counts BLOB NOT NULL, "
            "overall_error REAL NOT NULL, result_count INTEGER NOT NULL, "
            "clustering_version TEXT NOT NULL, create_revision INTEGER NOT NULL, "
            "revision INTEGER NOT NULL, create_time REAL NOT NULL, update_time REAL NOT NULL)"
        )
        db.commit()
    registry = Registry.open(path)
    try:
        registry.activate_clustering(clustering())
        record = registry.register_model("m", 2.5, results=RESULTS, description="d")
        again = registry.get_model("m")
        assert (again.cost, again.description, again.result_count) == (2.5, "d", 4)
        np.testing.assert_array_equal(again.error_rates, record.error_rates)
    finally:
        registry.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    Registry.open(path).close()
    with closing(sqlite3.connect(path)) as db:
        (value,) = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert int(value) == SCHEMA_VERSION
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
        db.commit()
    with pytest.raises(ArtifactError, match="schema version"):
        Registry.open(path)


def test_same_schema_version_reopens(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    Registry.open(path).close()
    r = Registry.open(path)
    try:
        assert r.revision == 0
    finally:
        r.close()


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    path.write_bytes(b"NOT SQLITE" + os.urandom(8192))
    with pytest.raises(ArtifactError, match="cannot open registry database"):
        Registry.open(path)


_WRITER = """
import sys
from pathlib import Path
from sidecar import Registry
from sidecar._sqlite_store import SqliteStore

registry = Registry(SqliteStore(Path(sys.argv[1])))
for i in range(int(sys.argv[3])):
    registry.register_model(f"{sys.argv[2]}-{i}", 1.0, error_rates=[0.1, 0.2])
registry.close()
"""


def test_processes_sharing_the_file_hear_every_revision_once_in_order(tmp_path: Path) -> None:
    """`serve --processes`: two other processes and this one write at once, gap-free."""
    path = tmp_path / "shared.db"
    store = SqliteStore(path)
    registry = Registry(store)
    registry.activate_clustering(clustering())
    heard: list[int] = []
    store.add_listener(heard.append)
    start, each = registry.revision, 15
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, str(each)])
        for name in ("a", "b")
    ]
    for i in range(each):
        registry.register_model(f"c-{i}", 1.0, error_rates=[0.3, 0.4])
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    end = start + 3 * each
    wait_until(lambda: heard and heard[-1] == end, 15)
    assert heard == list(range(start + 1, end + 1))
    assert registry.revision == end
    assert len(registry.list_models()[0]) == 3 * each
    registry.close()


def test_a_read_inside_a_write_or_a_read_sees_that_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "r.db")
    with store.write() as txn:
        txn.set_meta("note", "written")
        with store.read() as inner:
            assert inner.meta("note") == "written"  # the write's own, uncommitted row
    with store.read() as outer, store.read() as inner:
        assert outer.meta("note") == inner.meta("note") == "written"
    store.close()
