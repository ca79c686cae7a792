"""The runtime embedder against the real exported artifact (``make embedder``).

Uses the session-scoped ``embedder`` fixture from conftest, which fails (not skips)
when the artifact is missing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sidecar._embedder import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    Embedder,
    TokenWindow,
    compute_fingerprint,
    default_embedder_dir,
    sha256_file,
)
from sidecar._errors import ArtifactError, InvalidArgument

SHORT = "How do I sort a list in Python?"
LONG = "The committee reviewed every proposal in detail before voting. " * 60
MIXED = [
    SHORT,
    "",
    "hi",
    LONG,
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "Explain the difference between TCP and UDP for a network engineering interview.",
    SHORT,  # duplicates must come back identical
    "What is a good recipe for a mushroom risotto?",
    "Prove that there are infinitely many primes. " * 10,
    "a " * 254,  # exactly 256 tokens with [CLS]/[SEP]: at the limit, not over it
    "a " * 255,
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    assert embedder.dim == 384
    assert embedder.max_tokens == 256
    vec = embedder.embed(SHORT).vector
    assert vec.dtype == np.float32
    assert vec.shape == (384,)
    assert vec.flags.c_contiguous
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4

    batch = embedder.embed_batch(MIXED)
    assert batch.vectors.dtype == np.float32
    assert batch.vectors.shape == (len(MIXED), 384)
    assert batch.vectors.flags.c_contiguous
    assert batch.n_tokens.dtype == np.int64
    assert batch.truncated.dtype == np.bool_
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_batch_equals_single(embedder: Embedder, batch_size: int) -> None:
    calls: list[int] = []
    batch = embedder.embed_batch(MIXED, batch_size=batch_size, progress=calls.append)
    for i, text in enumerate(MIXED):
        single = embedder.embed(text)
        assert _cos(batch.vectors[i], single.vector) > 0.9999, (i, text[:40])
        assert batch.n_tokens[i] == single.n_tokens
        assert batch.truncated[i] == single.truncated
    # progress reports cumulative counts after each chunk, ending at N
    assert calls == sorted(calls)
    assert calls[-1] == len(MIXED)
    assert len(calls) == -(-len(MIXED) // batch_size)


def test_embed_batch_edge_cases(embedder: Embedder) -> None:
    empty = embedder.embed_batch([])
    assert empty.vectors.shape == (0, 384)
    assert len(empty) == 0
    with pytest.raises(TypeError):
        embedder.embed_batch("not a list")  # a str is a Sequence[str]: easy mistake
    with pytest.raises(ValueError):
        embedder.embed_batch(["x"], batch_size=0)


def test_short_query_is_not_padded(embedder: Embedder) -> None:
    hello = embedder.embed("hello world")
    assert hello.n_tokens == 4  # [CLS] hello world [SEP]; the packaged file would give 128
    assert not hello.truncated
    short = embedder.embed(SHORT)
    assert short.n_tokens < 20
    assert not short.truncated


def test_long_text_is_truncated_to_max_tokens(embedder: Embedder) -> None:
    assert embedder.truncation == "head_tail:64"  # the default
    long = embedder.embed(LONG)
    assert long.truncated
    assert long.n_tokens == embedder.max_tokens
    at_limit = embedder.embed("a " * 254)
    assert at_limit.n_tokens == 256 and not at_limit.truncated
    over = embedder.embed("a " * 255)
    assert over.n_tokens == 256 and over.truncated
    # head_tail keeps the end: a different ending changes the vector...
    tail_changed = embedder.embed(LONG + " Completely different ending about volcanoes.")
    assert _cos(long.vector, tail_changed.vector) < 0.999
    # ...while head truncation cannot see anything after the first 256 tokens.
    head = Embedder.from_dir(default_embedder_dir(), truncation="head")
    assert _cos(head.embed(LONG).vector, head.embed(LONG + " Volcanoes.").vector) > 0.99999


def test_stages_compose_to_embed(embedder: Embedder) -> None:
    enc = embedder.encode(SHORT)
    assert enc.ids.shape == enc.mask.shape == (1, enc.n_tokens)
    assert enc.ids.dtype == np.int64
    vectors = embedder.run(enc.ids, enc.mask)
    assert vectors.shape == (1, 384)
    np.testing.assert_allclose(vectors[0], embedder.embed(SHORT).vector, atol=1e-6)


def test_semantics(embedder: Embedder) -> None:
    a = embedder.embed("How do I reverse a linked list in Python?").vector
    b = embedder.embed("Write Python code that reverses a singly linked list.").vector
    c = embedder.embed("What temperature should I roast a chicken at?").vector
    d = embedder.embed("How long do I cook a whole chicken in the oven?").vector
    assert _cos(a, b) > _cos(a, c) + 0.3
    assert _cos(c, d) > _cos(b, d) + 0.3


def test_fingerprint_matches_manifest_and_is_stable(embedder: Embedder) -> None:
    manifest = embedder.manifest
    assert len(embedder.fingerprint) == 64
    assert embedder.fingerprint == manifest["fingerprint"]
    assert compute_fingerprint(manifest) == embedder.fingerprint
    assert Embedder.from_dir(embedder.path).fingerprint == embedder.fingerprint
    # only the embedding function is fingerprinted, not provenance or timestamps
    manifest["created_time"] = "1970-01-01T00:00:00Z"
    manifest["files"] = {}
    manifest["opset"] = 99
    assert compute_fingerprint(manifest) == embedder.fingerprint
    manifest["max_tokens"] = 128
    assert compute_fingerprint(manifest) != embedder.fingerprint


def test_manifest_property_is_a_copy(embedder: Embedder) -> None:
    embedder.manifest["dim"] = 1
    assert embedder.manifest["dim"] == 384


def test_default_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("UNIROUTE_EMBEDDER_DIR", raising=False)
    assert default_embedder_dir() == Path(__file__).resolve().parent.parent / "var" / "embedder"
    monkeypatch.setenv("UNIROUTE_EMBEDDER_DIR", str(tmp_path))
    assert default_embedder_dir() == tmp_path


def test_concurrent_matches_sequential(embedder: Embedder) -> None:
    texts = [f"{t} (variant {i})" for i in range(20) for t in MIXED[:6]]
    sequential = np.stack([embedder.embed(t).vector for t in texts])
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = np.stack([e.vector for e in pool.map(embedder.embed, texts)])
        batches = list(pool.map(lambda chunk: embedder.embed_batch(chunk), [texts] * 4))
    np.testing.assert_allclose(concurrent, sequential, atol=1e-6)
    for batch in batches:
        np.testing.assert_allclose(batch.vectors, sequential, atol=1e-5)


# ---------------------------------------------------------------- corrupt artifacts


def _flip_model_bytes(d: Path) -> None:
    data = bytearray((d / MODEL_FILE).read_bytes())
    for offset in (1000, len(data) // 2, len(data) - 10):
        data[offset] ^= 0xFF
    (d / MODEL_FILE).write_bytes(bytes(data))


def _rewrite_manifest(d: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    edit(manifest)
    (d / MANIFEST_FILE).write_text(json.dumps(manifest))


def _unloadable_model_with_matching_hash(d: Path) -> None:
    """Garbage that passes the sha256 check, so onnxruntime itself must reject it."""
    (d / MODEL_FILE).write_bytes(b"this is not an onnx protobuf" * 100)
    sha = sha256_file(d / MODEL_FILE)
    _rewrite_manifest(d, lambda m: m["files"].__setitem__(MODEL_FILE, sha))


CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "flipped-model-bytes": (_flip_model_bytes, MODEL_FILE),
    "missing-model": (lambda d: (d / MODEL_FILE).unlink(), MODEL_FILE),
    "missing-tokenizer": (lambda d: (d / TOKENIZER_FILE).unlink(), TOKENIZER_FILE),
    "truncated-tokenizer": (
        lambda d: (d / TOKENIZER_FILE).write_bytes((d / TOKENIZER_FILE).read_bytes()[:500]),
        TOKENIZER_FILE,
    ),
    "garbage-manifest": (lambda d: (d / MANIFEST_FILE).write_text("{not json"), MANIFEST_FILE),
    "missing-manifest": (lambda d: (d / MANIFEST_FILE).unlink(), MANIFEST_FILE),
    "manifest-not-object": (lambda d: (d / MANIFEST_FILE).write_text("[1, 2]"), MANIFEST_FILE),
    "edited-field-breaks-fingerprint": (
        lambda d: _rewrite_manifest(d, lambda m: m.__setitem__("max_tokens", 128)),
        MANIFEST_FILE,
    ),
    "edited-source-hash": (
        lambda d: _rewrite_manifest(
            d, lambda m: m["source"]["files"].__setitem__("config.json", "0" * 64)
        ),
        MANIFEST_FILE,
    ),
    "wrong-format": (
        lambda d: _rewrite_manifest(d, lambda m: m.__setitem__("format", "other/9")),
        MANIFEST_FILE,
    ),
    "unloadable-model": (_unloadable_model_with_matching_hash, MODEL_FILE),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_artifact_raises(embedder: Embedder, tmp_path: Path, name: str) -> None:
    corrupt, culprit = CORRUPTIONS[name]
    copy = tmp_path / "embedder"
    shutil.copytree(embedder.path, copy)
    Embedder.from_dir(copy)  # the pristine copy loads
    corrupt(copy)
    with pytest.raises(ArtifactError) as info:
        Embedder.from_dir(copy)
    message = str(info.value)
    assert culprit in message
    assert "sidecar export-embedder" in message


def test_missing_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="export-embedder"):
        Embedder.from_dir(tmp_path / "nope")


SHARED_PREFIX = "Answer like the examples. " + "Example: the sky is blue. Answer: A. " * 60


@pytest.mark.parametrize("truncation", ["tail", "head_tail", "head_tail:32"])
def test_truncation_strategies_keep_the_end_of_long_prompts(truncation: str) -> None:
    head = Embedder.from_dir(default_embedder_dir(), truncation="head")
    other = Embedder.from_dir(default_embedder_dir(), truncation=truncation)
    first = SHARED_PREFIX + "Question: which planet is the largest?"
    second = SHARED_PREFIX + "Question: how do I reverse a list in Python?"
    # Head truncation sees only the shared few-shot prefix: both prompts look the same.
    assert float(head.embed(first).vector @ head.embed(second).vector) > 0.999
    a, b = other.embed(first), other.embed(second)
    assert a.truncated and a.n_tokens == other.max_tokens
    assert float(a.vector @ b.vector) < 0.99
    assert other.fingerprint != head.fingerprint
    assert other.truncation == {"head_tail": "head_tail:64"}.get(truncation, truncation)
    batch = other.embed_batch([first, "short prompt", second])
    assert float(batch.vectors[0] @ a.vector) > 0.9999
    assert batch.truncated.tolist() == [True, False, True]


def test_head_tail_window_keeps_cls_sep_and_both_ends() -> None:
    window = TokenWindow.parse("head_tail:3", 10)
    ids = np.arange(100, 121, dtype=np.int64)  # [CLS]=100 ... [SEP]=120
    kept, truncated = window.apply(ids)
    assert truncated
    assert kept.tolist() == [100, 101, 102, 103, 115, 116, 117, 118, 119, 120]
    short = np.arange(5, dtype=np.int64)
    assert window.apply(short)[0] is short
    with pytest.raises(ValueError):
        TokenWindow.parse("head_tail:8", 10)


def test_unknown_truncation_override_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        Embedder.from_dir(default_embedder_dir(), truncation="middle")
