"""Shared fixtures: the real embedder, a small two-topic clustering, and a live server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from _processes import sidecars as sidecars  # the real-process fixture, for every test file
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2_grpc

from sidecar import Embedder, ServerConfig, Sidecar, default_embedder_dir, serve
from sidecar._clustering import fit_clustering, save_clustering

CODE_TASKS = [
    "reverse a linked list",
    "parse a CSV file into dictionaries",
    "implement binary search",
    "merge two sorted lists",
    "compute Fibonacci numbers with memoisation",
    "read a JSON config file",
    "write a unit test for a sorting function",
    "remove duplicates from a list while keeping order",
    "count word frequencies in a text file",
    "validate an email address with a regular expression",
    "implement a least-recently-used cache",
    "flatten a nested list",
    "convert a string to snake case",
    "find the longest common prefix of strings",
    "serialise a dataclass to JSON",
    "rotate a matrix by 90 degrees",
]
CODE_FORMS = [
    "Write a Python function to {}.",
    "How do I {} in Python? Show the code.",
    "Fix my Python code that tries to {}; it raises a TypeError.",
]
COOK_DISHES = [
    "sourdough bread",
    "a mushroom risotto",
    "chicken curry",
    "a chocolate cake",
    "vegetable lasagne",
    "beef stew",
    "pancakes",
    "a lemon tart",
    "tomato soup",
    "pad thai",
    "roast potatoes",
    "apple pie",
    "a spinach quiche",
    "fish tacos",
    "banana bread",
    "French onion soup",
]
COOK_FORMS = [
    "What is a good recipe for {}?",
    "How long should I bake {} and at what oven temperature?",
    "Which spices and ingredients go best in {} for a dinner party?",
]


def two_topic_prompts() -> tuple[list[str], list[tuple[str, str, str]]]:
    """Training prompts and (id, prompt, topic) validation items for two clear topics."""
    train = [f.format(t) for f in CODE_FORMS[:2] for t in CODE_TASKS]
    train += [f.format(d) for f in COOK_FORMS[:2] for d in COOK_DISHES]
    val = [(f"code-{i}", CODE_FORMS[2].format(t), "code") for i, t in enumerate(CODE_TASKS[:10])]
    val += [(f"cook-{i}", COOK_FORMS[2].format(d), "cook") for i, d in enumerate(COOK_DISHES[:10])]
    return train, val


T = TypeVar("T")

CODE_PROMPT = "Write a Python function that checks whether a string is a palindrome."
COOK_PROMPT = "What is the best way to roast a whole chicken with garlic and thyme?"


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


def topic_results(good_topic: str | None) -> list[registry_pb2.ValidationResult]:
    """Perfect on one topic and useless on the other; None means a coin flip everywhere."""
    _, val = two_topic_prompts()
    return [
        registry_pb2.ValidationResult(
            item_id=i, score=0.5 if good_topic is None else float(t == good_topic)
        )
        for i, _, t in val
    ]


def wait_until(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.02) -> T:
    """Polls until check() returns something truthy; RPC or assertion errors retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def register_specialists(client: Client) -> None:
    """'coder' is right on every code item and wrong on cooking; 'chef' the reverse."""
    for name, topic in (("coder", "code"), ("chef", "cook")):
        client.registry.RegisterModel(
            registry_pb2.RegisterModelRequest(
                name=name,
                cost=1.0,
                results=registry_pb2.ValidationResults(results=topic_results(topic)),
            )
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class Client:
    """Stubs over one real channel to a running sidecar."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.router = router_pb2_grpc.RouterStub(self.channel)
        self.registry = registry_pb2_grpc.RegistryStub(self.channel)

    def close(self) -> None:
        self.channel.close()


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
