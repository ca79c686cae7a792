"""The static embedder: its artifact checks, its embedding, and the Route path through it.

Uses the real artifact from `make embedder-static` (var/embedder-static) and
real in-process servers on loopback. The subprocess tests (serve, Watch,
ActivateClustering across processes) are in test_static_e2e.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT, Client, register_specialists, two_topic_prompts
from uniroute.v1 import registry_pb2, router_pb2

from sidecar import ArtifactError, EmbedderMismatch, InvalidArgument, ServerConfig, serve
from sidecar._clustering import fit_clustering, load_clustering, require_embedder, save_clustering
from sidecar._embedders import STATIC, embedder_kind, load_embedder
from sidecar._export_static import default_static_dir
from sidecar._server import starter_artifact_dir
from sidecar._static_embedder import TABLE_FILE, StaticEmbedder, read_static_manifest
from sidecar._wire import clustering_spec


@pytest.fixture(scope="session")
def static_embedder() -> StaticEmbedder:
    directory = default_static_dir()
    if not (directory / "manifest.json").exists():
        pytest.fail(f"no static embedder at {directory}: run `make embedder-static` first")
    return StaticEmbedder.from_dir(directory)


@pytest.fixture(scope="module")
def static_topic_artifact(static_embedder: StaticEmbedder, tmp_path_factory) -> Path:
    train, val = two_topic_prompts()
    out = tmp_path_factory.mktemp("static-clustering")
    clustering = fit_clustering(
        static_embedder.embed_batch(train).vectors,
        [i for i, _, _ in val],
        static_embedder.embed_batch([p for _, p, _ in val]).vectors,
        k=2,
        embedder_fingerprint=static_embedder.fingerprint,
        seed=0,
    )
    save_clustering(clustering, out)
    return out


# --------------------------------------------------------------------------- the artifact


def test_manifest_says_static_and_the_fingerprint_is_its_own(static_embedder, embedder) -> None:
    assert embedder_kind(static_embedder.path) == STATIC
    assert embedder_kind(embedder.path) == "onnx"
    manifest = static_embedder.manifest
    assert manifest["kind"] == "static" and manifest["pooling"] == "mean"
    assert manifest["quantization"] == "int8-per-row"
    assert static_embedder.fingerprint != embedder.fingerprint
    assert static_embedder.dim == manifest["dim"] == manifest["pca_dims"]
    assert manifest["probe"]["mean_cosine"] >= manifest["probe"]["min_mean_cosine"]
    assert isinstance(load_embedder(static_embedder.path), StaticEmbedder)


def test_truncation_does_not_apply_to_the_static_embedder(static_embedder) -> None:
    with pytest.raises(InvalidArgument, match="whole prompt"):
        load_embedder(static_embedder.path, truncation="head")
    assert load_embedder(static_embedder.path, truncation="none").truncation == "none"


def test_a_tampered_table_or_manifest_is_refused(static_embedder, tmp_path: Path) -> None:
    broken = tmp_path / "static"
    shutil.copytree(static_embedder.path, broken)
    table = np.load(broken / TABLE_FILE)
    table[5, 0] ^= 1
    np.save(broken / TABLE_FILE, table)
    with pytest.raises(ArtifactError, match=r"table\.npy is corrupt or replaced"):
        StaticEmbedder.from_dir(broken)
    shutil.rmtree(broken)
    shutil.copytree(static_embedder.path, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["weighting"] = "none"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="fingerprint"):
        read_static_manifest(broken)
    (broken / TABLE_FILE).unlink()
    manifest = json.loads((static_embedder.path / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"table\.npy is missing"):
        StaticEmbedder.from_dir(broken)


def test_the_shipped_static_starter_matches_the_current_recipe(static_embedder, embedder) -> None:
    """If this fails the recipe changed: refit with `make starter-static`."""
    chosen = starter_artifact_dir(static_embedder.fingerprint)
    assert chosen.name == "starter_static"
    require_embedder(load_clustering(chosen), static_embedder.fingerprint, str(chosen))
    assert starter_artifact_dir(embedder.fingerprint).name == "starter"
    assert starter_artifact_dir().name == "starter"


# --------------------------------------------------------------------------- embedding


def test_the_whole_prompt_is_embedded(static_embedder) -> None:
    long = " ".join(["the history of the roman empire spans centuries"] * 200)
    a = static_embedder.embed(long + " and cooking pasta carbonara with guanciale")
    b = static_embedder.embed(long + " and writing a python function with recursion")
    assert a.n_tokens > 1500 and not a.truncated
    assert not np.array_equal(a.vector, b.vector)  # the last words still count


def test_embed_batch_rows_equal_embed(static_embedder) -> None:
    texts = ["hi", CODE_PROMPT, COOK_PROMPT, "naïve café 東京 😀", "x" * 300]
    batch = static_embedder.embed_batch(texts, batch_size=2)
    for i, text in enumerate(texts):
        one = static_embedder.embed(text)
        np.testing.assert_array_equal(batch.vectors[i], one.vector)
        assert batch.n_tokens[i] == one.n_tokens
    encoded = static_embedder.encode(CODE_PROMPT)
    ran = static_embedder.run(encoded.ids, encoded.mask)
    np.testing.assert_array_equal(ran[0], static_embedder.embed(CODE_PROMPT).vector)


def test_the_table_separates_the_two_topics(static_embedder) -> None:
    code = static_embedder.embed("Write a Python function that sorts a list of tuples").vector
    code2 = static_embedder.embed("Implement binary search in Python with a unit test").vector
    cook = static_embedder.embed("How long should I roast a chicken with garlic?").vector
    assert float(code @ code2) > float(code @ cook)


# --------------------------------------------------------------------------- routing


@pytest.fixture
def static_server(static_embedder, static_topic_artifact, tmp_path: Path):
    sidecar = serve(
        ServerConfig(
            listen="127.0.0.1:0",
            db_path=tmp_path / "reg.db",
            artifact_dir=static_topic_artifact,
            embedding_cache=64,
        ),
        embedder=static_embedder,
    )
    client = Client(sidecar.port)
    register_specialists(client)
    yield sidecar, client
    client.close()
    sidecar.stop(0)


def test_route_and_route_batch_through_the_static_kernel(static_server, static_embedder) -> None:
    sidecar, client = static_server
    code = client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT))
    cook = client.router.Route(router_pb2.RouteRequest(prompt=COOK_PROMPT))
    assert (code.model, cook.model) == ("coder", "chef")
    assert code.prompt_tokens == static_embedder.embed(CODE_PROMPT).n_tokens
    assert not code.truncated
    # A precomputed embedding, a cache hit and a fresh prompt in one batch agree with Route.
    vector = static_embedder.embed(COOK_PROMPT).vector
    batch = client.router.RouteBatch(
        router_pb2.RouteBatchRequest(
            requests=[
                router_pb2.RouteRequest(prompt=CODE_PROMPT),  # cached by the Route above
                router_pb2.RouteRequest(embedding=vector.tolist()),
                router_pb2.RouteRequest(prompt="Roast potatoes crisp in goose fat? " * 40),
                router_pb2.RouteRequest(prompt="Python: reverse a linked list iteratively"),
            ]
        )
    )
    assert [r.model for r in batch.responses] == ["coder", "chef", "chef", "coder"]
    assert batch.responses[0].cluster == code.cluster
    assert batch.responses[1].cluster == cook.cluster
    assert sidecar.router.cache is not None and sidecar.router.cache.hits >= 1


def test_static_decisions_equal_the_kernel_on_embed_vectors(static_server, static_embedder) -> None:
    """Route's fused call and fit's embed_batch give the same clusters for every prompt."""
    sidecar, client = static_server
    train, val = two_topic_prompts()
    prompts = train + [p for _, p, _ in val]
    table = sidecar.tables.current
    expected = np.argmax(static_embedder.embed_batch(prompts).vectors @ table.centroids.T, axis=1)
    got = client.router.RouteBatch(
        router_pb2.RouteBatchRequest(requests=[router_pb2.RouteRequest(prompt=p) for p in prompts])
    )
    assert [r.cluster for r in got.responses] == expected.tolist()


def test_a_prompt_without_tokens_is_invalid_argument(static_server) -> None:
    _, client = static_server
    with pytest.raises(grpc.RpcError) as err:
        client.router.Route(router_pb2.RouteRequest(prompt="\x01\x02\x03"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no tokens" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.router.RouteBatch(
            router_pb2.RouteBatchRequest(
                requests=[
                    router_pb2.RouteRequest(prompt=CODE_PROMPT),
                    router_pb2.RouteRequest(prompt="\x7f"),
                ]
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1]" in err.value.details()
    assert client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT)).model == "coder"


def test_clusterings_are_refused_across_embedders(
    static_server, static_embedder, embedder, topic_artifact, static_topic_artifact, tmp_path
) -> None:
    """A MiniLM clustering on a static server (and the reverse) is refused and changes nothing."""
    _, client = static_server
    before = client.registry.GetClustering(registry_pb2.GetClusteringRequest())
    minilm = load_clustering(topic_artifact)
    with pytest.raises(EmbedderMismatch):
        require_embedder(minilm, static_embedder.fingerprint, str(topic_artifact))
    with pytest.raises(grpc.RpcError) as err:
        client.registry.ActivateClustering(
            registry_pb2.ActivateClusteringRequest(clustering=clustering_spec(minilm))
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = client.registry.GetClustering(registry_pb2.GetClusteringRequest())
    assert after.version == before.version
    assert after.embedder_fingerprint == static_embedder.fingerprint
    with pytest.raises(EmbedderMismatch):
        serve(
            ServerConfig(
                listen="127.0.0.1:0",
                db_path=tmp_path / "other.db",
                artifact_dir=static_topic_artifact,
            ),
            embedder=embedder,
        )


def test_a_learned_map_routes_with_the_static_embedder(static_embedder, tmp_path: Path) -> None:
    """A LearnedMap table: the static embedder embeds the prompts, the soft kernel decides."""
    from sidecar._learned_map import fit_learned_clustering

    train, val = two_topic_prompts()
    n_code = len(train) // 2  # two_topic_prompts puts the code prompts first
    coder = np.array([float(row < n_code) for row in range(len(train))])
    clustering, _ = fit_learned_clustering(
        static_embedder.embed_batch(train).vectors,
        np.stack([1.0 - coder, coder], axis=1),
        [i for i, _, _ in val],
        static_embedder.embed_batch([p for _, p, _ in val]).vectors,
        k=2,
        embedder_fingerprint=static_embedder.fingerprint,
        seed=0,
    )
    save_clustering(clustering, tmp_path / "learned")
    sidecar = serve(
        ServerConfig(
            listen="127.0.0.1:0",
            db_path=tmp_path / "reg.db",
            artifact_dir=tmp_path / "learned",
            embedding_cache=8,
        ),
        embedder=static_embedder,
    )
    client = Client(sidecar.port)
    try:
        register_specialists(client)
        code = client.router.Route(router_pb2.RouteRequest(prompt=CODE_PROMPT))
        cook = client.router.Route(router_pb2.RouteRequest(prompt=COOK_PROMPT))
        assert (code.model, cook.model) == ("coder", "chef")
        batch = client.router.RouteBatch(
            router_pb2.RouteBatchRequest(
                requests=[
                    router_pb2.RouteRequest(prompt=COOK_PROMPT),  # a cache hit
                    router_pb2.RouteRequest(prompt=CODE_PROMPT + " with type hints"),
                ]
            )
        )
        assert [r.model for r in batch.responses] == ["chef", "coder"]
    finally:
        client.close()
        sidecar.stop(0)
