"""Micro-batching with the real embedder: coalescing, fidelity, errors and shutdown."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sidecar._batcher import MicroBatcher

PROMPTS = [
    f"Question {i}: how should I {task} for a team of {i + 2} people?"
    for i, task in enumerate(
        [
            "plan a sprint",
            "write a SQL report",
            "bake bread",
            "translate a letter",
            "fix a flaky test",
            "budget a trip",
            "review a contract",
            "tune a database",
        ]
        * 4
    )
]


def test_concurrent_calls_share_runs_and_match_single_embeddings(embedder):
    batcher = MicroBatcher(embedder, max_batch=8, max_wait=0.005, workers=1)
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(batcher.embed, PROMPTS))
        assert batcher.items == len(PROMPTS)
        assert batcher.batches < len(PROMPTS)  # some calls really were coalesced
        for prompt, got in zip(PROMPTS, results, strict=True):
            single = embedder.embed(prompt)
            assert got.n_tokens == single.n_tokens
            assert got.truncated == single.truncated
            # int8 activations share one scale per batch: close to, not equal to, single runs.
            assert float(got.vector @ single.vector) > 0.98
    finally:
        batcher.close()


def test_a_lone_request_does_not_wait(embedder):
    batcher = MicroBatcher(embedder, max_batch=16, max_wait=2.0, workers=1)
    try:
        batcher.embed("warm up")
        started = time.monotonic()
        batcher.embed("just one request")
        assert time.monotonic() - started < 1.0  # far below max_wait
    finally:
        batcher.close()


def test_errors_reach_every_waiter(embedder, monkeypatch):
    batcher = MicroBatcher(embedder, max_batch=4, workers=1)

    def broken(encoded):
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(embedder, "run_padded", broken)
    try:
        errors = []

        def call() -> None:
            try:
                batcher.embed("hello")
            except RuntimeError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert errors == ["onnxruntime exploded"] * 6
    finally:
        monkeypatch.undo()
        batcher.close()


def test_bad_settings_are_rejected(embedder):
    for kwargs in ({"max_batch": 0}, {"max_wait": -1.0}, {"workers": 0}):
        with pytest.raises(ValueError):
            MicroBatcher(embedder, **kwargs)


def test_server_with_cache_and_batching_routes_the_same(make_sidecar, connect, topic_artifact):
    from _helpers import CODE_PROMPT, register_specialists
    from uniroute.v1 import router_pb2

    plain = make_sidecar(artifact_dir=topic_artifact)
    tuned = make_sidecar(
        artifact_dir=topic_artifact,
        db_path=plain.config.db_path.with_name("tuned.db"),
        embedding_cache=64,
        batch_max_size=8,
        batch_max_wait_ms=1.0,
    )
    answers = []
    for sidecar in (plain, tuned):
        client = connect(sidecar.port)
        register_specialists(client)
        request = router_pb2.RouteRequest(prompt=CODE_PROMPT, cost_weight=0.0)
        answers.append([client.router.Route(request) for _ in range(3)])
    assert {r.model for r in answers[0]} == {r.model for r in answers[1]} == {"coder"}
    assert tuned.router.cache is not None
    assert (tuned.router.cache.hits, tuned.router.cache.misses) == (2, 1)
    np.testing.assert_allclose(
        [s.score for s in answers[1][0].scores],
        [s.score for s in answers[0][0].scores],
        atol=0.05,
    )
