"""Shared fixtures: the real embedder, a small two-topic clustering, and a live server.

Only fixtures live here. The data and helpers they are built on are in
_helpers.py, which test files import directly; no test file imports conftest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _helpers import Client, two_topic_prompts
from _postgres import own_postgres as own_postgres  # real PostgreSQL, for every test file
from _postgres import pg_url as pg_url
from _postgres import postgres as postgres
from _processes import sidecars as sidecars  # the real-process fixture, for every test file

from sidecar import Embedder, ServerConfig, Sidecar, default_embedder_dir, serve
from sidecar._clustering import fit_clustering, save_clustering


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    directory = default_embedder_dir()
    if not (directory / "manifest.json").exists():
        pytest.fail(f"no embedder at {directory}: run `make embedder` first")
    return Embedder.from_dir(directory)


@pytest.fixture(scope="session")
def topic_artifact(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A K=2 clustering fitted with the real embedder: cluster of code vs cluster of cooking."""
    train, val = two_topic_prompts()
    out = tmp_path_factory.mktemp("clustering")
    clustering = fit_clustering(
        embedder.embed_batch(train).vectors,
        [i for i, _, _ in val],
        embedder.embed_batch([p for _, p, _ in val]).vectors,
        k=2,
        embedder_fingerprint=embedder.fingerprint,
        seed=0,
    )
    save_clustering(clustering, out)
    return out


@pytest.fixture(scope="session")
def topic_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two-topic data as the JSONL files the CLI reads, plus per-model result files."""
    train, val = two_topic_prompts()
    d = tmp_path_factory.mktemp("jsonl")
    files = {"train": d / "train.jsonl", "val": d / "val.jsonl"}
    files["train"].write_text("".join(json.dumps({"prompt": p}) + "\n" for p in train))
    files["val"].write_text(
        "".join(json.dumps({"id": i, "prompt": p, "topic": t}) + "\n" for i, p, t in val)
    )
    for model, good_topic in (("coder", "code"), ("chef", "cook")):
        files[model] = d / f"{model}.jsonl"
        files[model].write_text(
            "".join(json.dumps({"id": i, "correct": t == good_topic}) + "\n" for i, _, t in val)
        )
    files["cheap"] = d / "cheap.jsonl"
    files["cheap"].write_text(
        "".join(json.dumps({"id": i, "score": 0.5}) + "\n" for i, _, _ in val)
    )
    return files


@pytest.fixture
def make_sidecar(embedder: Embedder, tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    """Starts real servers on free loopback ports; all are stopped at teardown."""
    started: list[Sidecar] = []

    def start(*, with_embedder: object = None, **overrides: object) -> Sidecar:
        options: dict[str, object] = {"listen": "127.0.0.1:0", "db_path": tmp_path / "reg.db"}
        options.update(overrides)
        config = ServerConfig(**options)  # type: ignore[arg-type]
        sidecar = serve(config, embedder=with_embedder or embedder)  # type: ignore[arg-type]
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop(0)


@pytest.fixture
def connect() -> Iterator[Callable[[int], Client]]:
    clients: list[Client] = []

    def open_client(port: int) -> Client:
        client = Client(port)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
