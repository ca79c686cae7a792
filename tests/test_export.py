"""The ONNX export: a fresh export must reproduce the shipped fingerprint.

Each real export takes ~10 s (torch trace + quantisation + probe), so exports are
module-scoped and shared between tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidecar import _export
from sidecar._embedder import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    Embedder,
    compute_fingerprint,
    sha256_file,
)
from sidecar._errors import ArtifactError, InvalidArgument
from sidecar._export import PROBE_TEXTS, export_embedder


# One export takes about 30 s (torch), so every test that exports is marked slow.
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("export") / "embedder"
    return out, export_embedder(out, quantize=True)


@pytest.mark.slow
def test_manifest_matches_files(exported: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = exported
    assert json.loads((out / MANIFEST_FILE).read_text()) == manifest
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE]
    for name in (MODEL_FILE, TOKENIZER_FILE):
        assert manifest["files"][name] == sha256_file(out / name)
    source = Path(manifest["source"]["path"])
    assert manifest["source"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert set(manifest["source"]["files"]) == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
    }
    for name, sha in manifest["source"]["files"].items():
        assert sha256_file(source / name) == sha
    assert manifest["format"] == "uniroute.embedder/1"
    assert manifest["dim"] == 384
    assert manifest["max_tokens"] == 256
    assert manifest["truncation"] == "head_tail:64"
    assert manifest["pooling"] == "mean"
    assert manifest["normalize"] is True
    assert manifest["quantization"] == "int8-dynamic-matmul-per-channel"
    assert manifest["opset"] == 17
    assert set(manifest["versions"]) == {"torch", "transformers", "onnxruntime"}
    assert manifest["created_time"].endswith("Z")


@pytest.mark.slow
def test_probe_quality(exported: tuple[Path, dict[str, Any]]) -> None:
    probe = exported[1]["probe"]
    assert probe["n"] == len(PROBE_TEXTS) >= 20
    assert probe["mean_cosine"] >= 0.99
    assert probe["min_cosine"] == 0.99
    assert probe["worst_cosine"] <= probe["mean_cosine"] <= 1.0


@pytest.mark.slow
def test_fingerprint_is_deterministic(
    exported: tuple[Path, dict[str, Any]], embedder: Embedder
) -> None:
    _, manifest = exported
    assert manifest["fingerprint"] == compute_fingerprint(manifest)
    # a fresh export reproduces the shipped embedder's fingerprint (clusterings depend on it)
    assert manifest["fingerprint"] == embedder.fingerprint


@pytest.mark.slow
def test_export_loads_and_agrees_with_default(
    exported: tuple[Path, dict[str, Any]], embedder: Embedder
) -> None:
    fresh = Embedder.from_dir(exported[0])
    assert fresh.dim == 384
    for text in PROBE_TEXTS[:5]:
        assert float(np.dot(fresh.embed(text).vector, embedder.embed(text).vector)) > 0.999


@pytest.mark.slow
def test_no_staging_leftovers(exported: tuple[Path, dict[str, Any]]) -> None:
    assert [p.name for p in exported[0].parent.iterdir()] == ["embedder"]


@pytest.mark.slow
def test_unquantized_export(tmp_path: Path, embedder: Embedder) -> None:
    """quantize=False: a different fingerprint, probe cosine 1, and the padded-batch path."""
    out = tmp_path / "fp32"
    manifest = export_embedder(out, quantize=False)
    assert manifest["quantization"] == "none"
    assert manifest["probe"]["mean_cosine"] > 0.99999
    assert manifest["fingerprint"] != embedder.fingerprint
    fp32 = Embedder.from_dir(out)
    texts = [*PROBE_TEXTS, "", "hi"]
    batch = fp32.embed_batch(texts, batch_size=8)
    for i, text in enumerate(texts):
        single = fp32.embed(text)
        assert float(np.dot(batch.vectors[i], single.vector)) > 0.9999
        assert batch.n_tokens[i] == single.n_tokens
        assert batch.truncated[i] == single.truncated


@pytest.mark.slow
def test_failed_probe_leaves_existing_dir_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "embedder"
    out.mkdir()
    (out / "keep.txt").write_text("previous artifact")
    monkeypatch.setattr(_export, "_probe", lambda *args, **kwargs: [0.5] * len(PROBE_TEXTS))
    with pytest.raises(ArtifactError, match="probe cosine"):
        export_embedder(out, quantize=False)
    assert [p.name for p in tmp_path.iterdir()] == ["embedder"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        export_embedder(tmp_path / "out", source=tmp_path / "no-such-checkpoint")
    assert not (tmp_path / "out").exists()


def test_incomplete_source_raises(tmp_path: Path, embedder: Embedder) -> None:
    source = tmp_path / "ckpt"
    source.mkdir()
    origin = Path(embedder.manifest["source"]["path"])
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(origin / name, source / name)
    with pytest.raises(ArtifactError, match=r"model\.safetensors"):
        export_embedder(tmp_path / "out", source=source)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"truncation": "middle"},
        {"truncation": "head_tail:300"},
        {"max_tokens": 0},
        {"max_tokens": 10_000},
        {"min_cosine": 1.5},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        export_embedder(tmp_path / "out", **kwargs)
