"""Client commands (register, route, models, ...): one RPC each, over a channel opened late.

Nothing here imports the server stack (onnxruntime, Numba, scikit-learn), so
a client command starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from .._errors import InvalidArgument

if TYPE_CHECKING:
    from .._profiles import Assignment


def _stubs(args: argparse.Namespace) -> tuple[grpc.Channel, Any, Any]:
    """A channel with TLS (--ca/--cert/--key) and a bearer token (--token-file, $UNIROUTE_TOKEN)."""
    from .._auth import CLIENT_TOKEN_ENV, BearerToken, load_token
    from .._proto import registry_pb2_grpc, router_pb2_grpc
    from .._tls import channel_credentials

    credentials = channel_credentials(args.ca, args.cert, args.key)
    token = load_token(args.token_file, CLIENT_TOKEN_ENV, "--token-file")
    channel = (
        grpc.secure_channel(args.server, credentials)
        if credentials is not None
        else grpc.insecure_channel(args.server)
    )
    if token is not None:
        channel = grpc.intercept_channel(channel, BearerToken(token))
    return channel, router_pb2_grpc.RouterStub(channel), registry_pb2_grpc.RegistryStub(channel)


def cmd_register(args: argparse.Namespace) -> int:
    from .._jsonl import read_results

    model = register_model(
        args,
        name=args.name,
        cost=args.cost,
        results=read_results(args.results) if args.results is not None else None,
        profile=_floats(args.profile, "--profile") if args.results is None else None,
        description=args.description,
        labels=labels_from_flags(args.label),
        update=args.update,
    )
    if args.json:
        _print_json(model)
    else:
        print_registered(model)
    return 0


def register_model(
    args: argparse.Namespace,
    *,
    name: str,
    cost: float,
    results: Sequence[tuple[str, float]] | None = None,
    profile: Sequence[float] | None = None,
    description: str = "",
    labels: Mapping[str, str] | None = None,
    update: bool = False,
) -> Any:
    """One RegisterModel call on args.server (register and evaluate --register share it)."""
    from .._proto import registry_pb2

    request = registry_pb2.RegisterModelRequest(
        name=name,
        cost=cost,
        description=description,
        labels=dict(labels or {}),
        allow_update=update,
    )
    if results is not None:
        request.results.results.extend(
            registry_pb2.ValidationResult(item_id=i, score=s) for i, s in results
        )
    else:
        request.profile.error_rates.extend(profile or ())
    channel, _, registry = _stubs(args)
    with channel:
        return registry.RegisterModel(request, timeout=args.timeout)


def print_registered(model: Any) -> None:
    print(
        f"registered {model.name} at revision {model.revision}: cost={model.cost:g} "
        f"overall_error={model.overall_error:.3f} items={model.result_count} "
        f"K={len(model.error_rates)}"
    )


def clustering_assignment(args: argparse.Namespace) -> tuple[str, int, Assignment]:
    """(version, K, the items' clusters and soft weights) of the active clustering."""
    import numpy as np

    from .._profiles import Assignment
    from .._proto import registry_pb2

    channel, _, registry = _stubs(args)
    with channel:
        clustering = registry.GetClustering(
            registry_pb2.GetClusteringRequest(include_assignment=True), timeout=args.timeout
        )
    ids = list(clustering.validation_item_ids)
    clusters = dict(zip(ids, clustering.validation_clusters, strict=True))
    if clustering.map_kind != registry_pb2.MAP_KIND_LEARNED:
        return clustering.version, clustering.k, Assignment(clustering.k, clusters)
    weights = np.frombuffer(clustering.validation_weights, dtype="<f4").reshape(-1, clustering.k)
    rows = {item: row for row, item in enumerate(ids)}
    return clustering.version, clustering.k, Assignment(clustering.k, clusters, weights, rows)


def model_exists(args: argparse.Namespace, name: str) -> bool:
    from .._proto import registry_pb2

    channel, _, registry = _stubs(args)
    with channel:
        try:
            registry.GetModel(registry_pb2.GetModelRequest(name=name), timeout=args.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
    return True


def cmd_deregister(args: argparse.Namespace) -> int:
    from .._proto import registry_pb2

    channel, _, registry = _stubs(args)
    with channel:
        response = registry.DeregisterModel(
            registry_pb2.DeregisterModelRequest(name=args.name), timeout=args.timeout
        )
    print(f"deregistered {args.name} at revision {response.revision}")
    return 0


def cmd_activate_clustering(args: argparse.Namespace) -> int:
    from .._clustering import load_clustering
    from .._proto import registry_pb2
    from .._wire import clustering_spec

    spec = clustering_spec(load_clustering(args.artifact))
    channel, _, registry = _stubs(args)
    with channel:
        clustering = registry.ActivateClustering(
            registry_pb2.ActivateClusteringRequest(clustering=spec), timeout=args.timeout
        )
    if args.json:
        _print_json(clustering)
    else:
        print(
            f"active clustering {clustering.version} (K={clustering.k}) since revision "
            f"{clustering.revision}"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .._proto import registry_pb2

    channel, _, registry = _stubs(args)
    with channel:
        status = registry.GetStatus(registry_pb2.GetStatusRequest(), timeout=args.timeout)
    if args.json:
        _print_json(status)
        return 0
    role = registry_pb2.Role.Name(status.role).removeprefix("ROLE_").lower()
    print(
        f"{role}: revision {status.revision}, clustering {status.clustering_version or '-'}, "
        f"{status.model_count} model(s)"
    )
    if status.role == registry_pb2.ROLE_FOLLOWER:
        contact = (
            f"{status.since_leader_contact.ToTimedelta().total_seconds():.1f}s ago"
            if status.HasField("since_leader_contact")
            else "never"
        )
        print(
            f"leader {status.leader}: {'connected' if status.connected else 'disconnected'}, "
            f"last contact {contact}, {status.reconnect_count} reconnect(s), "
            f"{status.applied_snapshot_count} snapshot(s), "
            f"{status.applied_change_set_count} change set(s)"
        )
        if status.last_error:
            print(f"last error: {status.last_error}")
    else:
        print(
            f"{status.watcher_count} watcher(s), compacted up to revision {status.compact_revision}"
        )
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from .._proto import router_pb2

    request = router_pb2.RouteRequest(
        prompt=args.prompt,
        candidate_models=_names(args.candidates),
        request_id=args.request_id,
    )
    if args.cost_weight is not None:
        request.cost_weight = args.cost_weight
    channel, router, _ = _stubs(args)
    with channel:
        response = router.Route(request, timeout=args.timeout)
    if args.json:
        _print_json(response)
        return 0
    print(
        f"{response.model}  (cluster {response.cluster}, λ={response.cost_weight:g}, "
        f"revision {response.revision}{', truncated' if response.truncated else ''})"
    )
    for score in sorted(response.scores, key=lambda s: s.score):
        marker = "*" if score.model == response.model else " "
        print(
            f" {marker} {score.model:<40} error={score.expected_error:.3f} "
            f"cost={score.cost:<10g} score={score.score:.4f}"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .._proto import registry_pb2

    channel, _, registry = _stubs(args)
    models = []
    with channel:
        if args.name:
            models.append(
                registry.GetModel(
                    registry_pb2.GetModelRequest(name=args.name), timeout=args.timeout
                )
            )
        else:
            token = ""
            while True:
                page = registry.ListModels(
                    registry_pb2.ListModelsRequest(page_token=token), timeout=args.timeout
                )
                models.extend(page.models)
                token = page.next_page_token
                if not token:
                    break
    if args.json:
        print(json.dumps([_as_dict(m) for m in models], indent=1))
        return 0
    if not models:
        print("no models registered")
    for m in models:
        rates = " ".join(f"{r:.2f}" for r in m.error_rates)
        print(
            f"{m.name:<40} cost={m.cost:<10g} overall_error={m.overall_error:.3f} "
            f"items={m.result_count:<5} rev={m.revision}  Ψ=[{rates}]"
        )
    return 0


def labels_from_flags(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--label must look like key=value, got {pair!r}")
        labels[key] = value
    return labels


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InvalidArgument(f"{flag} must be comma-separated numbers") from exc
    if not all(math.isfinite(v) for v in values):
        raise InvalidArgument(f"{flag} values must be finite")
    return values


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _print_json(message: Any) -> None:
    print(json.dumps(_as_dict(message), indent=1))
