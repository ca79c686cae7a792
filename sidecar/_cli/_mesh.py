"""`sidecar envoy-config`: print the Envoy config that puts the sidecar in the traffic's path."""

from __future__ import annotations

import argparse
import sys


def cmd_envoy_config(args: argparse.Namespace) -> int:
    from .._auth import load_token
    from .._envoy_config import EXAMPLE_UPSTREAMS, Upstream, envoy_config
    from .._errors import InvalidArgument

    upstreams = []
    for spec in args.upstream:
        model, sep, address = spec.partition("=")
        if not sep or not model:
            raise InvalidArgument(f"--upstream {spec!r}: expected MODEL=HOST:PORT")
        upstreams.append(Upstream(model, address))
    # Only from a file named on purpose: a token in the environment (often a write
    # token, for `register`) must not end up in a config file by accident.
    token = load_token(args.token_file, "", "--token-file") if args.token_file else None
    sys.stdout.write(
        envoy_config(
            upstreams or EXAMPLE_UPSTREAMS,
            default=args.default,
            sidecar=args.sidecar,
            listen=args.listen,
            admin=args.admin,
            failure_mode_allow=args.failure_mode_allow,
            message_timeout_s=args.message_timeout,
            buffer_limit_bytes=args.buffer_limit_bytes,
            token=token,
        )
    )
    return 0
