"""The store factory: which --db values open which store, and which stop start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import ArtifactError, InvalidArgument, Registry, open_store
from sidecar._postgres_store import PostgresStore
from sidecar._readiness import free_port
from sidecar._sqlite_store import SqliteStore


def test_a_path_opens_sqlite(tmp_path: Path) -> None:
    store = open_store(tmp_path / "r.db")
    try:
        assert isinstance(store, SqliteStore)
        assert store.location == str(tmp_path / "r.db")
    finally:
        store.close()


def test_sqlite_urls_follow_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///var/rel.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    try:
        assert (tmp_path / "var" / "rel.db").exists()
        assert (tmp_path / "abs.db").exists()
    finally:
        relative.close()
        absolute.close()


@pytest.mark.parametrize("db", ["mysql://h/d", "s3://bucket/key", "postgresq://typo/db"])
def test_an_unsupported_scheme_stops_instead_of_creating_a_file(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to create a directory named `postgresql:` holding a SQLite file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgument, match="unsupported scheme") as info:
        Registry.open(db)
    assert "sqlite:///PATH" in str(info.value)
    assert "postgresql://USER@HOST:PORT/DBNAME" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_opens_postgresql(
    scheme: str, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = pg_url.replace("postgresql://", f"{scheme}://", 1)
    store = open_store(url)
    try:
        assert isinstance(store, PostgresStore)
        assert store.location == url  # no password in it to hide
    finally:
        store.close()
    assert list(tmp_path.iterdir()) == []  # nothing created on disk


def test_an_unreachable_postgresql_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot open the registry database"):
        Registry.open(f"postgresql://nobody@127.0.0.1:{free_port()}/db")
