"""The embedder artifact's manifest: where it lives, what it must hold, and its fingerprint.

The fingerprint hashes the source checkpoint's files and the recipe, never
the ONNX bytes, so every machine that exports the same checkpoint agrees on
it; clusterings record it and servers refuse a clustering from another one.
Shared by the exporter, which writes a manifest, and the runtime, which
checks one before loading anything.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._errors import ArtifactError
from ._truncation import TokenWindow

FORMAT = "uniroute.embedder/1"
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
ENV_DIR = "UNIROUTE_EMBEDDER_DIR"

# Everything that changes the embedding *function*, and nothing that doesn't
# (ONNX bytes, opset, library versions, timestamps), so re-exports on any machine
# from the same checkpoint reproduce the same fingerprint.
FINGERPRINT_KEYS = ("dim", "max_tokens", "truncation", "pooling", "normalize", "quantization")

REBUILD_HINT = "rebuild it with `sidecar export-embedder` (or `make embedder`)"


def default_embedder_dir() -> Path:
    """Where the embedder lives: $UNIROUTE_EMBEDDER_DIR, else <repo>/var/embedder.

    Relative to the package (not the CWD) so tests and the CLI agree from any directory.
    """
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "var" / "embedder"


def compute_fingerprint(manifest_fields: Mapping[str, Any]) -> str:
    """Hash the fields that define the embedding function (see FINGERPRINT_KEYS).

    Shared by the exporter (which writes it) and the runtime (which recomputes it to
    detect a hand-edited manifest). Takes a manifest, or any mapping holding
    ``source.files`` and FINGERPRINT_KEYS; extra keys are ignored.
    """
    payload = {
        "source_files": dict(manifest_fields["source"]["files"]),
        **{key: manifest_fields[key] for key in FINGERPRINT_KEYS},
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """Streamed sha256 so a 90 MB model never sits in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse and shape-check manifest.json, naming the file in every failure."""
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise ArtifactError(f"embedder directory {path} does not exist; {REBUILD_HINT}")
    try:
        raw = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError(f"{manifest_path} is missing; {REBUILD_HINT}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path} is unreadable ({exc}); {REBUILD_HINT}") from exc
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON ({exc}); {REBUILD_HINT}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path} must hold a JSON object; {REBUILD_HINT}")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(
            f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT!r}; {REBUILD_HINT}"
        )
    missing = [
        k for k in ("files", "fingerprint", "source", *FINGERPRINT_KEYS) if k not in manifest
    ]
    if missing:
        raise ArtifactError(f"{manifest_path} lacks {', '.join(missing)}; {REBUILD_HINT}")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(files.get(name), str) for name in (MODEL_FILE, TOKENIZER_FILE)
    ):
        raise ArtifactError(
            f"{manifest_path}: 'files' must map {MODEL_FILE} and {TOKENIZER_FILE} to sha256 hex; "
            f"{REBUILD_HINT}"
        )
    dim, max_tokens = manifest["dim"], manifest["max_tokens"]
    if not (isinstance(dim, int) and dim > 0 and isinstance(max_tokens, int) and max_tokens > 2):
        raise ArtifactError(
            f"{manifest_path}: bad dim {dim!r} or max_tokens {max_tokens!r}; {REBUILD_HINT}"
        )
    try:
        TokenWindow.parse(str(manifest["truncation"]), max_tokens)
    except ValueError as exc:
        raise ArtifactError(f"{manifest_path}: {exc}; {REBUILD_HINT}") from exc
    # The runtime implements exactly one pooling recipe; refuse anything else
    # rather than produce vectors the clustering was not built with.
    recipe = {"pooling": "mean", "normalize": True}
    for key, want in recipe.items():
        if manifest[key] != want:
            raise ArtifactError(
                f"{manifest_path}: {key}={manifest[key]!r} is unsupported (want {want!r}); "
                f"{REBUILD_HINT}"
            )
    return manifest


def verify_fingerprint(
    manifest: Mapping[str, Any], compute: Callable[[Mapping[str, Any]], str], where: Path
) -> None:
    """Fail unless ``manifest["fingerprint"]`` is what ``compute`` derives from its fields
    (each embedder kind has its own ``compute``; ``where`` is the manifest file)."""
    try:
        expected = compute(manifest)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"{where}: cannot compute fingerprint ({exc!r}); {REBUILD_HINT}"
        ) from exc
    if expected != manifest["fingerprint"]:
        raise ArtifactError(
            f"{where}: fingerprint {manifest['fingerprint']!r} does not match the manifest "
            f"fields (expected {expected!r}); the manifest was edited or is from another "
            f"export; {REBUILD_HINT}"
        )


def verify_file(path: Path, name: str, expected_sha: str) -> None:
    """Fail loudly if an artifact file is missing or differs from what the manifest recorded."""
    file_path = path / name
    try:
        actual = sha256_file(file_path)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{file_path} is missing; {REBUILD_HINT}") from exc
    except OSError as exc:
        raise ArtifactError(f"{file_path} is unreadable ({exc}); {REBUILD_HINT}") from exc
    if actual != expected_sha:
        raise ArtifactError(
            f"{file_path} is corrupt or replaced: sha256 {actual[:16]}... != manifest "
            f"{str(expected_sha)[:16]}...; {REBUILD_HINT}"
        )


class VerifiedArtifact:
    """What every embedder reports of the artifact it was loaded from and verified against."""

    def __init__(self, path: Path, manifest: Mapping[str, Any], dim: int) -> None:
        self._path = Path(path)
        self._manifest = dict(manifest)
        self._fingerprint = str(manifest["fingerprint"])
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy, so callers cannot mutate what the embedder was verified against."""
        return copy.deepcopy(self._manifest)

    @property
    def path(self) -> Path:
        return self._path
