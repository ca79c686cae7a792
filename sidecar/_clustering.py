"""The cluster map Φ: K-means centroids plus the validation items assigned to them.

A clustering is fitted once on training prompts (never on S_val, which would
overfit) and then frozen into a content-addressed artifact. Its version is a
hash of everything that changes routing, so two sidecars that report the same
version route identically.

The artifact is one file, ``clustering.json`` (format "uniroute.clustering/2"),
with the centroids embedded as base64 of little-endian float32, replaced with
one ``os.replace``: a reader sees the old artifact or the new one, never half
of each. The two-file format "uniroute.clustering/1" (``clustering.json`` plus
``centroids.npy``) is still read; a save over it leaves the one file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._errors import ArtifactError, EmbedderMismatch, InvalidArgument

ARTIFACT_FORMAT = "uniroute.clustering/2"
LEGACY_FORMAT = "uniroute.clustering/1"  # read only: clustering.json + centroids.npy
MANIFEST_NAME = "clustering.json"
CENTROIDS_NAME = "centroids.npy"  # format 1 only
# The version hash's domain tag. It names format 1 because it must never change:
# the same content keeps the same version whatever file format carries it.
_VERSION_DOMAIN = "uniroute.clustering/1"
_CENTROIDS_DTYPE = "<f4"


@dataclass(frozen=True)
class Clustering:
    """An immutable clustering: unit-norm float32 centroids and the S_val assignment."""

    centroids: np.ndarray  # float32 (K, D), C-contiguous, rows L2-normalised
    embedder_fingerprint: str
    item_ids: tuple[str, ...]
    item_clusters: np.ndarray  # int64 (n_val,)
    info: dict[str, object] = field(default_factory=dict, compare=False)
    version: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            object.__setattr__(self, "version", self.compute_version())

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def item_cluster_map(self) -> dict[str, int]:
        return dict(zip(self.item_ids, (int(c) for c in self.item_clusters), strict=True))

    def cluster_counts(self) -> np.ndarray:
        return np.bincount(self.item_clusters, minlength=self.k).astype(np.int64)

    def compute_version(self) -> str:
        """Hashes centroids, fingerprint and assignment: what makes two routers agree."""
        h = hashlib.sha256()
        h.update(_VERSION_DOMAIN.encode())
        h.update(np.asarray(self.centroids.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(self.centroids, dtype="<f4").tobytes())
        h.update(self.embedder_fingerprint.encode())
        assignment = sorted(zip(self.item_ids, (int(c) for c in self.item_clusters), strict=True))
        h.update(json.dumps(assignment, separators=(",", ":")).encode())
        return h.hexdigest()[:20]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Returns float32 C-contiguous rows of unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid by dot product, first index on ties: the same rule Route applies."""
    return np.argmax(vectors @ centroids.T, axis=1).astype(np.int64)


def fit_clustering(
    train_vectors: np.ndarray,
    val_ids: Sequence[str],
    val_vectors: np.ndarray,
    *,
    k: int,
    embedder_fingerprint: str,
    seed: int = 0,
    info: dict[str, object] | None = None,
) -> Clustering:
    """Fits K-means on training embeddings and assigns S_val to the clusters."""
    from sklearn.cluster import KMeans  # fitting is offline; keep it off import

    n_train = int(train_vectors.shape[0])
    if k < 1:
        raise InvalidArgument(f"k must be at least 1, got {k}")
    if n_train < k:
        raise InvalidArgument(f"k={k} clusters need at least {k} training prompts, got {n_train}")
    if len(val_ids) == 0:
        raise InvalidArgument("the validation set is empty")
    if len(set(val_ids)) != len(val_ids):
        raise InvalidArgument("validation item ids must be unique")
    if val_vectors.shape != (len(val_ids), train_vectors.shape[1]):
        raise InvalidArgument("validation vectors do not match the ids or the training dimension")
    train = normalize_rows(train_vectors)
    distinct = len(np.unique(train, axis=0))
    if distinct < k:
        raise InvalidArgument(
            f"k={k} clusters need at least {k} distinct training prompts, got {distinct} "
            "(long shared prefixes can make prompts embed identically)"
        )
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(train)
    centroids = normalize_rows(km.cluster_centers_)
    clusters = assign(normalize_rows(val_vectors), centroids)
    details = dict(info or {})
    details.update({"seed": seed, "train_count": n_train, "created_time": _utc_now()})
    return Clustering(centroids, embedder_fingerprint, tuple(val_ids), clusters, details)


def save_clustering(clustering: Clustering, out_dir: Path) -> None:
    """Writes the artifact atomically: a reader sees the old one or the new one, never half.

    One file, replaced by one rename. A format-1 ``centroids.npy`` left from an
    older save is removed afterwards (only a format-1 reader that is half-way
    through that old artifact at that moment could notice, and it gets an
    ArtifactError, never a mixture).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    centroids = np.ascontiguousarray(clustering.centroids, dtype=_CENTROIDS_DTYPE)
    manifest = {
        "format": ARTIFACT_FORMAT,
        "version": clustering.version,
        "k": clustering.k,
        "dim": clustering.dim,
        "centroids": {
            "dtype": _CENTROIDS_DTYPE,
            "shape": list(centroids.shape),
            "base64": base64.b64encode(centroids.tobytes()).decode("ascii"),
        },
        "embedder_fingerprint": clustering.embedder_fingerprint,
        "info": clustering.info,
        "validation": {
            "count": len(clustering.item_ids),
            "cluster_counts": clustering.cluster_counts().tolist(),
            "items": [
                [i, int(c)]
                for i, c in zip(clustering.item_ids, clustering.item_clusters, strict=True)
            ],
        },
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    _atomic_write(out_dir / MANIFEST_NAME, lambda f: f.write(text.encode()))
    (out_dir / CENTROIDS_NAME).unlink(missing_ok=True)


def load_clustering(path: Path) -> Clustering:
    """Loads and verifies an artifact; anything missing or tampered with is an ArtifactError."""
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())  # one read of one file
        fmt = manifest.get("format")
        if fmt == ARTIFACT_FORMAT:
            centroids = _decode_centroids(manifest["centroids"])
        elif fmt == LEGACY_FORMAT:
            centroids = np.load(path / CENTROIDS_NAME, allow_pickle=False)
        else:
            raise ArtifactError(
                f"{manifest_path}: unsupported format {fmt!r}, "
                f"expected {ARTIFACT_FORMAT!r} (or {LEGACY_FORMAT!r})"
            )
        items = manifest["validation"]["items"]
        clustering = Clustering(
            centroids=np.ascontiguousarray(centroids, dtype=np.float32),
            embedder_fingerprint=str(manifest["embedder_fingerprint"]),
            item_ids=tuple(str(i) for i, _ in items),
            item_clusters=np.asarray([int(c) for _, c in items], dtype=np.int64),
            info=dict(manifest.get("info", {})),
        )
    except ArtifactError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"cannot read clustering artifact at {path}: {exc}. Re-create it with `sidecar fit`."
        ) from exc
    if clustering.centroids.ndim != 2 or clustering.k < 1:
        raise ArtifactError(f"{path}: centroids must be a non-empty K x D matrix")
    if np.any(clustering.item_clusters < 0) or np.any(clustering.item_clusters >= clustering.k):
        raise ArtifactError(f"{manifest_path}: a validation item has a cluster outside [0, K)")
    if clustering.version != manifest.get("version"):
        raise ArtifactError(
            f"{path}: content does not match its version {manifest.get('version')!r} "
            f"(computed {clustering.version!r}); the artifact is corrupt or was edited"
        )
    return clustering


def _decode_centroids(spec: object) -> np.ndarray:
    """The embedded centroids of a format-2 artifact; ValueError/KeyError/TypeError if malformed."""
    if not isinstance(spec, dict):
        raise TypeError(f"'centroids' must be an object, got {type(spec).__name__}")
    if spec["dtype"] != _CENTROIDS_DTYPE:
        raise ValueError(f"centroids dtype {spec['dtype']!r} is not {_CENTROIDS_DTYPE!r}")
    shape = spec["shape"]
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"centroids shape {shape!r} is not a list of sizes")
    data = base64.b64decode(spec["base64"], validate=True)
    return np.frombuffer(data, dtype=_CENTROIDS_DTYPE).reshape(shape)


def _atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from a server user
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def require_embedder(clustering: Clustering, fingerprint: str, source: str) -> None:
    """Refuses a clustering fitted with another embedder: its centroids would be meaningless.

    The one check for every way a clustering arrives: start-up, ActivateClustering
    and a follower's Watch stream.
    """
    if clustering.embedder_fingerprint != fingerprint:
        raise EmbedderMismatch(
            f"refusing clustering {clustering.version} from {source}: it was fitted with "
            f"embedder {clustering.embedder_fingerprint[:16]}…, but this sidecar's embedder is "
            f"{fingerprint[:16]}…; re-run `sidecar fit` with this embedder"
        )
