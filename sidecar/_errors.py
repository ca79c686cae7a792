"""The exception tree: every failure a caller can act on maps to one gRPC status.

Servicers translate these into status codes in one place, so plain modules never
import grpc just to report bad input.
"""

from __future__ import annotations

import grpc


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(SidecarError):
    """The request itself is malformed: fix the input and retry."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SidecarError):
    """A named model, item or clustering does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SidecarError):
    """A create would overwrite something; ask for an update explicitly."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SidecarError):
    """The system is not in a state that allows this call (e.g. no models yet)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Compacted(SidecarError):
    """The requested history is gone; the caller must resync from a snapshot."""

    code = grpc.StatusCode.OUT_OF_RANGE


class ArtifactError(SidecarError):
    """An on-disk artifact (embedder, clustering, database) is missing or corrupt.

    Raised at start-up so the process exits with a clear message instead of
    half-starting.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION
