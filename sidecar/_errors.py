"""The exception tree: every failure the sidecar raises on purpose, each with its gRPC status.

Plain modules raise these and never import grpc; the servicers translate
``code`` (the name of a ``grpc.StatusCode``) into the call's status in one
place, and the CLI turns them into an error line and an exit code.

    SidecarError                      INTERNAL
    ├── InvalidArgument               INVALID_ARGUMENT
    ├── NotFound                      NOT_FOUND
    ├── AlreadyExists                 ALREADY_EXISTS
    ├── FailedPrecondition            FAILED_PRECONDITION
    │   └── ArtifactError             FAILED_PRECONDITION
    │       └── EmbedderMismatch      FAILED_PRECONDITION
    ├── Compacted                     OUT_OF_RANGE
    ├── StoreUnavailable              UNAVAILABLE
    └── EmbeddingFailed               INTERNAL
"""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""

    #: The name of the grpc.StatusCode a servicer answers with.
    code: str = "INTERNAL"


class InvalidArgument(SidecarError):
    """The request itself is malformed: fix the input and retry."""

    code = "INVALID_ARGUMENT"


class NotFound(SidecarError):
    """A named model, item or clustering does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(SidecarError):
    """A create would overwrite something; ask for an update explicitly."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(SidecarError):
    """The system is not in a state that allows this call (e.g. no models yet)."""

    code = "FAILED_PRECONDITION"


class ArtifactError(FailedPrecondition):
    """An on-disk artifact (embedder, clustering, database) is missing, corrupt or unusable.

    Raised at start-up so the process exits with a clear message instead of
    half-starting.
    """


class EmbedderMismatch(ArtifactError):
    """A clustering was fitted with another embedder than this sidecar's.

    Its centroids would be meaningless for this embedder's vectors, so it is
    refused: at start-up, in ActivateClustering, and by a follower receiving it.
    """


class Compacted(SidecarError):
    """The requested history is gone; the caller must resync from a snapshot."""

    code = "OUT_OF_RANGE"


class StoreUnavailable(SidecarError):
    """The registry database cannot be reached (PostgreSQL down, restarting, unreachable).

    Retry later. A write refused with it was not acknowledged; one cut off while
    committing may or may not have been applied, so read before writing again.
    Routing goes on from the table in memory meanwhile.
    """

    code = "UNAVAILABLE"


class EmbeddingFailed(SidecarError):
    """The embedder returned an unusable vector (NaN or infinite); a bug or a broken model."""
