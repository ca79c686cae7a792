"""Which embedder an artifact directory holds, and loading it.

Two kinds share one interface (``EmbedderLike``): the ONNX MiniLM
(``_embedder``, the default) and the static table distilled from it
(``_static_embedder``). The manifest says which; ``serve``, ``fit`` and the
benches pass a directory and get the right one. Each kind's module is imported
only when used, so a static server never loads onnxruntime's session code
paths it does not need, and an ONNX server never compiles the static kernels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._embedder_manifest import MANIFEST_FILE, REBUILD_HINT
from ._errors import ArtifactError, InvalidArgument

ONNX, STATIC = "onnx", "static"
KINDS = (ONNX, STATIC)


def embedder_kind(path: Path) -> str:
    """ "static" when the manifest says so, else "onnx" (whose manifests predate the field).

    A missing or unreadable manifest counts as "onnx": its loader then names the defect.
    """
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ONNX
    kind = manifest.get("kind", ONNX) if isinstance(manifest, dict) else ONNX
    if kind not in KINDS:
        raise ArtifactError(
            f"{Path(path) / MANIFEST_FILE}: unknown embedder kind {kind!r}; {REBUILD_HINT}"
        )
    return str(kind)


def load_embedder(path: Path, *, threads: int = 1, truncation: str | None = None) -> Any:
    """The embedder in ``path``, verified; ``truncation`` applies to the ONNX kind only."""
    path = Path(path)
    if embedder_kind(path) == STATIC:
        if truncation not in (None, "none"):
            raise InvalidArgument(
                f"--truncation {truncation} applies to the ONNX embedder; the static embedder "
                f"in {path} embeds the whole prompt"
            )
        from ._static_embedder import StaticEmbedder

        return StaticEmbedder.from_dir(path)
    from ._embedder import Embedder

    return Embedder.from_dir(path, threads=threads, truncation=truncation)
