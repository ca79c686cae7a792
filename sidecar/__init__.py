"""UniRoute routing sidecar: universal model routing for a dynamic pool of LLMs.

The public surface is what this module exports; everything in ``sidecar._*``
is private and may change.
"""

from ._clustering import Clustering, fit_clustering, load_clustering, save_clustering
from ._embedder import Embedder, default_embedder_dir
from ._errors import (
    AlreadyExists,
    ArtifactError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SidecarError,
)
from ._profiles import Profile, profile_from_rates, profile_from_results
from ._registry import ModelRecord, Registry, Snapshot
from ._router import Decision, Query, Router
from ._server import ServerConfig, Sidecar, serve
from ._table import RoutingTable, TableHolder

__all__ = [
    "AlreadyExists",
    "ArtifactError",
    "Clustering",
    "Decision",
    "Embedder",
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
    "TableHolder",
    "default_embedder_dir",
    "fit_clustering",
    "load_clustering",
    "profile_from_rates",
    "profile_from_results",
    "save_clustering",
    "serve",
]
