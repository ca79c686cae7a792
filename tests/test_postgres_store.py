"""The PostgreSQL store against a real server: the registry's rules, exact values, the schema,
replicas sharing one database (one gap-free revision sequence, one winner per name, every
revision announced everywhere in order), and outages (UNAVAILABLE, then recovery).

Every test gets a database of its own on the session's throwaway server; the
outage test stops and restarts a server of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import psycopg
import pytest
import test_registry
from test_registry import RES, clustering_a, state

from sidecar import AlreadyExists, ArtifactError, InvalidArgument, Registry, StoreUnavailable
from sidecar._clustering import Clustering, normalize_rows
from sidecar._pg_throwaway import ThrowawayPostgres
from sidecar._postgres_store import SCHEMA_VERSION, PostgresStore, redact
from sidecar._readiness import free_port, wait_until
from sidecar._records import ModelRecord

# The registry's rules do not depend on the store: its store-agnostic tests run
# here again, collected with this module's `reg` and `active` (PostgreSQL).
STORE_AGNOSTIC_RULES = (
    "test_empty_registry",
    "test_activate_clustering",
    "test_reactivating_same_version_is_a_noop",
    "test_register_from_results",
    "test_register_with_empty_cluster",
    "test_register_explicit_profile",
    "test_revisions_increase_and_events_are_ordered",
    "test_register_without_clustering",
    "test_duplicate_name_without_allow_update",
    "test_allow_update_replaces_results",
    "test_allow_update_on_new_name_creates",
    "test_update_from_results_to_explicit_drops_results",
    "test_invalid_registration_changes_nothing",
    "test_invalid_update_keeps_old_record",
    "test_field_limits_are_inclusive",
    "test_deregister_unknown",
    "test_get_and_results_of_unknown",
    "test_list_models_pagination_and_snapshot_order",
    "test_new_clustering_recomputes_in_one_revision",
    "test_switching_back_restores_the_original_profile",
    "test_activation_with_only_explicit_models_empties_the_pool",
    "test_listeners_once_per_revision_in_order",
    "test_listener_sees_committed_state",
    "test_concurrent_registrations",
)
globals().update({name: getattr(test_registry, name) for name in STORE_AGNOSTIC_RULES})


@pytest.fixture
def reg(pg_url: str) -> Iterator[Registry]:
    r = Registry.open(pg_url)
    yield r
    r.close()


@pytest.fixture
def active(reg: Registry) -> Registry:
    reg.activate_clustering(clustering_a())
    return reg


@pytest.fixture
def replicas(pg_url: str) -> Iterator[list[Registry]]:
    """Two registries over one database: what two `sidecar serve` replicas hold."""
    pair = [Registry.open(pg_url), Registry.open(pg_url)]
    yield pair
    for r in pair:
        r.close()


def hears(registry: Registry) -> list[int]:
    heard: list[int] = []
    registry.add_listener(heard.append)
    return heard


def heard_all(heard: list[int], last: int, first: int = 1) -> bool:
    assert heard == list(range(first, last + 1)), heard
    return True


# ---------------------------------------------------------------------------- values


def test_values_come_back_exactly(reg: Registry) -> None:
    """Floats bit for bit, strings unchanged, whatever COPY and text escaping do."""
    odd_ids = ("tab\there", "new\nline", "back\\slash", 'quote"s', "ünïcødé ✓", "i5")
    clustering = Clustering(
        centroids=normalize_rows(np.random.default_rng(5).standard_normal((2, 8))),
        embedder_fingerprint="fp-a",
        item_ids=odd_ids,
        item_clusters=np.array([0, 1, 0, 1, 0, 1], dtype=np.int64),
        info={"name": "odd ✓", "nested": {"x": [1, 2]}},
    )
    reg.activate_clustering(clustering)
    scores = [1 / 3, 0.1, 2 / 7, 1.0, 0.0, 5e-324]
    record = reg.register_model(
        "m.1:x/y@z+w-v",
        0.1 + 0.2,
        results=list(zip(odd_ids, scores, strict=True)),
        description="naïve — «quoted» \\ \t tabs\nlines",
        labels={"ключ": "значение", "k": ""},
    )
    stored = reg.get_model(record.name)
    for copy in (stored, reg.snapshot().models[0], reg.changes_after(1)[0].changes[0].model):
        assert copy is not None
        assert copy.cost == 0.1 + 0.2
        assert copy.error_rates.tobytes() == record.error_rates.tobytes()
        assert copy.validation_counts.tobytes() == record.validation_counts.tobytes()
        assert (copy.overall_error, copy.create_time) == (record.overall_error, record.create_time)
        assert (copy.description, dict(copy.labels)) == (record.description, dict(record.labels))
    assert reg.results_of(record.name) == dict(zip(odd_ids, scores, strict=True))
    active = reg.active_clustering()
    assert active is not None
    assert active.clustering.item_ids == odd_ids
    assert active.clustering.info == clustering.info
    assert active.clustering.centroids.tobytes() == clustering.centroids.tobytes()


def test_a_nul_character_is_invalid_argument_and_changes_nothing(active: Registry) -> None:
    """PostgreSQL text cannot hold NUL (SQLite can): a clear refusal, not an internal error."""
    before = state(active)
    with pytest.raises(InvalidArgument, match="NUL"):
        active.register_model("m", 1.0, results=RES, description="a\x00b")
    assert state(active) == before


# ---------------------------------------------------------------------------- schema


def test_store_id_names_the_database_not_the_process(
    pg_url: str, postgres: ThrowawayPostgres
) -> None:
    first = Registry.open(pg_url)
    second = Registry.open(pg_url)
    other = Registry.open(postgres.create_database("another_registry"))
    try:
        assert first.store_id and first.store_id == second.store_id
        assert other.store_id != first.store_id
        first.close()
        again = Registry.open(pg_url)
        assert again.store_id == second.store_id
        again.close()
    finally:
        second.close()
        other.close()


def test_tables_live_in_their_own_schema(pg_url: str) -> None:
    Registry.open(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    schemas = {schema for schema, _ in rows}
    assert schemas == {"uniroute"}
    names = {name for _, name in rows}
    assert {"meta", "revision", "models", "model_results", "events", "clusterings"} <= names


def test_a_newer_schema_stops_start_up(pg_url: str) -> None:
    Registry.open(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "UPDATE uniroute.meta SET value = %s WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(ArtifactError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        Registry.open(pg_url)


def test_an_unreachable_database_stops_start_up_without_showing_the_password() -> None:
    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{free_port()}/registry"
    with pytest.raises(ArtifactError, match="cannot open the registry database") as info:
        PostgresStore(url)
    assert "s3cret-pw" not in str(info.value)
    assert redact(url) in str(info.value)
    assert redact(url) == f"postgresql://someone:***@127.0.0.1:{url.split(':')[3]}"


# ---------------------------------------------------------------------------- replicas


def test_replicas_write_one_gap_free_totally_ordered_sequence(replicas: list[Registry]) -> None:
    a, b = replicas
    heard = [hears(a), hears(b)]
    a.activate_clustering(clustering_a())
    revisions: list[int] = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        registry = replicas[worker % 2]
        for i in range(15):
            record = registry.register_model(f"w{worker}-{i}", 1.0 + worker, results=RES)
            with lock:
                revisions.append(record.revision)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    assert sorted(revisions) == list(range(2, 62))
    for replica, log in zip(replicas, heard, strict=True):
        # Each replica hears every revision, its own and the other's, once and in order.
        wait_until(partial(heard_all, log, 61), timeout=10)
        events = replica.changes_after(1)
        assert [s.revision for s in events] == list(range(2, 62))
        assert len(replica.snapshot().models) == 60


def test_the_same_name_on_two_replicas_at_once_has_one_winner(replicas: list[Registry]) -> None:
    replicas[0].activate_clustering(clustering_a())

    def attempt(registry: Registry, cost: float, name: str, start: threading.Barrier) -> object:
        start.wait()
        try:
            return registry.register_model(name, cost, results=RES)
        except AlreadyExists as exc:
            return exc

    for round_ in range(10):
        barrier = threading.Barrier(2)
        name = f"contested-{round_}"
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(
                pool.map(attempt, replicas, [1.0, 2.0], [name, name], [barrier, barrier])
            )
        refused = [o for o in outcomes if isinstance(o, AlreadyExists)]
        assert len(refused) == 1, outcomes
        winner = next(o for o in outcomes if not isinstance(o, AlreadyExists))
        stored = replicas[1].get_model(name)
        assert isinstance(winner, ModelRecord)
        assert (stored.cost, stored.revision) == (winner.cost, winner.revision)


# ----------------------------------------------------------------------------- outages


def test_an_outage_gives_unavailable_then_everything_resumes_in_order(
    own_postgres: ThrowawayPostgres,
) -> None:
    url = own_postgres.create_database("registry")
    writer, watcher = Registry.open(url), Registry.open(url)
    try:
        heard = hears(watcher)
        writer.activate_clustering(clustering_a())
        writer.register_model("before", 1.0, results=RES)
        wait_until(partial(heard_all, heard, 2), timeout=10)

        own_postgres.stop()
        for call in (
            partial(writer.register_model, "during", 1.0, results=RES),
            partial(writer.deregister_model, "before"),
            lambda: writer.revision,
        ):
            with pytest.raises(StoreUnavailable, match="unavailable"):
                call()

        own_postgres.start()
        # The pool reconnects on its own; the first writes may still find it reconnecting.
        after = wait_until(lambda: retry(writer.register_model, "after", 1.0, results=RES), 30)
        assert isinstance(after, ModelRecord)
        assert after.revision == 3  # the refused writes took no revision
        second = writer.register_model("later", 1.0, results=RES)
        # The other replica reconnects its LISTEN connection and catches up, in order.
        wait_until(partial(heard_all, heard, second.revision), timeout=30)
        assert [m.name for m in watcher.snapshot().models] == ["before", "after", "later"]
    finally:
        writer.close()
        watcher.close()


def retry(call: Callable[..., object], *args: object, **kwargs: object) -> object:
    try:
        return call(*args, **kwargs)
    except StoreUnavailable:
        return None
