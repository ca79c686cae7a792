"""Every flag of every `sidecar` command, in one place; the commands live beside it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ._build import cmd_export_embedder, cmd_fit
from ._client import (
    cmd_activate_clustering,
    cmd_deregister,
    cmd_models,
    cmd_register,
    cmd_route,
    cmd_status,
)
from ._evaluate import cmd_evaluate
from ._mesh import cmd_envoy_config
from ._serve import cmd_serve

DEFAULT_SERVER = "127.0.0.1:50051"
TRUNCATION_HELP = "long prompts keep their head, tail, or head_tail[:N] (first N + the end)"


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _k_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or `auto`, got {text}")
    return value


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

    p = sub.add_parser(
        "export-embedder",
        help="export MiniLM to ONNX (default), or distil the static embedder (--kind static)",
    )
    p.add_argument(
        "--kind",
        choices=("onnx", "static"),
        default="onnx",
        help="onnx: int8 MiniLM (var/embedder); static: a token table distilled from it, "
        "microseconds per prompt (var/embedder-static)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output dir (default var/embedder[-static])"
    )
    p.add_argument("--pca-dims", type=int, default=None, help="static: table width (128)")
    p.add_argument("--weighting", default=None, help="static: none or sif:A (sif:1e-4)")
    p.add_argument("--source", type=Path, default=None, help="checkpoint dir (default MiniLM)")
    p.add_argument("--no-quantize", action="store_true", help="keep fp32 weights")
    p.add_argument("--truncation", default=None, help=TRUNCATION_HELP + " (default: head_tail:64)")
    p.add_argument("--max-tokens", type=int, default=256, help="truncation length")
    p.add_argument("--min-cosine", type=float, default=0.99, help="probe check threshold")
    p.set_defaults(func=cmd_export_embedder)

    p = sub.add_parser("fit", help="fit a clustering on training prompts, assign S_val")
    p.add_argument("--train", type=Path, required=True, help="JSONL with a `prompt` per line")
    p.add_argument("--val", type=Path, required=True, help="JSONL with `id` and `prompt`")
    p.add_argument(
        "-k",
        type=_k_value,
        required=True,
        help="number of clusters K, or `auto`: cross-validation with --train-results "
        "(held-out LLMs, deferral-curve Area), else round(sqrt(n_val / 10))",
    )
    p.add_argument(
        "--map",
        choices=("kmeans", "learned"),
        default="kmeans",
        help="kmeans (nearest centroid) or learned (LearnedMap, needs --train-results)",
    )
    p.add_argument(
        "--train-results",
        type=Path,
        default=None,
        help="dir of `register --results` files, one per training LLM (name = file name), "
        "graded on the --train prompts (which then need `id`s)",
    )
    p.add_argument(
        "--train-costs",
        type=Path,
        default=None,
        help="-k auto: TSV `name<TAB>cost` per training LLM (default: costs.tsv in or above "
        "--train-results)",
    )
    p.add_argument("--l2", type=_nonnegative_float, default=None, help="LearnedMap L2 penalty")
    p.add_argument("--cv-reps", type=int, default=2, help="-k auto: cross-validation repetitions")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.add_argument("--seed", type=int, default=0, help="K-means random seed")
    p.add_argument(
        "--embedder",
        type=Path,
        default=None,
        help="embedder dir, either kind (default var/embedder; var/embedder-static for the "
        "static one)",
    )
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads")
    p.add_argument("--truncation", default=None, help=TRUNCATION_HELP + " (default: manifest)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("serve", help="serve the Router and Registry gRPC API")
    p.add_argument(
        "--listen", default=DEFAULT_SERVER, help="address to bind: HOST:PORT or unix:///PATH"
    )
    p.add_argument(
        "--db",
        default=None,
        help="SQLite file or sqlite:///PATH (default var/registry.db, or var/follower.db with "
        "--follow), or postgresql://USER@HOST:PORT/DBNAME: a registry replica sharing that "
        "database with other replicas",
    )
    p.add_argument(
        "--follow",
        metavar="HOST:PORT[,HOST:PORT...]",
        default=None,
        help="follow a leader; with several (replicas of one PostgreSQL registry), fail over "
        "between them",
    )
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
    p.add_argument(
        "--embedder",
        type=Path,
        default=None,
        help="embedder dir, either kind (default var/embedder; var/embedder-static for the "
        "static one)",
    )
    p.add_argument("--cost-weight", type=_nonnegative_float, default=0.0, help="default λ")
    p.add_argument("--workers", type=int, default=16, help="gRPC worker threads")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="serving processes sharing --listen's port (SO_REUSEPORT; spread per connection)",
    )
    p.add_argument("--process-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
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
    mesh = p.add_argument_group(
        "mesh", "Envoy's ext_proc filter, served on --listen (see the README's Running in a mesh)"
    )
    mesh.add_argument(
        "--extproc-alias",
        default="auto",
        help='the request body\'s "model" value that asks for routing (default: auto)',
    )
    mesh.add_argument(
        "--extproc-prompt",
        choices=("last-user", "all-user", "conversation"),
        default="last-user",
        help="the chat text routed on: the last user message with text (default), every user "
        "message, or every message",
    )
    mesh.add_argument(
        "--extproc-max-body-bytes",
        type=int,
        default=1024 * 1024,
        help="larger request bodies get HTTP 413 (default 1 MiB); keep Envoy's buffer above it",
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
    p = sub.add_parser(
        "envoy-config", help="print an Envoy config with this sidecar as its external processor"
    )
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="MODEL=HOST:PORT",
        help="a registered model's OpenAI-compatible upstream (repeatable; default: an example)",
    )
    p.add_argument("--default", default="127.0.0.1:8000", help="upstream for unrouted requests")
    p.add_argument("--sidecar", default=DEFAULT_SERVER, help="the sidecar's --listen address")
    p.add_argument("--listen", default="127.0.0.1:10000", help="Envoy's listener for clients")
    p.add_argument("--admin", default="127.0.0.1:9901", help="Envoy's admin address")
    p.add_argument(
        "--failure-mode-allow",
        action="store_true",
        help="forward requests unrouted when the sidecar fails (default: answer an error)",
    )
    p.add_argument(
        "--message-timeout", type=float, default=1.0, help="seconds Envoy waits per answer"
    )
    p.add_argument(
        "--buffer-limit-bytes",
        type=int,
        default=2 * 1024 * 1024,
        help="Envoy's request buffer; keep it above serve's --extproc-max-body-bytes",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file with the read token Envoy sends when the sidecar locks reads (it is "
        "written into the config)",
    )
    p.set_defaults(func=cmd_envoy_config)

    p = sub.add_parser(
        "evaluate", help="run S_val against a model's OpenAI-compatible endpoint, grade, register"
    )
    client_flags(p)
    p.set_defaults(server=None)  # no leader: no Ψ preview and no registration
    _evaluate_flags(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def _evaluate_flags(p: argparse.ArgumentParser) -> None:
    """`sidecar evaluate`'s own flags (see sidecar/_cli/_evaluate.py and the README)."""
    p.add_argument("--val", type=Path, required=True, help="validation file (JSONL; see README)")
    p.add_argument("--model", required=True, help="model name sent to the endpoint")
    p.add_argument("--out", type=Path, required=True, help="run directory: cache and reports")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible base URL, e.g. .../v1")
    p.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key"
    )
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight at once")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature")
    p.add_argument("--max-tokens", type=int, default=None, help="max completion tokens")
    p.add_argument("--call-timeout", type=float, default=60.0, help="seconds per HTTP call")
    p.add_argument("--max-attempts", type=int, default=6, help="tries per call (429/5xx/...)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry waits up to this (s)")
    p.add_argument("--max-backoff", type=float, default=60.0, help="cap on a wait (s)")
    p.add_argument("--price-in", type=float, default=None, help="per million prompt tokens")
    p.add_argument("--price-out", type=float, default=None, help="per million completion tokens")
    p.add_argument("--cost", type=float, default=None, help="cost per request to register")
    p.add_argument("--regrade", action="store_true", help="grade the cache only, call nothing")
    p.add_argument(
        "--max-failures", default="0", help="failed or ungraded items allowed (N or P%%)"
    )
    p.add_argument("--judge-base-url", default=None, help="endpoint of the judge LLM")
    p.add_argument("--judge-model", default=None, help="judge model name")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="judge key variable")
    p.add_argument("--code-timeout", type=float, default=10.0, help="seconds per code run")
    p.add_argument("--code-memory-mb", type=int, default=512, help="memory per code run")
    p.add_argument("--register", action="store_true", help="register on --server when done")
    p.add_argument("--update", action="store_true", help="replace an existing model")
    p.add_argument("--name", default=None, help="registered name (default: --model)")
    p.add_argument("--description", default="", help="registered description")
    p.add_argument("--label", action="append", default=[], help="key=value (repeatable)")
