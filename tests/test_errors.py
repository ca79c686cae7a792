"""The exception tree: one documented root, a real gRPC status for every error."""

from __future__ import annotations

import ast
import inspect

import grpc

import sidecar
from sidecar import _errors


def tree() -> list[type[sidecar.SidecarError]]:
    classes = [
        obj
        for _, obj in inspect.getmembers(_errors, inspect.isclass)
        if obj.__module__ == _errors.__name__
    ]
    errors = [c for c in classes if issubclass(c, sidecar.SidecarError)]
    assert errors == classes, "every class in _errors belongs to the tree"
    return errors


def test_every_error_is_in_the_tree_with_a_real_status_code() -> None:
    for error in tree():
        assert issubclass(error, sidecar.SidecarError), error
        assert error.code in grpc.StatusCode.__members__, (error, error.code)
        assert error.__doc__, error


def test_every_error_is_public_and_documented_in_the_module() -> None:
    doc = _errors.__doc__ or ""
    for error in tree():
        assert error.__name__ in sidecar.__all__, error
        assert error.__name__ in doc, error
        assert error.code in doc, error


def test_refusing_another_embedders_clustering_is_failed_precondition() -> None:
    """The follower's refusal used to be a private error outside the tree, answered INTERNAL."""
    assert issubclass(sidecar.EmbedderMismatch, sidecar.ArtifactError)
    assert sidecar.EmbedderMismatch.code == "FAILED_PRECONDITION"


def test_the_tree_does_not_import_grpc() -> None:
    """So the routing core and the store can raise these without importing grpc."""
    tree = ast.parse(inspect.getsource(_errors))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert "grpc" not in imported
