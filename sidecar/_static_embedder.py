"""Runtime static embedder: one vector per vocabulary token, distilled from MiniLM.

A prompt's embedding is the L2-normalised weighted mean of its tokens' table
rows (Model2Vec's approach), so it costs a gather and a sum: the whole prompt
is used, with no truncation, and Route goes from token ids to the chosen
model in one Numba call (``route_tokens``). No onnxruntime session and no
torch: numpy, Numba and ``tokenizers`` (plus the Numba WordPiece for ASCII).

The artifact directory (``sidecar export-embedder --kind static``) holds the
table (``table.npy``, int8 or float32, V x D), the per-row dequantisation
scale (``scale.npy``) and token weight (``token_weight.npy``), the unchanged
``tokenizer.json`` and ``manifest.json``. Its fingerprint hashes the source
checkpoint's files and the recipe (see ``STATIC_FINGERPRINT_KEYS``), so it
always differs from the ONNX embedder's and clusterings are never mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _static_kernels
from ._embedder import BatchEmbedding, Embedding, Encoded
from ._embedder_manifest import (
    MANIFEST_FILE,
    TOKENIZER_FILE,
    VerifiedArtifact,
    sha256_file,
    verify_file,
    verify_fingerprint,
)
from ._errors import ArtifactError
from ._table import RoutingTable
from ._wordpiece import WordPiece

STATIC_FORMAT = "uniroute.embedder.static/1"
KIND = "static"
TABLE_FILE = "table.npy"
SCALE_FILE = "scale.npy"
WEIGHT_FILE = "token_weight.npy"
ARRAY_FILES = (TABLE_FILE, SCALE_FILE, WEIGHT_FILE)
# Everything that defines the embedding function, nothing that does not (bytes,
# versions, timestamps): re-exports of the same checkpoint agree on it.
STATIC_FINGERPRINT_KEYS = (
    "kind",
    "dim",
    "distill",
    "pca_dims",
    "weighting",
    "quantization",
    "pooling",
    "normalize",
    "special_tokens",
)
REBUILD_HINT = "rebuild it with `sidecar export-embedder --kind static` (or `make embedder-static`)"
NO_TRUNCATION = "none"  # what ``truncation`` reports: the whole prompt is embedded


def static_fingerprint(manifest: Mapping[str, Any]) -> str:
    payload = {
        "source_files": dict(manifest["source"]["files"]),
        **{key: manifest[key] for key in STATIC_FINGERPRINT_KEYS},
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_static_manifest(path: Path) -> dict[str, Any]:
    """Parse and shape-check a static manifest, naming the file in every failure."""
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{manifest_path} is unreadable ({exc}); {REBUILD_HINT}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != STATIC_FORMAT:
        raise ArtifactError(f"{manifest_path}: not a {STATIC_FORMAT} manifest; {REBUILD_HINT}")
    missing = [
        k for k in ("files", "fingerprint", "source", *STATIC_FINGERPRINT_KEYS) if k not in manifest
    ]
    if missing:
        raise ArtifactError(f"{manifest_path} lacks {', '.join(missing)}; {REBUILD_HINT}")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(files.get(name), str) for name in (*ARRAY_FILES, TOKENIZER_FILE)
    ):
        raise ArtifactError(
            f"{manifest_path}: 'files' must map {', '.join(ARRAY_FILES)} and {TOKENIZER_FILE} "
            f"to sha256 hex; {REBUILD_HINT}"
        )
    for key, want in (("kind", KIND), ("pooling", "mean"), ("normalize", True)):
        if manifest[key] != want:
            raise ArtifactError(
                f"{manifest_path}: {key}={manifest[key]!r} is unsupported (want {want!r}); "
                f"{REBUILD_HINT}"
            )
    verify_fingerprint(manifest, static_fingerprint, manifest_path)
    return manifest


class StaticEmbedder(VerifiedArtifact):
    """Thread-safe text -> unit vector function over a token table; see the module docstring."""

    def __init__(
        self,
        *,
        path: Path,
        manifest: Mapping[str, Any],
        wordpiece: WordPiece,
        table: npt.NDArray[Any],
        weight: npt.NDArray[np.float32],
    ) -> None:
        """Wire up already-checked parts; ``weight`` = token weight x dequantisation scale."""
        if table.ndim != 2 or weight.shape != (table.shape[0],):
            raise ArtifactError(f"{path}: table {table.shape} and weights {weight.shape} disagree")
        super().__init__(path, manifest, int(table.shape[1]))
        self._wordpiece = wordpiece
        self._table = _frozen(table)
        self._weight = _frozen(weight.astype(np.float32))

    @classmethod
    def from_dir(cls, path: Path) -> StaticEmbedder:
        """Load and verify an artifact directory; any defect is an ArtifactError."""
        path = Path(path)
        manifest = read_static_manifest(path)
        for name in (*ARRAY_FILES, TOKENIZER_FILE):
            verify_file(path, name, manifest["files"][name])
        try:
            table, scale, token_weight = (
                np.load(path / name, allow_pickle=False) for name in ARRAY_FILES
            )
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: cannot read the table ({exc}); {REBUILD_HINT}") from exc
        if table.dtype not in (np.int8, np.float32) or table.shape[1:] != (manifest["dim"],):
            raise ArtifactError(
                f"{path / TABLE_FILE}: {table.dtype} {table.shape} is not int8 or float32 with "
                f"dim {manifest['dim']}; {REBUILD_HINT}"
            )
        try:
            wordpiece = WordPiece.from_file(path / TOKENIZER_FILE)
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ArtifactError(
                f"{path / TOKENIZER_FILE}: cannot load tokenizer ({exc}); {REBUILD_HINT}"
            ) from exc
        if wordpiece.tokenizer.get_vocab_size() != table.shape[0]:
            raise ArtifactError(
                f"{path}: the tokenizer has {wordpiece.tokenizer.get_vocab_size()} tokens but "
                f"the table {table.shape[0]} rows; {REBUILD_HINT}"
            )
        weight = (np.asarray(scale, np.float32) * np.asarray(token_weight, np.float32)).astype(
            np.float32
        )
        embedder = cls(
            path=path, manifest=manifest, wordpiece=wordpiece, table=table, weight=weight
        )
        embedder._self_check()
        return embedder

    def _self_check(self) -> None:
        vector = self.embed("warm-up: route this prompt").vector
        if vector.shape != (self._dim,) or not np.isfinite(vector).all():
            raise ArtifactError(f"{self._path}: the table gives a broken vector; {REBUILD_HINT}")

    # -- what the router and the CLI read --

    @property
    def truncation(self) -> str:
        return NO_TRUNCATION

    @property
    def kind(self) -> str:
        return KIND

    @property
    def max_tokens(self) -> int:
        return 0  # no limit: the prompt byte limit bounds the work

    @property
    def wordpiece(self) -> WordPiece:
        return self._wordpiece

    def __repr__(self) -> str:
        return (
            f"StaticEmbedder(path={str(self._path)!r}, dim={self._dim}, "
            f"vocab={self._table.shape[0]}, fingerprint={self._fingerprint[:12]!r})"
        )

    # -- stages --

    def tokens(self, text: str) -> npt.NDArray[np.int32]:
        """The whole text's token ids (no [CLS]/[SEP], no truncation)."""
        return self._wordpiece.ids(text)

    def encode(self, text: str) -> Encoded:
        ids = self.tokens(text).astype(np.int64).reshape(1, -1)
        return Encoded(ids, np.ones_like(ids), int(ids.shape[1]), False)

    def run(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """(batch, seq) ids and mask -> (batch, dim) unit vectors (NaN rows for no tokens)."""
        rows = [row[m.astype(bool)].astype(np.int32) for row, m in zip(ids, mask, strict=True)]
        return self._embed_ids(rows)

    def route_tokens(
        self,
        ids: npt.NDArray[np.int32],
        spans: npt.NDArray[np.int64],
        table: RoutingTable,
        lams: npt.NDArray[np.float64],
        masks: npt.NDArray[np.bool_],
        X: npt.NDArray[np.float32],
        out_scores: npt.NDArray[np.float32],
        out_clusters: npt.NDArray[np.int64],
        out_chosen: npt.NDArray[np.int64],
    ) -> None:
        """One Numba call: embed the rows with ids into X, then route every row (see kernels)."""
        _static_kernels.route_tokens(
            ids,
            spans,
            self._table,
            self._weight,
            table.centroids,
            table.psi,
            table.costs,
            lams,
            masks,
            X,
            out_scores,
            out_clusters,
            out_chosen,
        )

    def embed_spans(
        self, ids: npt.NDArray[np.int32], spans: npt.NDArray[np.int64], X: npt.NDArray[np.float32]
    ) -> None:
        """Embeds the rows of X whose span starts at >= 0 (the same kernel code as route_tokens)."""
        _static_kernels.embed_tokens(ids, spans, self._table, self._weight, X)

    # -- public embedding API --

    def embed(self, text: str) -> Embedding:
        ids = self.tokens(text)
        return Embedding(vector=self._embed_ids([ids])[0], n_tokens=int(ids.size), truncated=False)

    def embed_batch(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> BatchEmbedding:
        """Row i equals ``embed(texts[i])`` exactly (same kernel, same order of sums)."""
        if isinstance(texts, str):
            raise TypeError("embed_batch expects a sequence of strings, not a single str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(texts)
        vectors = np.empty((n, self._dim), dtype=np.float32)
        n_tokens = np.zeros(n, dtype=np.int64)
        for start in range(0, n, batch_size):
            rows = [self.tokens(t) for t in texts[start : start + batch_size]]
            vectors[start : start + len(rows)] = self._embed_ids(rows)
            n_tokens[start : start + len(rows)] = [r.size for r in rows]
            if progress is not None:
                progress(start + len(rows))
        return BatchEmbedding(vectors, n_tokens, np.zeros(n, dtype=np.bool_))

    def _embed_ids(self, rows: Sequence[npt.NDArray[np.int32]]) -> npt.NDArray[np.float32]:
        ids, spans = pack(rows)
        out = np.empty((len(rows), self._dim), dtype=np.float32)
        _static_kernels.embed_tokens(ids, spans, self._table, self._weight, out)
        return out

    def warm_up(self) -> None:
        _static_kernels.warm_up(self._table, self._weight)


def pack(
    rows: Sequence[npt.NDArray[np.int32]],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Concatenated ids and the (start, end) span of each row."""
    ends = np.cumsum([r.size for r in rows], dtype=np.int64)
    spans = np.empty((len(rows), 2), dtype=np.int64)
    spans[:, 1] = ends
    spans[:, 0] = ends - [r.size for r in rows]
    ids = np.concatenate(rows).astype(np.int32, copy=False) if rows else np.empty(0, np.int32)
    return np.ascontiguousarray(ids), spans


def _frozen(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def file_digests(path: Path) -> dict[str, str]:
    """sha256 of every file a static artifact's manifest lists."""
    return {name: sha256_file(path / name) for name in (*ARRAY_FILES, TOKENIZER_FILE)}
