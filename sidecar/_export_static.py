"""Distil the static embedder from the packaged MiniLM checkpoint (Model2Vec's method).

Used only by ``sidecar export-embedder --kind static``. torch, transformers and
model2vec are the ``export`` extra and are imported inside the functions that
need them; serving never loads them.

The recipe, as Model2Vec distils a sentence-transformer:

1. every vocabulary id t goes through MiniLM once, as ``[CLS] t [SEP]``, and
   its vector is the mean of the last hidden states (``model2vec``'s
   ``create_embeddings``; about 30,000 tiny forward passes, the slow part);
2. PCA to ``pca_dims`` dimensions (``model2vec``'s ``apply_pca``);
3. SIF weighting with Zipf frequencies estimated from the token's rank
   (``model2vec``'s ``compute_weights``), kept as a separate per-token weight;
4. each row quantised to int8 with its own scale (checked against float32).

The table stays aligned to the packaged ``tokenizer.json``'s ids (no token is
dropped), so the runtime tokenises with that file unchanged. PCA dimension and
weighting were chosen on held-out RouterBench train data
(``python -m bench.quality_static``); the numbers are in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._embedder_manifest import MANIFEST_FILE, TOKENIZER_FILE, sha256_file
from ._errors import ArtifactError, InvalidArgument
from ._export import (
    PROBE_TEXTS,
    SOURCE_FILES,
    _agreement_prompts,
    _resolve_source,
    _source_name,
    _swap_into_place,
    cluster_agreement,
)
from ._static_embedder import (
    KIND,
    SCALE_FILE,
    STATIC_FORMAT,
    TABLE_FILE,
    WEIGHT_FILE,
    StaticEmbedder,
    file_digests,
    static_fingerprint,
)
from ._wordpiece import WordPiece

F32 = npt.NDArray[np.float32]

DISTILL = "model2vec create_embeddings: [CLS] id [SEP] through the checkpoint, mean of last hidden"
# Chosen on held-out RouterBench train (bench/quality_static.py, Dec 2026): 128
# dimensions had the best held-out Area of {128, 256, 384} x {none, sif:1e-3,
# sif:1e-4, sif:1e-5} (all within noise of each other), and halves the bytes
# every token's row costs to gather.
DEFAULT_PCA_DIMS = 128
DEFAULT_WEIGHTING = "sif:1e-4"
WEIGHTINGS = ("none", "sif:1e-3", "sif:1e-4", "sif:1e-5")
INT8 = "int8-per-row"
# int8 against float32 on the probe texts and the starter prompts, as for the
# ONNX export: rows keep 8 bits each, so this is a check, not a trade-off.
MIN_MEAN_COSINE = 0.999
MIN_WORST_COSINE = 0.99
MIN_CLUSTER_AGREEMENT = 0.97
DEFAULT_OUT = "embedder-static"


def default_static_dir() -> Path:
    """<repo>/var/embedder-static (next to the ONNX embedder's var/embedder)."""
    return Path(__file__).resolve().parent.parent / "var" / DEFAULT_OUT


def distil_raw(src: Path, *, threads: int = 2) -> tuple[F32, dict[str, str]]:
    """(V, hidden) float32: every vocabulary id through the checkpoint (step 1)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local checkpoint; never download
    import model2vec
    import torch
    import transformers
    from model2vec.distill.inference import create_embeddings

    torch.set_num_threads(threads)
    model = transformers.AutoModel.from_pretrained(str(src))
    vocab = WordPiece.from_file(src / TOKENIZER_FILE).tokenizer.get_vocab()
    cls, sep, pad = vocab["[CLS]"], vocab["[SEP]"], vocab.get("[PAD]", 0)
    ids = [[cls, token, sep] for token in range(len(vocab))]
    raw = create_embeddings(model=model, tokenized=ids, device="cpu", pad_token_id=pad)
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model2vec": model2vec.__version__,
    }
    return np.ascontiguousarray(raw, dtype=np.float32), versions


def token_weights(n_tokens: int, weighting: str) -> F32:
    """Step 3: the per-token weight ("none" or "sif:A", Zipf frequencies by rank)."""
    if weighting == "none":
        return np.ones(n_tokens, dtype=np.float32)
    kind, _, coefficient = weighting.partition(":")
    if kind != "sif" or not coefficient:
        raise InvalidArgument(f"weighting {weighting!r} is not 'none' or 'sif:A'")
    from model2vec.distill.inference import compute_weights

    return np.asarray(compute_weights(n_tokens, float(coefficient)), dtype=np.float32)


def reduce(raw: F32, pca_dims: int) -> F32:
    """Step 2: PCA to ``pca_dims`` (the full width still rotates onto the components)."""
    from model2vec.distill.inference import apply_pca

    return np.ascontiguousarray(apply_pca(raw.astype(np.float64), pca_dims), dtype=np.float32)


def quantise(table: F32) -> tuple[npt.NDArray[np.int8], F32]:
    """Step 4: int8 rows with one scale each (max |value| maps to 127)."""
    scale = np.abs(table).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def export_static(
    out_dir: Path,
    source: Path | None = None,
    *,
    pca_dims: int = DEFAULT_PCA_DIMS,
    weighting: str = DEFAULT_WEIGHTING,
    quantize: bool = True,
    raw: F32 | None = None,
) -> dict[str, Any]:
    """Distil ``source`` into ``out_dir`` (table, scale, weights, tokenizer, manifest).

    Built in a sibling temp dir and swapped in at the end, so a failed export
    leaves an existing ``out_dir`` untouched. ``raw`` skips step 1 (tests and
    benches pass a cached one). Returns the manifest.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    token_weights(1, weighting)  # a bad weighting fails before the slow part
    src = _resolve_source(source)
    versions: dict[str, str] = {}
    if raw is None:
        raw, versions = distil_raw(src)
    if not 0 < pca_dims <= raw.shape[1]:
        raise InvalidArgument(f"pca_dims must be in [1, {raw.shape[1]}], got {pca_dims}")
    table = reduce(raw, pca_dims)
    weight = token_weights(table.shape[0], weighting)
    manifest: dict[str, Any] = {
        "format": STATIC_FORMAT,
        "kind": KIND,
        "source": {
            "name": _source_name(src, source is None),
            "path": str(src),
            "files": {n: sha256_file(src / n) for n in SOURCE_FILES if (src / n).is_file()},
        },
        "files": {},
        "dim": int(table.shape[1]),
        "vocab_size": int(table.shape[0]),
        "distill": DISTILL,
        "pca_dims": pca_dims,
        "weighting": weighting,
        "quantization": INT8 if quantize else "none",
        "pooling": "mean",
        "normalize": True,
        "special_tokens": False,
    }
    manifest["fingerprint"] = static_fingerprint(manifest)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        shutil.copyfile(src / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        wordpiece = WordPiece.from_file(staging / TOKENIZER_FILE)
        reference = StaticEmbedder(
            path=staging, manifest=manifest, wordpiece=wordpiece, table=table, weight=weight
        )
        stored: npt.NDArray[Any]
        if quantize:
            stored, scale = quantise(table)
        else:
            stored, scale = table, np.ones(table.shape[0], dtype=np.float32)
        for name, array in ((TABLE_FILE, stored), (SCALE_FILE, scale), (WEIGHT_FILE, weight)):
            np.save(staging / name, array, allow_pickle=False)
        final = StaticEmbedder(
            path=staging,
            manifest=manifest,
            wordpiece=wordpiece,
            table=stored,
            weight=(scale * weight).astype(np.float32),
        )
        manifest["probe"] = _probe(reference, final)
        failed = _gate_failures(manifest["probe"])
        if failed:
            raise ArtifactError(
                f"int8 table drifted too far from float32: failed {'; '.join(failed)}; "
                f"try --no-quantize; {out_dir} left unchanged"
            )
        manifest["files"] = file_digests(staging)
        manifest["versions"] = versions
        manifest["export_seconds"] = round(time.monotonic() - started, 1)
        manifest["created_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        StaticEmbedder.from_dir(staging)  # proves the artifact is self-consistent
        staging.chmod(0o755)
        _swap_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _probe(reference: StaticEmbedder, final: StaticEmbedder) -> dict[str, Any]:
    cosines = [float(np.dot(reference.embed(t).vector, final.embed(t).vector)) for t in PROBE_TEXTS]
    prompts = _agreement_prompts()
    agreement = cluster_agreement(
        reference.embed_batch(prompts).vectors, final.embed_batch(prompts).vectors
    )
    return {
        "n": len(cosines),
        "mean_cosine": round(float(np.mean(cosines)), 6),
        "min_mean_cosine": MIN_MEAN_COSINE,
        "worst_cosine": round(float(np.min(cosines)), 6),
        "min_worst_cosine": MIN_WORST_COSINE,
        "cluster_agreement": round(agreement, 6),
        "min_cluster_agreement": MIN_CLUSTER_AGREEMENT,
        "cluster_probe": {"prompts": "sidecar/data/starter/train.jsonl", "n": len(prompts)},
    }


def _gate_failures(probe: dict[str, Any]) -> list[str]:
    failed = []
    if probe["mean_cosine"] < probe["min_mean_cosine"]:
        failed.append(f"mean cosine {probe['mean_cosine']:.4f} < {probe['min_mean_cosine']}")
    if probe["worst_cosine"] < probe["min_worst_cosine"]:
        failed.append(f"worst cosine {probe['worst_cosine']:.4f} < {probe['min_worst_cosine']}")
    if probe["cluster_agreement"] < probe["min_cluster_agreement"]:
        failed.append(
            f"cluster agreement {probe['cluster_agreement']:.4f} < {probe['min_cluster_agreement']}"
        )
    return failed
