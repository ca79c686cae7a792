"""The `sidecar` command: export-embedder, fit, serve, and gRPC clients for people and scripts.

The parser is built inside ``main()``, never at import time, and client
commands open their channel only when they run. ``_parser`` declares every
flag; ``_build``, ``_serve`` and ``_client`` hold the commands.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import grpc

from .._errors import InvalidArgument, SidecarError
from ._parser import build_parser

EXIT_ERROR = 1
EXIT_USAGE = 2

log = logging.getLogger("sidecar")

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `serve --processes` repeats it
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
