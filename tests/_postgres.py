"""Real PostgreSQL for tests: one throwaway server per session, a fresh database per test.

The server is the machine's own binaries (see sidecar/_pg_throwaway.py),
started in a temporary directory on a loopback port and removed at teardown,
whatever the tests did. Tests that restart or stop PostgreSQL take a server of
their own (``own_postgres``) so no other test sees the outage. The cluster
lives in /dev/shm when there is one: each database is ~8 MB of files, which a
busy shared disk creates and deletes slowly; no test here is about the disk.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar._pg_throwaway import ThrowawayPostgres, server_bindir

_DATABASES = itertools.count(1)
_SHM = Path("/dev/shm")


def _parent() -> Path | None:
    return _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None


def _require_binaries() -> None:
    if server_bindir() is None:
        pytest.fail(
            "no PostgreSQL server binaries (initdb, postgres): `apt-get install postgresql` "
            "(.ci/run does it on a fresh machine)"
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    """The session's PostgreSQL server."""
    _require_binaries()
    server = ThrowawayPostgres(parent=_parent())
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres: ThrowawayPostgres) -> Iterator[str]:
    """A new, empty database on the session's server, for this test alone."""
    name = f"test_{next(_DATABASES)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture
def own_postgres() -> Iterator[ThrowawayPostgres]:
    """A server of this test's own, to stop and restart."""
    _require_binaries()
    server = ThrowawayPostgres(parent=_parent())
    try:
        server.start()
        yield server
    finally:
        print(f"----- postgres log -----\n{server.log_tail()}")
        server.close()
