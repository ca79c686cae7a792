"""The cluster map Φ: fitting on synthetic blobs, content-addressed versions, and artifacts."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import sidecar._clustering as sidecar_clustering
from sidecar._clustering import (
    ARTIFACT_FORMAT,
    CENTROIDS_NAME,
    LEGACY_FORMAT,
    MANIFEST_NAME,
    Clustering,
    assign,
    fit_clustering,
    load_clustering,
    normalize_rows,
    save_clustering,
)
from sidecar._errors import ArtifactError, InvalidArgument

D = 16
N_BLOBS = 3
TRAIN_PER_BLOB = 40
VAL_PER_BLOB = 6
FINGERPRINT = "test-embedder/sha256:0123"


def make_blobs(seed: int = 7) -> tuple[np.ndarray, list[str], np.ndarray, list[int]]:
    """Three tight blobs around orthogonal directions; returns train, val ids, val, val blob."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0][:N_BLOBS]  # orthonormal rows
    train = []
    val = []
    val_blob = []
    for b in range(N_BLOBS):
        scale = rng.uniform(0.5, 3.0, size=(TRAIN_PER_BLOB, 1))  # norms differ; direction counts
        train.append(scale * (basis[b] + 0.05 * rng.standard_normal((TRAIN_PER_BLOB, D))))
        val.append(basis[b] + 0.05 * rng.standard_normal((VAL_PER_BLOB, D)))
        val_blob += [b] * VAL_PER_BLOB
    ids = [f"v{b}-{i}" for b in range(N_BLOBS) for i in range(VAL_PER_BLOB)]
    return np.vstack(train), ids, np.vstack(val), val_blob


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, list[str], np.ndarray, list[int]]:
    return make_blobs()


@pytest.fixture(scope="module")
def fitted(blobs: tuple[np.ndarray, list[str], np.ndarray, list[int]]) -> Clustering:
    train, ids, val, _ = blobs
    return fit_clustering(train, ids, val, k=N_BLOBS, embedder_fingerprint=FINGERPRINT, seed=0)


def small_clustering(**overrides: object) -> Clustering:
    centroids = normalize_rows(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], dtype=float))
    fields: dict[str, object] = {
        "centroids": centroids,
        "embedder_fingerprint": "fp",
        "item_ids": ("a", "b", "c", "d"),
        "item_clusters": np.array([0, 1, 2, 2], dtype=np.int64),
    }
    fields.update(overrides)
    return Clustering(**fields)  # type: ignore[arg-type]


def assert_same_clustering(a: Clustering, b: Clustering) -> None:
    assert a.version == b.version
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.centroids.dtype == b.centroids.dtype == np.float32
    assert a.embedder_fingerprint == b.embedder_fingerprint
    assert a.item_ids == b.item_ids
    np.testing.assert_array_equal(a.item_clusters, b.item_clusters)
    assert a.item_clusters.dtype == b.item_clusters.dtype == np.int64


# ------------------------------------------------------------------------------- fitting


def test_fit_recovers_blobs(
    fitted: Clustering, blobs: tuple[np.ndarray, list[str], np.ndarray, list[int]]
) -> None:
    _, ids, _, val_blob = blobs
    assert fitted.k == N_BLOBS
    assert fitted.dim == D
    assert fitted.item_ids == tuple(ids)
    assert fitted.embedder_fingerprint == FINGERPRINT
    clusters_of_blob: dict[int, set[int]] = {}
    for blob, cluster in zip(val_blob, fitted.item_clusters.tolist(), strict=True):
        clusters_of_blob.setdefault(blob, set()).add(cluster)
    # Each blob lands in exactly one cluster ...
    assert all(len(s) == 1 for s in clusters_of_blob.values())
    # ... and different blobs land in different clusters.
    assert len({next(iter(s)) for s in clusters_of_blob.values()}) == N_BLOBS
    assert fitted.cluster_counts().tolist() == [VAL_PER_BLOB] * N_BLOBS


def test_fit_centroids_are_unit_float32_c_contiguous(fitted: Clustering) -> None:
    c = fitted.centroids
    assert c.dtype == np.float32
    assert c.shape == (N_BLOBS, D)
    assert c.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert fitted.item_clusters.dtype == np.int64


def test_fit_centroids_point_at_blob_directions(
    fitted: Clustering, blobs: tuple[np.ndarray, list[str], np.ndarray, list[int]]
) -> None:
    train, _, _, _ = blobs
    means = normalize_rows(
        np.stack([train[b * TRAIN_PER_BLOB : (b + 1) * TRAIN_PER_BLOB].mean(0) for b in range(3)])
    )
    sims = fitted.centroids @ means.T
    assert np.all(sims.max(axis=1) > 0.95)


def test_fit_info_is_recorded(blobs: tuple[np.ndarray, list[str], np.ndarray, list[int]]) -> None:
    train, ids, val, _ = blobs
    c = fit_clustering(
        train, ids, val, k=2, embedder_fingerprint=FINGERPRINT, seed=3, info={"note": "x"}
    )
    assert c.info["note"] == "x"
    assert c.info["seed"] == 3
    assert c.info["train_count"] == len(train)
    assert isinstance(c.info["created_time"], str)


def test_fit_is_deterministic(
    fitted: Clustering, blobs: tuple[np.ndarray, list[str], np.ndarray, list[int]]
) -> None:
    train, ids, val, _ = blobs
    again = fit_clustering(train, ids, val, k=N_BLOBS, embedder_fingerprint=FINGERPRINT, seed=0)
    assert_same_clustering(fitted, again)


def test_fit_k_one(blobs: tuple[np.ndarray, list[str], np.ndarray, list[int]]) -> None:
    train, ids, val, _ = blobs
    c = fit_clustering(train, ids, val, k=1, embedder_fingerprint=FINGERPRINT)
    assert c.k == 1
    assert set(c.item_clusters.tolist()) == {0}


@pytest.mark.parametrize("k", [0, -1])
def test_fit_rejects_bad_k(
    k: int, blobs: tuple[np.ndarray, list[str], np.ndarray, list[int]]
) -> None:
    train, ids, val, _ = blobs
    with pytest.raises(InvalidArgument, match="at least 1"):
        fit_clustering(train, ids, val, k=k, embedder_fingerprint=FINGERPRINT)


def test_fit_rejects_k_above_train_count() -> None:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((4, D))
    val = rng.standard_normal((2, D))
    with pytest.raises(InvalidArgument, match="k=5"):
        fit_clustering(train, ["a", "b"], val, k=5, embedder_fingerprint=FINGERPRINT)


def test_fit_rejects_duplicate_val_ids() -> None:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((10, D))
    val = rng.standard_normal((3, D))
    with pytest.raises(InvalidArgument, match="unique"):
        fit_clustering(train, ["a", "b", "a"], val, k=2, embedder_fingerprint=FINGERPRINT)


def test_fit_rejects_empty_val() -> None:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((10, D))
    with pytest.raises(InvalidArgument, match="empty"):
        fit_clustering(train, [], np.zeros((0, D)), k=2, embedder_fingerprint=FINGERPRINT)


@pytest.mark.parametrize("shape", [(3, D), (2, D + 1)])
def test_fit_rejects_mismatched_val_vectors(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((10, D))
    with pytest.raises(InvalidArgument, match="do not match"):
        fit_clustering(
            train, ["a", "b"], rng.standard_normal(shape), k=2, embedder_fingerprint=FINGERPRINT
        )


# ------------------------------------------------------------------------------ helpers


def test_normalize_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    out = normalize_rows(x)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], atol=1e-7)


def test_normalize_rows_makes_fortran_input_contiguous() -> None:
    x = np.asfortranarray(np.arange(1.0, 7.0).reshape(3, 2))
    assert normalize_rows(x).flags["C_CONTIGUOUS"]


def test_assign_nearest_by_dot_and_first_on_ties() -> None:
    centroids = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    vectors = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.6]], dtype=np.float32)
    out = assign(vectors, centroids)
    assert out.dtype == np.int64
    # Row 0 ties between centroid 0 and 2 -> 0; row 2 ties everywhere -> 0.
    assert out.tolist() == [0, 1, 0]


# ------------------------------------------------------------------------------ version


def test_version_is_deterministic_and_short_hex() -> None:
    a, b = small_clustering(), small_clustering()
    assert a.version == b.version
    assert len(a.version) == 20
    int(a.version, 16)
    assert a.version == a.compute_version()


def test_version_ignores_info() -> None:
    assert small_clustering(info={"x": 1}).version == small_clustering().version


def test_version_ignores_item_order() -> None:
    reordered = small_clustering(
        item_ids=("d", "c", "b", "a"), item_clusters=np.array([2, 2, 1, 0], dtype=np.int64)
    )
    assert reordered.version == small_clustering().version


def test_version_changes_with_centroids() -> None:
    base = small_clustering()
    nudged = base.centroids.copy()
    nudged[0, 1] += 1e-3
    assert small_clustering(centroids=nudged).version != base.version


def test_version_changes_with_centroid_shape() -> None:
    base = small_clustering()
    # Same bytes, different shape.
    reshaped = np.ascontiguousarray(base.centroids.reshape(4, 3))
    other = small_clustering(centroids=reshaped)
    assert other.version != base.version


def test_version_changes_with_fingerprint() -> None:
    assert small_clustering(embedder_fingerprint="fp2").version != small_clustering().version


def test_version_changes_with_assignment() -> None:
    moved = small_clustering(item_clusters=np.array([0, 1, 2, 1], dtype=np.int64))
    assert moved.version != small_clustering().version


def test_version_changes_with_item_ids() -> None:
    renamed = small_clustering(item_ids=("a", "b", "c", "e"))
    assert renamed.version != small_clustering().version


def test_explicit_version_is_kept() -> None:
    c = small_clustering(version="explicit")
    assert c.version == "explicit"
    assert c.compute_version() != "explicit"


def test_item_cluster_map_and_counts() -> None:
    c = small_clustering()
    assert c.item_cluster_map() == {"a": 0, "b": 1, "c": 2, "d": 2}
    assert all(type(v) is int for v in c.item_cluster_map().values())
    assert c.cluster_counts().tolist() == [1, 1, 2]
    empty_cluster = small_clustering(item_clusters=np.array([0, 0, 2, 2], dtype=np.int64))
    assert empty_cluster.cluster_counts().tolist() == [2, 0, 2]


# ---------------------------------------------------------------------------- artifacts


@pytest.fixture
def artifact(tmp_path: Path, fitted: Clustering) -> Path:
    out = tmp_path / "artifact"
    save_clustering(fitted, out)
    return out


def save_legacy(clustering: Clustering, out_dir: Path) -> None:
    """The two-file "uniroute.clustering/1" artifact, exactly as earlier versions wrote it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": LEGACY_FORMAT,
        "version": clustering.version,
        "k": clustering.k,
        "dim": clustering.dim,
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
    np.save(out_dir / CENTROIDS_NAME, clustering.centroids)
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def legacy(tmp_path: Path, fitted: Clustering) -> Path:
    out = tmp_path / "legacy"
    save_legacy(fitted, out)
    return out


def test_save_load_roundtrip(artifact: Path, fitted: Clustering) -> None:
    # One file, and no temporary files left behind by the atomic write.
    assert sorted(p.name for p in artifact.iterdir()) == [MANIFEST_NAME]
    assert (artifact / MANIFEST_NAME).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    loaded = load_clustering(artifact)
    assert_same_clustering(loaded, fitted)
    assert loaded.centroids.flags["C_CONTIGUOUS"]
    assert loaded.info == fitted.info


def test_manifest_contents(artifact: Path, fitted: Clustering) -> None:
    manifest = json.loads((artifact / MANIFEST_NAME).read_text())
    assert manifest["format"] == ARTIFACT_FORMAT == "uniroute.clustering/2"
    assert manifest["centroids"]["dtype"] == "<f4"
    assert manifest["centroids"]["shape"] == [N_BLOBS, D]
    data = base64.b64decode(manifest["centroids"]["base64"], validate=True)
    np.testing.assert_array_equal(
        np.frombuffer(data, dtype="<f4").reshape(N_BLOBS, D), fitted.centroids
    )
    assert manifest["version"] == fitted.version
    assert manifest["k"] == N_BLOBS
    assert manifest["dim"] == D
    assert manifest["validation"]["count"] == len(fitted.item_ids)
    assert manifest["validation"]["cluster_counts"] == fitted.cluster_counts().tolist()


def test_save_overwrites_existing_artifact(artifact: Path) -> None:
    other = small_clustering()
    save_clustering(other, artifact)
    assert_same_clustering(load_clustering(artifact), other)


def test_version_is_unchanged_by_the_artifact_format(tmp_path: Path) -> None:
    # Content-addressed: the same clustering has the version it had in format 1.
    c = small_clustering()
    assert c.version == "989ae31ee85bf3632db8"
    save_clustering(c, tmp_path / "new")
    save_legacy(c, tmp_path / "old")
    assert load_clustering(tmp_path / "new").version == c.version
    assert load_clustering(tmp_path / "old").version == c.version


def test_legacy_two_file_artifact_still_loads(legacy: Path, fitted: Clustering) -> None:
    assert json.loads((legacy / MANIFEST_NAME).read_text())["format"] == "uniroute.clustering/1"
    loaded = load_clustering(legacy)
    assert_same_clustering(loaded, fitted)
    assert loaded.info == fitted.info


def test_saving_over_a_legacy_artifact_leaves_one_file(legacy: Path, fitted: Clustering) -> None:
    save_clustering(fitted, legacy)
    assert sorted(p.name for p in legacy.iterdir()) == [MANIFEST_NAME]
    assert_same_clustering(load_clustering(legacy), fitted)


def test_shipped_starter_artifact_is_one_file_with_its_old_version() -> None:
    starter = Path(sidecar_clustering.__file__).parent / "data" / "starter"
    assert not (starter / CENTROIDS_NAME).exists()
    assert json.loads((starter / MANIFEST_NAME).read_text())["format"] == ARTIFACT_FORMAT
    clustering = load_clustering(starter)
    assert clustering.version == "4068ce5880ebd765feae"
    assert clustering.k == 12 and clustering.dim == 384


def test_a_concurrent_reader_never_sees_half_an_artifact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Two clusterings that differ in everything a reader could mix up.
    a = small_clustering(centroids=normalize_rows(rng.standard_normal((40, 64))))
    b = small_clustering(
        centroids=normalize_rows(rng.standard_normal((40, 64))),
        embedder_fingerprint="fp-b",
        item_clusters=np.array([3, 2, 1, 0], dtype=np.int64),
    )
    known = {a.version: a, b.version: b}
    out = tmp_path / "artifact"
    save_clustering(a, out)
    stop = threading.Event()
    failures: list[BaseException] = []
    loads = 0

    def read() -> None:
        nonlocal loads
        while not stop.is_set():
            try:
                got = load_clustering(out)
                assert_same_clustering(got, known[got.version])
                loads += 1
            except BaseException as exc:  # report whatever went wrong
                failures.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            save_clustering(b if i % 2 == 0 else a, out)
            if failures:
                break
    finally:
        stop.set()
        reader.join()
    assert not failures, failures[0]
    assert loads > 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]


def test_save_roundtrip_small(tmp_path: Path) -> None:
    c = small_clustering(info={"n": 1, "s": "x"})
    save_clustering(c, tmp_path / "a" / "b")
    loaded = load_clustering(tmp_path / "a" / "b")
    assert_same_clustering(loaded, c)
    assert loaded.info == {"n": 1, "s": "x"}


def _edit_manifest(artifact: Path, edit: object) -> None:
    path = artifact / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)  # type: ignore[operator]
    path.write_text(json.dumps(manifest))


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError):
        load_clustering(tmp_path / "nothing-here")


def test_load_missing_centroids(artifact: Path, legacy: Path) -> None:
    _edit_manifest(artifact, lambda m: m.pop("centroids"))
    with pytest.raises(ArtifactError, match="sidecar fit"):
        load_clustering(artifact)
    (legacy / CENTROIDS_NAME).unlink()
    with pytest.raises(ArtifactError, match="sidecar fit"):
        load_clustering(legacy)


def test_load_missing_manifest(artifact: Path) -> None:
    (artifact / MANIFEST_NAME).unlink()
    with pytest.raises(ArtifactError):
        load_clustering(artifact)


@pytest.mark.parametrize("text", ["{not json", "", "\x00\x01garbage"])
def test_load_garbage_json(artifact: Path, text: str) -> None:
    (artifact / MANIFEST_NAME).write_text(text)
    with pytest.raises(ArtifactError):
        load_clustering(artifact)


@pytest.mark.parametrize(
    "centroids",
    [
        {"dtype": "<f4", "shape": [N_BLOBS, D], "base64": "not base64!"},
        {"dtype": "<f4", "shape": [N_BLOBS, D], "base64": "AAAA"},  # 3 bytes, not K x D x 4
        {"dtype": "<f4", "shape": [N_BLOBS, D + 1]},
        {"dtype": "|O", "shape": [N_BLOBS, D]},  # never an object array
        {"dtype": "<f8", "shape": [N_BLOBS, D]},
        {"dtype": "<f4", "shape": "K x D"},
        [1.0, 2.0],
    ],
)
def test_load_garbage_centroids(artifact: Path, centroids: object) -> None:
    def edit(m: dict) -> None:
        if isinstance(centroids, dict):
            m["centroids"] = {**m["centroids"], **centroids}
        else:
            m["centroids"] = centroids

    _edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError):
        load_clustering(artifact)


def test_load_garbage_legacy_centroids(legacy: Path) -> None:
    (legacy / CENTROIDS_NAME).write_bytes(b"this is not an npy file at all")
    with pytest.raises(ArtifactError):
        load_clustering(legacy)


def test_load_pickled_centroids_rejected(legacy: Path) -> None:
    np.save(legacy / CENTROIDS_NAME, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError):
        load_clustering(legacy)


def test_load_edited_centroids(artifact: Path, legacy: Path, fitted: Clustering) -> None:
    edited = fitted.centroids.copy()
    edited[0, 0] += 0.01
    encoded = base64.b64encode(edited.astype("<f4").tobytes()).decode()
    _edit_manifest(artifact, lambda m: m["centroids"].__setitem__("base64", encoded))
    with pytest.raises(ArtifactError, match="does not match its version"):
        load_clustering(artifact)
    np.save(legacy / CENTROIDS_NAME, edited)
    with pytest.raises(ArtifactError, match="does not match its version"):
        load_clustering(legacy)


def test_load_edited_item_cluster(artifact: Path, fitted: Clustering) -> None:
    def edit(m: dict) -> None:
        first = m["validation"]["items"][0]
        first[1] = (first[1] + 1) % fitted.k  # still in range, but a different cluster

    _edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError, match="does not match its version"):
        load_clustering(artifact)


def test_load_edited_item_id(artifact: Path) -> None:
    def edit(m: dict) -> None:
        m["validation"]["items"][0][0] = "renamed"

    _edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError, match="does not match its version"):
        load_clustering(artifact)


def test_load_edited_fingerprint(artifact: Path) -> None:
    _edit_manifest(artifact, lambda m: m.__setitem__("embedder_fingerprint", "other"))
    with pytest.raises(ArtifactError, match="does not match its version"):
        load_clustering(artifact)


def test_load_edited_version(artifact: Path) -> None:
    _edit_manifest(artifact, lambda m: m.__setitem__("version", "0" * 20))
    with pytest.raises(ArtifactError, match="does not match its version"):
        load_clustering(artifact)


def test_load_missing_version(artifact: Path) -> None:
    _edit_manifest(artifact, lambda m: m.pop("version"))
    with pytest.raises(ArtifactError):
        load_clustering(artifact)


@pytest.mark.parametrize("bad_cluster", [N_BLOBS, 99, -1])
def test_load_cluster_index_out_of_range(artifact: Path, bad_cluster: int) -> None:
    def edit(m: dict) -> None:
        m["validation"]["items"][0][1] = bad_cluster

    _edit_manifest(artifact, edit)
    with pytest.raises(ArtifactError, match=r"outside \[0, K\)"):
        load_clustering(artifact)


@pytest.mark.parametrize("fmt", ["uniroute.clustering/3", "", None, 1])
def test_load_wrong_format(artifact: Path, fmt: object) -> None:
    _edit_manifest(artifact, lambda m: m.__setitem__("format", fmt))
    with pytest.raises(ArtifactError, match="unsupported format"):
        load_clustering(artifact)


def test_load_missing_format(artifact: Path) -> None:
    _edit_manifest(artifact, lambda m: m.pop("format"))
    with pytest.raises(ArtifactError, match="unsupported format"):
        load_clustering(artifact)


@pytest.mark.parametrize("key", ["validation", "embedder_fingerprint"])
def test_load_missing_key(artifact: Path, key: str) -> None:
    _edit_manifest(artifact, lambda m: m.pop(key))
    with pytest.raises(ArtifactError):
        load_clustering(artifact)


def test_load_malformed_items(artifact: Path) -> None:
    _edit_manifest(artifact, lambda m: m["validation"].__setitem__("items", [["a", 0, 1]]))
    with pytest.raises(ArtifactError):
        load_clustering(artifact)


def test_load_one_dimensional_centroids(artifact: Path, legacy: Path) -> None:
    ones = base64.b64encode(np.ones(D, dtype="<f4").tobytes()).decode()
    _edit_manifest(
        artifact,
        lambda m: m.__setitem__("centroids", {"dtype": "<f4", "shape": [D], "base64": ones}),
    )
    with pytest.raises(ArtifactError):
        load_clustering(artifact)
    np.save(legacy / CENTROIDS_NAME, np.ones(D, dtype=np.float32))
    with pytest.raises(ArtifactError):
        load_clustering(legacy)


def test_load_copy_elsewhere_still_valid(
    artifact: Path, tmp_path: Path, fitted: Clustering
) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(artifact, moved)
    assert load_clustering(moved).version == fitted.version


@pytest.mark.parametrize("text", ["[]", "42", '"text"', "null"])
def test_load_manifest_not_an_object(artifact: Path, text: str) -> None:
    (artifact / MANIFEST_NAME).write_text(text)
    with pytest.raises(ArtifactError):
        load_clustering(artifact)
