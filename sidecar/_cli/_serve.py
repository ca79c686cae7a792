"""`sidecar serve`: turn flags and environment into a ServerConfig, run until a signal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._server import ServerConfig

log = logging.getLogger("sidecar")


def cmd_serve(args: argparse.Namespace) -> int:
    from .._process_group import ProcessGroup, check_group, report_ready, sibling_settings
    from .._server import ServerConfig, serve
    from .._store import is_postgres

    check_group(args.listen, args.processes)
    own = sibling_settings(
        args.process_index,
        args.db or ("var/follower.db" if args.follow else "var/registry.db"),
        args.metrics_listen,
        follow=bool(args.follow),
    )
    db = own.db
    security = _serve_security(args)
    config = ServerConfig(
        listen=args.listen,
        reuse_port=args.processes > 1,
        db_path=db,
        artifact_dir=args.artifact if own.activate_artifact else None,
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
        metrics_listen=own.metrics_listen,
        log_prompts=args.log_prompts,
        extproc_alias=args.extproc_alias,
        extproc_prompt=args.extproc_prompt,
        extproc_max_body_bytes=args.extproc_max_body_bytes,
        **security,
    )
    # The Route path hands the GIL between gRPC's threads and the worker around every
    # onnxruntime run; a 0.2 ms switch interval (default 5 ms) measured ~0.3 ms off a
    # Route on these machines. It is process-wide, so it is set here, not in serve().
    sys.setswitchinterval(args.gil_switch_interval)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    sidecar = serve(config)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    group = None
    if args.processes > 1 and args.process_index == 0:
        group = ProcessGroup(args.argv, args.processes)
        try:
            group.start(on_failure=stop.set, cancel=stop)
        except BaseException:
            sidecar.stop(grace=0)
            raise
    report_ready(args.ready_fd)
    table = sidecar.tables.current
    if sidecar.follower is not None:
        role = f"follower of {sidecar.follower.describe_leaders()}"
    else:
        role = "registry replica" if is_postgres(db) else "leader"
    if args.processes > 1:
        role += f", process {args.process_index} of {args.processes} (pid {os.getpid()})"
    print(
        f"sidecar serving on {args.listen} (port {sidecar.port}) as {role}; "
        f"db={sidecar.registry.store.location} "
        f"clustering={table.clustering_version if table else '-'} "
        f"models={table.size if table else 0}",
        flush=True,
    )
    if not args.process_index:  # siblings leave the advice to process 0
        _advise_on_security(config, args)
    stop.wait()
    if group is None:
        sidecar.stop(grace=args.grace)
        return 0
    siblings = threading.Thread(target=group.stop, args=(args.grace,))
    siblings.start()  # they drain beside this one
    sidecar.stop(grace=args.grace)
    siblings.join()
    if group.failure:
        print(f"error: {group.failure}; the group stopped", file=sys.stderr, flush=True)
        return 1
    return 0


def _advise_on_security(config: ServerConfig, args: argparse.Namespace) -> None:
    """What the serving process says about tokens and TLS once it is up."""
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


def _serve_security(args: argparse.Namespace) -> dict[str, Any]:
    """ServerConfig's security fields from serve's flags and environment; tokens never from argv."""
    from .._auth import LEADER_TOKEN_ENV, READ_TOKENS_ENV, WRITE_TOKENS_ENV, load_token, load_tokens

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
