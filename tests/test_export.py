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
    Embedder,
)
from sidecar._embedder_manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    compute_fingerprint,
    sha256_file,
)
from sidecar._errors import ArtifactError, InvalidArgument
from sidecar._export import (
    MIN_CLUSTER_AGREEMENT,
    MIN_WORST_COSINE,
    PROBE_TEXTS,
    cluster_agreement,
    export_embedder,
    gate_failures,
)


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
    assert probe["worst_cosine"] >= probe["min_worst_cosine"] == MIN_WORST_COSINE == 0.95
    assert probe["cluster_agreement"] >= probe["min_cluster_agreement"]
    assert probe["min_cluster_agreement"] == MIN_CLUSTER_AGREEMENT == 0.97
    assert probe["cluster_agreement"] < 1.0  # int8 does move a few prompts: the gate measures
    assert probe["cluster_probe"] == {
        "prompts": "sidecar/data/starter/train.jsonl",
        "n": 480,
        "k": 12,
        "seed": 0,
    }
    assert gate_failures(probe) == []


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
    assert manifest["probe"]["cluster_agreement"] == 1.0  # fp32 against itself
    assert manifest["fingerprint"] != embedder.fingerprint
    fp32 = Embedder.from_dir(out)
    texts = [*PROBE_TEXTS, "", "hi"]
    batch = fp32.embed_batch(texts, batch_size=8)
    for i, text in enumerate(texts):
        single = fp32.embed(text)
        assert float(np.dot(batch.vectors[i], single.vector)) > 0.9999
        assert batch.n_tokens[i] == single.n_tokens
        assert batch.truncated[i] == single.truncated


@pytest.fixture(scope="module")
def fp32_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fp32-cache")


@pytest.fixture
def cached_fp32(monkeypatch: pytest.MonkeyPatch, fp32_cache: Path) -> None:
    """The torch export runs once per module; later exports copy its fp32 model."""
    real = _export._export_fp32
    cached = fp32_cache / "model.fp32.onnx"

    def export_fp32(src: Path, fp32_path: Path, **kwargs: Any) -> dict[str, str]:
        if not cached.exists():
            versions = real(src, fp32_path, **kwargs)
            shutil.copyfile(fp32_path, cached)
            (fp32_cache / "versions.json").write_text(json.dumps(versions))
        shutil.copyfile(cached, fp32_path)
        return dict(json.loads((fp32_cache / "versions.json").read_text()))

    monkeypatch.setattr(_export, "_export_fp32", export_fp32)


def _keep_dir(tmp_path: Path) -> Path:
    out = tmp_path / "embedder"
    out.mkdir()
    (out / "keep.txt").write_text("previous artifact")
    return out


def _assert_kept(tmp_path: Path, out: Path) -> None:
    assert [p.name for p in tmp_path.iterdir()] == ["embedder"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.slow
@pytest.mark.usefixtures("cached_fp32")
def test_failed_probe_leaves_existing_dir_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _keep_dir(tmp_path)
    monkeypatch.setattr(_export, "_probe", lambda *args, **kwargs: [0.5] * len(PROBE_TEXTS))
    with pytest.raises(ArtifactError, match="mean-cosine gate") as info:
        export_embedder(out, quantize=False)
    assert "worst-cosine gate" in str(info.value)
    assert "cluster-agreement gate" not in str(info.value)
    _assert_kept(tmp_path, out)


@pytest.mark.slow
@pytest.mark.usefixtures("cached_fp32")
def test_one_far_probe_fails_the_worst_cosine_gate_despite_a_good_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cosines = [0.999] * (len(PROBE_TEXTS) - 1) + [0.9]
    assert np.mean(cosines) >= 0.99
    out = _keep_dir(tmp_path)
    monkeypatch.setattr(_export, "_probe", lambda *args, **kwargs: cosines)
    with pytest.raises(
        ArtifactError, match=r"worst-cosine gate \(worst probe cosine 0\.9000"
    ) as info:
        export_embedder(out, quantize=False)
    assert "mean-cosine gate" not in str(info.value)
    _assert_kept(tmp_path, out)


@pytest.mark.slow
@pytest.mark.usefixtures("cached_fp32")
def test_cluster_disagreement_fails_the_cluster_agreement_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _keep_dir(tmp_path)
    monkeypatch.setattr(_export, "_cluster_agreement", lambda *args, **kwargs: 0.9)
    with pytest.raises(ArtifactError, match=r"cluster-agreement gate \(0\.9000 of 480") as info:
        export_embedder(out, quantize=False)
    assert "cosine gate" not in str(info.value)
    _assert_kept(tmp_path, out)


def _probe_section(**overrides: float) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "n": 24,
        "mean_cosine": 0.9916,
        "min_cosine": 0.99,
        "worst_cosine": 0.9634,
        "min_worst_cosine": MIN_WORST_COSINE,
        "cluster_agreement": 0.9917,
        "min_cluster_agreement": MIN_CLUSTER_AGREEMENT,
        "cluster_probe": {"prompts": "x", "n": 480, "k": 12, "seed": 0},
    }
    probe.update(overrides)
    return probe


def test_gate_failures_name_each_failed_gate() -> None:
    assert gate_failures(_probe_section()) == []
    (mean,) = gate_failures(_probe_section(mean_cosine=0.98))
    assert mean.startswith("mean-cosine gate") and "0.9800 < 0.99" in mean
    (worst,) = gate_failures(_probe_section(worst_cosine=0.94))
    assert worst.startswith("worst-cosine gate") and "0.9400 < 0.95" in worst
    (clusters,) = gate_failures(_probe_section(cluster_agreement=0.95))
    assert clusters.startswith("cluster-agreement gate") and "0.9500 of 480" in clusters
    everything = gate_failures(
        _probe_section(mean_cosine=0.5, worst_cosine=0.1, cluster_agreement=0.2)
    )
    assert [f.split(" ")[0] for f in everything] == [
        "mean-cosine",
        "worst-cosine",
        "cluster-agreement",
    ]


def test_cluster_agreement_catches_a_broken_embedder(embedder: Embedder) -> None:
    prompts = _export._agreement_prompts()
    assert len(prompts) == 480
    reference = embedder.embed_batch(prompts).vectors
    assert cluster_agreement(reference, reference) == 1.0
    # A broken export that sees only the first six words of each prompt (as a bad
    # truncation would) moves about a fifth of the prompts to another cluster.
    broken = embedder.embed_batch([" ".join(p.split()[:6]) for p in prompts]).vectors
    assert cluster_agreement(reference, broken) < 0.9 < MIN_CLUSTER_AGREEMENT


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
        {"min_worst_cosine": 0.0},
        {"min_cluster_agreement": 1.01},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        export_embedder(tmp_path / "out", **kwargs)
