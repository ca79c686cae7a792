"""The deferral-curve metric, re-exported from the product's ``sidecar._deferral``.

``sidecar fit -k auto`` chooses K by this Area, so the implementation lives in
the product and the bench uses the same one.
"""

from __future__ import annotations

from sidecar._deferral import (
    LAMBDAS,
    curve,
    deferral_points,
    hull_area,
    knn_expected_error,
    qnc,
    route_sweep,
    single_model_points,
    upper_hull,
)

__all__ = [
    "LAMBDAS",
    "curve",
    "deferral_points",
    "hull_area",
    "knn_expected_error",
    "qnc",
    "route_sweep",
    "single_model_points",
    "upper_hull",
]
