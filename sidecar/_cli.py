"""The `sidecar` command: export-embedder, fit, serve, and gRPC clients for people and scripts.

The parser is built inside ``main()``, never at import time, and client
commands open their channel only when they run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from ._errors import InvalidArgument, SidecarError

DEFAULT_SERVER = "127.0.0.1:50051"
TRUNCATION_HELP = "long prompts keep their head, tail, or head_tail[:N] (first N + the end)"
EXIT_ERROR = 1
EXIT_USAGE = 2

log = logging.getLogger("sidecar")


# --------------------------------------------------------------------- progress


class ProgressBar:
    """A dependency-free progress bar on stderr; plain periodic lines when not a TTY."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1

    def update(self, done: int) -> None:
        fraction = min(done / self.total, 1.0)
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {done}/{self.total} ({rate:.0f}/s)"
        if self.tty:
            filled = int(fraction * 30)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {text}")
            if done >= self.total:
                self.stream.write("\n")
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.stream.write(text + "\n")
        self.stream.flush()


# --------------------------------------------------------------------- commands


def cmd_export_embedder(args: argparse.Namespace) -> int:
    from ._embedder import default_embedder_dir
    from ._export import export_embedder  # torch is needed only here

    out = args.out or default_embedder_dir()
    manifest = export_embedder(
        out,
        args.source,
        quantize=not args.no_quantize,
        max_tokens=args.max_tokens,
        min_cosine=args.min_cosine,
        **({"truncation": args.truncation} if args.truncation else {}),
    )
    probe = manifest["probe"]
    print(
        f"wrote {out}: dim={manifest['dim']} max_tokens={manifest['max_tokens']} "
        f"quantization={manifest['quantization']} probe mean cosine={probe['mean_cosine']:.4f} "
        f"fingerprint={manifest['fingerprint'][:16]}…"
    )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from ._clustering import fit_clustering, save_clustering
    from ._embedder import Embedder, default_embedder_dir
    from ._jsonl import read_items, read_prompts

    train = read_prompts(args.train)
    val_ids, val_prompts = read_items(args.val)
    embedder = Embedder.from_dir(
        args.embedder or default_embedder_dir(), threads=args.threads, truncation=args.truncation
    )
    # Train and val often overlap (or are the same file): embed each distinct prompt once.
    distinct = list(dict.fromkeys([*train, *val_prompts]))
    row_of = {prompt: row for row, prompt in enumerate(distinct)}
    embedded = _embed_with_progress(embedder, distinct, "embedding prompts")
    train_rows = [row_of[p] for p in train]
    val_rows = [row_of[p] for p in val_prompts]
    clustering = fit_clustering(
        embedded.vectors[train_rows],
        val_ids,
        embedded.vectors[val_rows],
        k=args.k,
        embedder_fingerprint=embedder.fingerprint,
        seed=args.seed,
        info={"train_file": args.train.name, "val_file": args.val.name},
    )
    save_clustering(clustering, args.out)
    counts = clustering.cluster_counts()
    print(
        f"wrote {args.out}: version={clustering.version} k={clustering.k} "
        f"train={len(train)} val={len(val_ids)} "
        f"distinct prompts={len(distinct)} truncated={int(embedded.truncated.sum())}"
    )
    print(f"validation items per cluster: {counts.tolist()}")
    empty = [i for i, n in enumerate(counts) if n == 0]
    if empty:
        print(
            f"warning: cluster(s) {empty} have no validation items; models will get their "
            "overall error there. Add validation items or lower -k.",
            file=sys.stderr,
        )
    return 0


def _embed_with_progress(embedder: Any, texts: Sequence[str], label: str) -> Any:
    bar = ProgressBar(len(texts), label)
    return embedder.embed_batch(texts, progress=bar.update)


def cmd_serve(args: argparse.Namespace) -> int:
    from ._server import ServerConfig, serve

    db = args.db or Path("var/follower.db" if args.follow else "var/registry.db")
    security = _serve_security(args)
    config = ServerConfig(
        listen=args.listen,
        db_path=db,
        artifact_dir=args.artifact,
        embedder_dir=args.embedder,
        cost_weight=args.cost_weight,
        max_workers=args.workers,
        embedder_threads=args.threads,
        truncation=args.truncation,
        embedding_cache=args.embedding_cache,
        batch_max_size=args.batch_max_size,
        batch_max_wait_ms=args.batch_max_wait_ms,
        follow=args.follow,
        history=args.history,
        progress_interval=args.progress_interval,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_prompt_bytes=args.max_prompt_bytes,
        metrics_listen=args.metrics_listen,
        log_prompts=args.log_prompts,
        **security,
    )
    # The Route path hands the GIL between gRPC's threads and the worker around every
    # onnxruntime run; a 0.2 ms switch interval (default 5 ms) measured ~0.3 ms off a
    # Route on these machines. It is process-wide, so it is set here, not in serve().
    sys.setswitchinterval(args.gil_switch_interval)
    sidecar = serve(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    table = sidecar.tables.current
    role = f"follower of {args.follow}" if args.follow else "leader"
    print(
        f"sidecar serving on {args.listen} (port {sidecar.port}) as {role}; "
        f"db={db} clustering={table.clustering_version if table else '-'} "
        f"models={table.size if table else 0}",
        flush=True,
    )
    if config.write_tokens and not args.follow:
        print(f"writes require a bearer token ({len(config.write_tokens)} configured)", flush=True)
    elif not args.follow:
        print(
            "warning: writes (RegisterModel, DeregisterModel, ActivateClustering) are open to "
            "anyone who can reach this port; keep it on loopback, or require a bearer token: "
            "put tokens (one a line, 16+ characters, e.g. from `openssl rand -hex 32`) in a file "
            "and pass --write-tokens-file PATH, or set UNIROUTE_WRITE_TOKENS=TOKEN1,TOKEN2.",
            file=sys.stderr,
            flush=True,
        )
    if config.read_tokens:
        print(
            f"reads require a bearer token ({len(config.read_tokens)} read and "
            f"{len(config.write_tokens)} write token(s) configured)",
            flush=True,
        )
    tokens = config.write_tokens or config.read_tokens
    if tokens and config.tls_cert is None and not _local_address(args.listen):
        print(
            f"warning: bearer tokens reach {args.listen} in clear text; add --tls-cert and "
            "--tls-key, or listen on loopback or a unix:// socket.",
            file=sys.stderr,
            flush=True,
        )
    stop.wait()
    sidecar.stop(grace=args.grace)
    return 0


def _serve_security(args: argparse.Namespace) -> dict[str, Any]:
    """ServerConfig's security fields from serve's flags and environment; tokens never from argv."""
    from ._auth import LEADER_TOKEN_ENV, READ_TOKENS_ENV, WRITE_TOKENS_ENV, load_token, load_tokens

    leader_token = None
    if args.follow or args.leader_token_file is not None:
        leader_token = load_token(args.leader_token_file, LEADER_TOKEN_ENV, "--leader-token-file")
    write = load_tokens(args.write_tokens_file, WRITE_TOKENS_ENV, "--write-tokens-file")
    read = load_tokens(args.read_tokens_file, READ_TOKENS_ENV, "--read-tokens-file")
    return {
        "write_tokens": write,
        "read_tokens": read,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
        "leader_token": leader_token,
        "leader_ca": args.leader_ca,
        "leader_cert": args.leader_cert,
        "leader_key": args.leader_key,
    }


def _local_address(listen: str) -> bool:
    """True for unix sockets and loopback addresses, where plaintext never leaves the host."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _stubs(args: argparse.Namespace) -> tuple[grpc.Channel, Any, Any]:
    """A channel with TLS (--ca/--cert/--key) and a bearer token (--token-file, $UNIROUTE_TOKEN)."""
    from uniroute.v1 import registry_pb2_grpc, router_pb2_grpc

    from ._auth import CLIENT_TOKEN_ENV, BearerToken, load_token
    from ._tls import channel_credentials

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
    from uniroute.v1 import registry_pb2

    from ._jsonl import read_results

    request = registry_pb2.RegisterModelRequest(
        name=args.name,
        cost=args.cost,
        description=args.description,
        labels=_labels(args.label),
        allow_update=args.update,
    )
    if args.results is not None:
        results = read_results(args.results)
        request.results.results.extend(
            registry_pb2.ValidationResult(item_id=i, score=s) for i, s in results
        )
    else:
        request.profile.error_rates.extend(_floats(args.profile, "--profile"))
    channel, _, registry = _stubs(args)
    with channel:
        model = registry.RegisterModel(request, timeout=args.timeout)
    if args.json:
        _print_json(model)
    else:
        print(
            f"registered {model.name} at revision {model.revision}: cost={model.cost:g} "
            f"overall_error={model.overall_error:.3f} items={model.result_count} "
            f"K={len(model.error_rates)}"
        )
    return 0


def cmd_deregister(args: argparse.Namespace) -> int:
    from uniroute.v1 import registry_pb2

    channel, _, registry = _stubs(args)
    with channel:
        response = registry.DeregisterModel(
            registry_pb2.DeregisterModelRequest(name=args.name), timeout=args.timeout
        )
    print(f"deregistered {args.name} at revision {response.revision}")
    return 0


def cmd_activate_clustering(args: argparse.Namespace) -> int:
    from uniroute.v1 import registry_pb2

    from ._clustering import load_clustering
    from ._wire import clustering_spec

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
    from uniroute.v1 import registry_pb2

    channel, _, registry = _stubs(args)
    with channel:
        status = registry.GetStatus(registry_pb2.GetStatusRequest(), timeout=args.timeout)
    if args.json:
        _print_json(status)
        return 0
    role = registry_pb2.Role.Name(status.role).removeprefix("ROLE_").lower()
    print(
        f"{role}: revision {status.revision}, clustering {status.clustering_version or '-'}, "
        f"{status.models} model(s)"
    )
    if status.role == registry_pb2.ROLE_FOLLOWER:
        contact = status.seconds_since_leader_contact
        print(
            f"leader {status.leader}: {'connected' if status.connected else 'disconnected'}, "
            f"last contact {'never' if contact < 0 else f'{contact:.1f}s ago'}, "
            f"{status.reconnects} reconnect(s), {status.snapshots_applied} snapshot(s), "
            f"{status.change_sets_applied} change set(s)"
        )
        if status.last_error:
            print(f"last error: {status.last_error}")
    else:
        print(f"{status.watchers} watcher(s), compacted up to revision {status.compact_revision}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from uniroute.v1 import router_pb2

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
    from uniroute.v1 import registry_pb2

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


# ---------------------------------------------------------------------- helpers


def _labels(pairs: Sequence[str]) -> dict[str, str]:
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


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# ----------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="UniRoute routing sidecar: send each prompt to the cheapest LLM likely to "
        "get it right.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def client_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", default=DEFAULT_SERVER, help="sidecar address HOST:PORT")
        p.add_argument("--timeout", type=float, default=30.0, help="RPC deadline in seconds")
        p.add_argument("--json", action="store_true", help="print the raw response as JSON")
        p.add_argument(
            "--token-file",
            type=Path,
            default=None,
            help="file holding the bearer token to send (default: $UNIROUTE_TOKEN, if set)",
        )
        p.add_argument("--ca", type=Path, default=None, help="PEM CA bundle: use TLS, verify")
        p.add_argument("--cert", type=Path, default=None, help="PEM client certificate (mTLS)")
        p.add_argument("--key", type=Path, default=None, help="PEM key for --cert")

    p = sub.add_parser("export-embedder", help="export a sentence-transformers model to ONNX")
    p.add_argument("--out", type=Path, default=None, help="output dir (default var/embedder)")
    p.add_argument("--source", type=Path, default=None, help="checkpoint dir (default MiniLM)")
    p.add_argument("--no-quantize", action="store_true", help="keep fp32 weights")
    p.add_argument("--truncation", default=None, help=TRUNCATION_HELP + " (default: head_tail:64)")
    p.add_argument("--max-tokens", type=int, default=256, help="truncation length")
    p.add_argument("--min-cosine", type=float, default=0.99, help="probe check threshold")
    p.set_defaults(func=cmd_export_embedder)

    p = sub.add_parser("fit", help="fit a clustering on training prompts, assign S_val")
    p.add_argument("--train", type=Path, required=True, help="JSONL with a `prompt` per line")
    p.add_argument("--val", type=Path, required=True, help="JSONL with `id` and `prompt`")
    p.add_argument("-k", type=int, required=True, help="number of clusters K")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.add_argument("--seed", type=int, default=0, help="K-means random seed")
    p.add_argument("--embedder", type=Path, default=None, help="embedder dir")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    p.add_argument("--truncation", default=None, help=TRUNCATION_HELP + " (default: manifest)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("serve", help="serve the Router and Registry gRPC API")
    p.add_argument(
        "--listen", default=DEFAULT_SERVER, help="address to bind: HOST:PORT or unix:///PATH"
    )
    p.add_argument(
        "--db",
        type=Path,
        default=None,
        help="SQLite file (default var/registry.db, or var/follower.db with --follow)",
    )
    p.add_argument("--follow", metavar="HOST:PORT", default=None, help="follow this leader")
    p.add_argument(
        "--embedding-cache", type=int, default=0, help="LRU entries for repeated prompts (0: off)"
    )
    p.add_argument(
        "--batch-max-size", type=int, default=0, help="micro-batch concurrent Routes (0: off)"
    )
    p.add_argument(
        "--batch-max-wait-ms", type=float, default=0.0, help="max wait for a batch to fill"
    )
    p.add_argument("--history", type=int, default=10_000, help="revisions kept for Watch")
    p.add_argument(
        "--grace", type=float, default=5.0, help="seconds in-flight calls get on SIGTERM"
    )
    p.add_argument(
        "--gil-switch-interval", type=float, default=0.0002, help="sys.setswitchinterval seconds"
    )
    p.add_argument(
        "--metrics-listen", metavar="HOST:PORT", default=None, help="serve Prometheus /metrics"
    )
    p.add_argument(
        "--max-concurrent-rpcs", type=int, default=256, help="beyond: RESOURCE_EXHAUSTED"
    )
    p.add_argument(
        "--max-prompt-bytes", type=int, default=256 * 1024, help="longer prompts are refused"
    )
    p.add_argument(
        "--log-prompts", action="store_true", help="debug: include prompts in -v route logs"
    )
    p.add_argument("--progress-interval", type=float, default=2.0, help="Watch heartbeat seconds")
    p.add_argument("--artifact", type=Path, default=None, help="clustering dir to activate")
    p.add_argument("--embedder", type=Path, default=None, help="embedder dir")
    p.add_argument("--cost-weight", type=_nonnegative_float, default=0.0, help="default λ")
    p.add_argument("--workers", type=int, default=16, help="gRPC worker threads")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per call")
    p.add_argument("--truncation", default=None, help=TRUNCATION_HELP + " (default: manifest)")
    security = p.add_argument_group(
        "security", "tokens come from files or the environment, never from a flag's value"
    )
    security.add_argument(
        "--write-tokens-file",
        type=Path,
        default=None,
        help="tokens (one a line) that unlock writes; also $UNIROUTE_WRITE_TOKENS (a,b)",
    )
    security.add_argument(
        "--read-tokens-file",
        type=Path,
        default=None,
        help="tokens that unlock Route and reads; also $UNIROUTE_READ_TOKENS (default: open)",
    )
    security.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain")
    security.add_argument("--tls-key", type=Path, default=None, help="PEM private key")
    security.add_argument(
        "--tls-client-ca", type=Path, default=None, help="require client certs from this CA (mTLS)"
    )
    security.add_argument(
        "--leader-token-file",
        type=Path,
        default=None,
        help="token a follower sends to its leader; also $UNIROUTE_LEADER_TOKEN",
    )
    security.add_argument("--leader-ca", type=Path, default=None, help="CA to verify the leader")
    security.add_argument("--leader-cert", type=Path, default=None, help="client cert (mTLS)")
    security.add_argument("--leader-key", type=Path, default=None, help="key for --leader-cert")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("register", help="register a model from graded validation results")
    client_flags(p)
    p.add_argument("--name", required=True, help="model name as the caller's LLM client uses")
    p.add_argument("--cost", type=float, required=True, help="cost per request")
    evidence = p.add_mutually_exclusive_group(required=True)
    evidence.add_argument("--results", type=Path, help="JSONL of {id, correct|score}")
    evidence.add_argument("--profile", help="explicit error rates, comma-separated, K values")
    p.add_argument("--description", default="", help="free-form description")
    p.add_argument("--label", action="append", default=[], help="key=value (repeatable)")
    p.add_argument("--update", action="store_true", help="replace an existing model")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("activate-clustering", help="activate a clustering on the leader")
    client_flags(p)
    p.add_argument("--artifact", type=Path, required=True, help="clustering dir from `fit`")
    p.set_defaults(func=cmd_activate_clustering)

    p = sub.add_parser("status", help="role and replication state of a sidecar")
    client_flags(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("deregister", help="remove a model from the pool")
    client_flags(p)
    p.add_argument("--name", required=True)
    p.set_defaults(func=cmd_deregister)

    p = sub.add_parser("route", help="ask which model should answer a prompt")
    client_flags(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--cost-weight", type=float, default=None, help="λ (default: server's)")
    p.add_argument("--candidates", default="", help="comma-separated model names")
    p.add_argument("--request-id", default="", help="echoed back for correlation")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("models", help="list registered models (or show one with --name)")
    client_flags(p)
    p.add_argument("--name", default="", help="show just this model")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Third-party libraries (onnxruntime's quantiser above all) log chatty INFO
    # lines on the root logger; only the sidecar's own loggers speak at INFO.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except SidecarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InvalidArgument) else EXIT_ERROR
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            details = f"cannot reach a sidecar at {getattr(args, 'server', '?')} ({details})"
        print(f"error: {code.name if code else 'RPC'}: {details}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
