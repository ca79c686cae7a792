"""The cluster map Φ: K-means centroids plus the validation items assigned to them.

A clustering is fitted once on training prompts (never on S_val, which would
overfit) and then frozen into a content-addressed artifact. Its version is a
hash of everything that changes routing, so two sidecars that report the same
version route identically.

Two kinds of map (``map_kind``): **kmeans**, the nearest centroid (one-hot Φ),
and **learned**, a LearnedMap (``_learned_map`` trains it) that assigns softly,
Φ_k(x) = softmax_k(θ_k·x + b_k). A learned clustering keeps the K-means
centroids it was initialised from (they fix K and D) and carries θ, b and each
S_val item's weights Φ(item), so a registry recomputes Ψ without an embedder.
An item's hard cluster is then its most likely one (argmax Φ).

The artifact is one file, ``clustering.json`` (format "uniroute.clustering/2"),
with the centroids embedded as base64 of little-endian float32, replaced with
one ``os.replace``: a reader sees the old artifact or the new one, never half
of each. The two-file format "uniroute.clustering/1" (``clustering.json`` plus
``centroids.npy``) is still read; a save over it leaves the one file. A
learned map adds a ``map`` section (θ, b and the items' weights, base64 of
little-endian float32); a file without one is K-means, so every K-means
artifact, and its version, is exactly what it was before LearnedMaps existed.

Longer than 400 lines because the artifact holds both maps (K-means and
LearnedMap) and two on-disk formats; split the formats out if a third arrives.
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
from ._profiles import Assignment

ARTIFACT_FORMAT = "uniroute.clustering/2"
LEGACY_FORMAT = "uniroute.clustering/1"  # read only: clustering.json + centroids.npy
MANIFEST_NAME = "clustering.json"
CENTROIDS_NAME = "centroids.npy"  # format 1 only
# The version hash's domain tag. It names format 1 because it must never change:
# the same content keeps the same version whatever file format carries it.
_VERSION_DOMAIN = "uniroute.clustering/1"
_CENTROIDS_DTYPE = "<f4"

MAP_KMEANS = "kmeans"
MAP_LEARNED = "learned"
MAP_KINDS = (MAP_KMEANS, MAP_LEARNED)


@dataclass(frozen=True, eq=False)
class LearnedMap:
    """Φ_k(x) = softmax_k(θ_k·x + b_k) and the S_val items' weights under it.

    Everything is float32: θ (K, D) with the temperature folded in, b (K,), and
    ``item_weights`` (n_val, K), rows in the clustering's item order, each a
    probability vector. ``check`` raises ValueError on anything malformed.
    """

    theta: np.ndarray
    bias: np.ndarray
    item_weights: np.ndarray

    def check(self, k: int, dim: int, n_items: int) -> None:
        if self.theta.shape != (k, dim):
            raise ValueError(f"theta must be K x D = {k} x {dim}, got {self.theta.shape}")
        if self.bias.shape != (k,):
            raise ValueError(f"bias must have K = {k} entries, got {self.bias.shape}")
        if self.item_weights.shape != (n_items, k):
            raise ValueError(
                f"item weights must be n_val x K = {n_items} x {k}, got {self.item_weights.shape}"
            )
        for name in ("theta", "bias", "item_weights"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be finite")
        w = self.item_weights
        if w.size and (w.min() < 0.0 or np.abs(w.sum(axis=1) - 1.0).max() > 1e-3):
            raise ValueError("each item's weights must be >= 0 and sum to 1")


@dataclass(frozen=True)
class Clustering:
    """An immutable clustering: unit-norm float32 centroids and the S_val assignment.

    ``learned`` is None for K-means; for a LearnedMap it holds θ, b and the
    items' soft weights, and ``item_clusters`` is each item's argmax.
    """

    centroids: np.ndarray  # float32 (K, D), C-contiguous, rows L2-normalised
    embedder_fingerprint: str
    item_ids: tuple[str, ...]
    item_clusters: np.ndarray  # int64 (n_val,)
    info: dict[str, object] = field(default_factory=dict, compare=False)
    version: str = ""
    learned: LearnedMap | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.learned is not None:
            self.learned.check(self.k, self.dim, len(self.item_ids))
            if not np.array_equal(self.item_clusters, hard_clusters(self.learned.item_weights)):
                raise ValueError("a learned clustering's item clusters must be argmax of weights")
        if not self.version:
            object.__setattr__(self, "version", self.compute_version())

    @property
    def map_kind(self) -> str:
        return MAP_KMEANS if self.learned is None else MAP_LEARNED

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

    def assignment(self) -> Assignment:
        """The items' clusters (and soft weights under a LearnedMap), for computing Ψ."""
        if self.learned is None:
            return Assignment(self.k, self.item_cluster_map())
        return Assignment(
            self.k, self.item_cluster_map(), self.learned.item_weights, self.item_rows()
        )

    def item_rows(self) -> dict[str, int]:
        """Item id -> its row in ``item_ids`` (and in a LearnedMap's ``item_weights``)."""
        return {item: row for row, item in enumerate(self.item_ids)}

    def compute_version(self) -> str:
        """Hashes centroids, fingerprint and assignment: what makes two routers agree.

        A LearnedMap appends its kind, θ, b and the items' weights (rows in
        item-id order, like the assignment), so a K-means version never changes.
        """
        h = hashlib.sha256()
        h.update(_VERSION_DOMAIN.encode())
        h.update(np.asarray(self.centroids.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(self.centroids, dtype="<f4").tobytes())
        h.update(self.embedder_fingerprint.encode())
        assignment = sorted(zip(self.item_ids, (int(c) for c in self.item_clusters), strict=True))
        h.update(json.dumps(assignment, separators=(",", ":")).encode())
        if self.learned is not None:
            order = sorted(range(len(self.item_ids)), key=self.item_ids.__getitem__)
            h.update(MAP_LEARNED.encode())
            h.update(np.ascontiguousarray(self.learned.theta, dtype="<f4").tobytes())
            h.update(np.ascontiguousarray(self.learned.bias, dtype="<f4").tobytes())
            weights = np.asarray(self.learned.item_weights, dtype="<f4").reshape(-1, self.k)
            h.update(np.ascontiguousarray(weights[order]).tobytes())
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


def soft_assign(vectors: np.ndarray, theta: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A LearnedMap's Φ for each row: softmax_k(θ_k·x + b_k), float64 (n, K)."""
    logits = np.asarray(vectors, dtype=np.float64) @ np.asarray(theta, dtype=np.float64).T
    logits += np.asarray(bias, dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


def hard_clusters(weights: np.ndarray) -> np.ndarray:
    """Each row's most likely cluster (first on ties): a soft item's cluster for counts."""
    return np.argmax(np.asarray(weights), axis=1).astype(np.int64).reshape(-1)


def learned_map(theta: np.ndarray, bias: np.ndarray, val_vectors: np.ndarray) -> LearnedMap:
    """θ and b as stored (float32) and the S_val items' weights computed from exactly those."""
    theta32 = np.ascontiguousarray(theta, dtype=np.float32)
    bias32 = np.ascontiguousarray(bias, dtype=np.float32)
    weights = soft_assign(normalize_rows(val_vectors), theta32, bias32)
    return LearnedMap(theta32, bias32, np.ascontiguousarray(weights, dtype=np.float32))


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
    if clustering.learned is not None:
        manifest["map"] = map_section(clustering.learned)
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
            learned=map_from_section(manifest.get("map")),
        )
    except ArtifactError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
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


def _decode_centroids(spec: object, what: str = "centroids") -> np.ndarray:
    """An embedded float32 array of a format-2 artifact; ValueError/KeyError/TypeError if bad."""
    if not isinstance(spec, dict):
        raise TypeError(f"{what!r} must be an object, got {type(spec).__name__}")
    if spec["dtype"] != _CENTROIDS_DTYPE:
        raise ValueError(f"{what} dtype {spec['dtype']!r} is not {_CENTROIDS_DTYPE!r}")
    shape = spec["shape"]
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise ValueError(f"{what} shape {shape!r} is not a list of sizes")
    data = base64.b64decode(spec["base64"], validate=True)
    return np.frombuffer(data, dtype=_CENTROIDS_DTYPE).reshape(shape)


def _encode_array(array: np.ndarray) -> dict[str, object]:
    data = np.ascontiguousarray(array, dtype=_CENTROIDS_DTYPE)
    return {
        "dtype": _CENTROIDS_DTYPE,
        "shape": list(data.shape),
        "base64": base64.b64encode(data.tobytes()).decode("ascii"),
    }


def map_section(learned: LearnedMap) -> dict[str, object]:
    """A LearnedMap as JSON: the artifact's ``map`` section, and what the stores keep."""
    return {
        "kind": MAP_LEARNED,
        "theta": _encode_array(learned.theta),
        "bias": _encode_array(learned.bias),
        "item_weights": _encode_array(learned.item_weights),
    }


def map_from_section(section: object) -> LearnedMap | None:
    """The inverse of ``map_section``; None (K-means) when absent or of kind "kmeans".

    Shapes are checked when the Clustering is built; malformed input raises
    ValueError, KeyError or TypeError like the rest of an artifact.
    """
    if section is None:
        return None
    if not isinstance(section, dict):
        raise TypeError(f"'map' must be an object, got {type(section).__name__}")
    kind = section.get("kind")
    if kind == MAP_KMEANS:
        return None
    if kind != MAP_LEARNED:
        raise ValueError(f"unknown map kind {kind!r}, expected one of {MAP_KINDS}")
    return LearnedMap(
        theta=np.ascontiguousarray(_decode_centroids(section["theta"], "theta"), np.float32),
        bias=np.ascontiguousarray(_decode_centroids(section["bias"], "bias"), np.float32),
        item_weights=np.ascontiguousarray(
            _decode_centroids(section["item_weights"], "item_weights"), np.float32
        ),
    )


def map_to_text(clustering: Clustering) -> str:
    """What a store keeps of the map beyond the centroids: "" for K-means, else JSON.

    Every store calls this and ``map_from_text``, so they share one encoding.
    """
    if clustering.learned is None:
        return ""
    return json.dumps(map_section(clustering.learned), sort_keys=True)


def map_from_text(text: str) -> LearnedMap | None:
    return map_from_section(json.loads(text)) if text else None


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
