"""Shared test data and helpers that are not fixtures.

Test files import these directly (``from _helpers import ...``); the fixtures
built on them live in conftest.py, which pytest loads by itself and which no
test file imports. Polling with a deadline, free ports and SERVING checks come
from ``sidecar._readiness``, the one definition the tests and the bench share.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2_grpc

from sidecar import ModelRecord, RoutingTable

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

CODE_PROMPT = "Write a Python function that checks whether a string is a palindrome."
COOK_PROMPT = "What is the best way to roast a whole chicken with garlic and thyme?"


def two_topic_prompts() -> tuple[list[str], list[tuple[str, str, str]]]:
    """Training prompts and (id, prompt, topic) validation items for two clear topics."""
    train = [f.format(t) for f in CODE_FORMS[:2] for t in CODE_TASKS]
    train += [f.format(d) for f in COOK_FORMS[:2] for d in COOK_DISHES]
    val = [(f"code-{i}", CODE_FORMS[2].format(t), "code") for i, t in enumerate(CODE_TASKS[:10])]
    val += [(f"cook-{i}", COOK_FORMS[2].format(d), "cook") for i, d in enumerate(COOK_DISHES[:10])]
    return train, val


def topic_results(good_topic: str | None) -> list[registry_pb2.ValidationResult]:
    """Perfect on one topic and useless on the other; None means a coin flip everywhere."""
    _, val = two_topic_prompts()
    return [
        registry_pb2.ValidationResult(
            item_id=i, score=0.5 if good_topic is None else float(t == good_topic)
        )
        for i, _, t in val
    ]


class Client:
    """Stubs over one real channel to a running sidecar."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.router = router_pb2_grpc.RouterStub(self.channel)
        self.registry = registry_pb2_grpc.RegistryStub(self.channel)

    def close(self) -> None:
        self.channel.close()


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


def synthetic_table(
    *,
    k: int = 3,
    dim: int = 384,
    models: int = 2,
    revision: int = 7,
    seed: int = 0,
    costs: Sequence[float] | None = None,
    learned: bool = False,
) -> RoutingTable:
    """Random unit centroids and random Ψ under clustering "v1"; model i costs i + 1 unless
    ``costs`` says otherwise. ``learned``: a LearnedMap table (θ = 4 x the centroids)."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((k, dim)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    records = [
        ModelRecord(
            f"m{i}",
            float(i + 1) if costs is None else costs[i],
            rng.random(k),
            np.zeros(k, np.int64),
            0.5,
            0,
            "results",
            "v1",
            "",
            {},
            i + 1,
            i + 1,
            0.0,
            0.0,
        )
        for i in range(models)
    ]
    return RoutingTable.build(
        revision=revision,
        clustering_version="v1",
        embedder_fingerprint="f",
        centroids=centroids,
        models=records,
        theta=centroids * 4.0 if learned else None,
        bias=np.zeros(k, np.float32) if learned else None,
    )
