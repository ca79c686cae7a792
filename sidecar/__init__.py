"""UniRoute routing sidecar: universal model routing for a dynamic pool of LLMs.

The public surface is what this module exports; everything in ``sidecar._*``
is private and may change. Heavy parts (onnxruntime, the Numba kernels,
scikit-learn) load on first use, so `sidecar route` and other client commands
start without paying for the server's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    AlreadyExists,
    ArtifactError,
    Compacted,
    EmbedderMismatch,
    EmbeddingFailed,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SidecarError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from ._clustering import Clustering, fit_clustering, load_clustering, save_clustering
    from ._embedder import Embedder
    from ._embedder_manifest import default_embedder_dir
    from ._profiles import Profile, profile_from_rates, profile_from_results
    from ._records import ModelRecord, Snapshot
    from ._registry import Registry
    from ._route_records import Decision, Query
    from ._router import Router
    from ._server import ServerConfig, Sidecar, build, serve
    from ._store import Store, open_store
    from ._table import RoutingTable, TableHolder

_LAZY = {
    "_clustering": ("Clustering", "fit_clustering", "load_clustering", "save_clustering"),
    "_embedder": ("Embedder",),
    "_embedder_manifest": ("default_embedder_dir",),
    "_profiles": ("Profile", "profile_from_rates", "profile_from_results"),
    "_records": ("ModelRecord", "Snapshot"),
    "_registry": ("Registry",),
    "_route_records": ("Decision", "Query"),
    "_router": ("Router",),
    "_server": ("ServerConfig", "Sidecar", "build", "serve"),
    "_store": ("Store", "open_store"),
    "_table": ("RoutingTable", "TableHolder"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'sidecar' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AlreadyExists",
    "ArtifactError",
    "Clustering",
    "Compacted",
    "Decision",
    "Embedder",
    "EmbedderMismatch",
    "EmbeddingFailed",
    "FailedPrecondition",
    "InvalidArgument",
    "ModelRecord",
    "NotFound",
    "Profile",
    "Query",
    "Registry",
    "Router",
    "RoutingTable",
    "ServerConfig",
    "Sidecar",
    "SidecarError",
    "Snapshot",
    "Store",
    "StoreUnavailable",
    "TableHolder",
    "build",
    "default_embedder_dir",
    "fit_clustering",
    "load_clustering",
    "open_store",
    "profile_from_rates",
    "profile_from_results",
    "save_clustering",
    "serve",
]
