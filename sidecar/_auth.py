"""Bearer-token authorisation for the gRPC API: who may change the pool, who may read it.

Every RPC has an access level, derived from the generated service descriptors:

- **write**: ``RegisterModel``, ``DeregisterModel``, ``ActivateClustering``, and any
  Registry method not known to be a read (a new RPC is locked until someone
  classifies it);
- **read**: every ``Router`` method, Envoy's external processor
  (``envoy.service.ext_proc.v3.ExternalProcessor/Process``: Envoy sends the
  token as ``initial_metadata`` of its ``grpc_service``) and the Registry's
  reads (``GetModel``, ``ListModels``, ``GetClustering``, ``Watch``, ``GetStatus``);
- **open**: health checking and server reflection, always.

Writes need a write token once any is configured; reads need a read or a write
token once a read set is configured. Callers send ``authorization: Bearer
<token>`` metadata. Tokens come from files or environment variables, never from
a command-line value (``ps`` would show it), and several may be valid at once so
they can be rotated. A presented token is hashed and compared with every
configured token's hash with ``hmac.compare_digest``, without stopping at the
first match, so neither timing nor length reveals which token (if any) is close.
Token values are never logged or echoed in errors.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from ._errors import ArtifactError, InvalidArgument
from ._proto import ext_proc_pb2, registry_pb2, router_pb2

log = logging.getLogger("sidecar.auth")

MIN_TOKEN_LENGTH = 16
WRITE_TOKENS_ENV = "UNIROUTE_WRITE_TOKENS"
READ_TOKENS_ENV = "UNIROUTE_READ_TOKENS"
LEADER_TOKEN_ENV = "UNIROUTE_LEADER_TOKEN"
CLIENT_TOKEN_ENV = "UNIROUTE_TOKEN"
METADATA_KEY = "authorization"


class Access(enum.IntEnum):
    OPEN = 0
    READ = 1
    WRITE = 2


_ROUTER = router_pb2.DESCRIPTOR.services_by_name["Router"]
_REGISTRY = registry_pb2.DESCRIPTOR.services_by_name["Registry"]
_EXT_PROC = ext_proc_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"]
# Reads, by name; every other Registry method is a write (fail closed).
_REGISTRY_READS = ("GetModel", "ListModels", "GetClustering", "Watch", "GetStatus")
WRITE_METHODS = ("RegisterModel", "DeregisterModel", "ActivateClustering")
OPEN_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME})


def _method_levels() -> dict[str, Access]:
    unknown = [n for n in (*_REGISTRY_READS, *WRITE_METHODS) if n not in _REGISTRY.methods_by_name]
    if unknown:  # a renamed RPC must be classified again, not silently dropped
        raise RuntimeError(f"{_REGISTRY.full_name} has no method(s) {unknown}; update _auth.py")
    levels = {
        f"/{service.full_name}/{m.name}": Access.READ
        for service in (_ROUTER, _EXT_PROC)
        for m in service.methods
    }
    for m in _REGISTRY.methods:
        read = m.name in _REGISTRY_READS
        levels[f"/{_REGISTRY.full_name}/{m.name}"] = Access.READ if read else Access.WRITE
    return levels


METHOD_LEVELS = _method_levels()


def access_level(method: str) -> Access:
    """The level a full method name (``/package.Service/Method``) needs."""
    level = METHOD_LEVELS.get(method)
    if level is not None:
        return level
    service = method.lstrip("/").rpartition("/")[0]
    return Access.OPEN if service in OPEN_SERVICES else Access.WRITE


# ------------------------------------------------------------------ token sources


def check_token(token: str, where: str) -> str:
    """Returns the token if it is usable; the error names where it came from, never its value."""
    if not token or not token.strip():
        raise InvalidArgument(f"{where}: empty token")
    if any(not 33 <= ord(c) <= 126 for c in token):
        raise InvalidArgument(
            f"{where}: a token may only hold printable ASCII without spaces "
            "(it travels as gRPC metadata)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise InvalidArgument(
            f"{where}: token is {len(token)} characters; tokens need at least "
            f"{MIN_TOKEN_LENGTH} (try `openssl rand -hex 32`)"
        )
    return token


def tokens_from_file(path: Path, flag: str) -> list[str]:
    """One token a line; blank lines and lines starting with # are ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ArtifactError(f"{flag} {path}: cannot read ({reason or exc})") from exc
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            tokens.append(check_token(stripped, f"{flag} {path} line {number}"))
    if not tokens:
        raise InvalidArgument(f"{flag} {path}: no tokens in it")
    return tokens


def tokens_from_env(variable: str, environ: dict[str, str] | None = None) -> list[str]:
    """Comma-separated tokens; a variable that is set must hold at least one valid token."""
    value = (os.environ if environ is None else environ).get(variable)
    if value is None:
        return []
    parts = value.split(",")
    return [check_token(t.strip(), f"${variable} entry {i}") for i, t in enumerate(parts, 1)]


def load_tokens(
    path: Path | None, variable: str, flag: str, environ: dict[str, str] | None = None
) -> tuple[str, ...]:
    """Tokens from a file and/or an environment variable, deduplicated, in order."""
    tokens = tokens_from_file(path, flag) if path is not None else []
    tokens += tokens_from_env(variable, environ)
    return tuple(dict.fromkeys(tokens))


def load_token(
    path: Path | None, variable: str, flag: str, environ: dict[str, str] | None = None
) -> str | None:
    """The one token a client sends: from the file if given, else the variable, else None."""
    if path is not None:
        tokens = tokens_from_file(path, flag)
        source = f"{flag} {path}"
    else:
        tokens = tokens_from_env(variable, environ)
        source = f"${variable}"
    if len(tokens) > 1:
        raise InvalidArgument(f"{source}: holds {len(tokens)} tokens; a client sends one")
    return tokens[0] if tokens else None


# ------------------------------------------------------------------------ policy


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class AuthPolicy:
    """Which tokens unlock which level; holds only SHA-256 digests of the tokens."""

    def __init__(self, write_tokens: Sequence[str] = (), read_tokens: Sequence[str] = ()) -> None:
        for kind, tokens in (("write", write_tokens), ("read", read_tokens)):
            for i, token in enumerate(tokens, 1):
                check_token(token, f"{kind} token {i}")
        if read_tokens and not write_tokens:
            raise InvalidArgument(
                "read tokens are set but no write tokens: writes would stay open while reads "
                f"are locked; set --write-tokens-file or ${WRITE_TOKENS_ENV} too"
            )
        self._write = tuple(_digest(t) for t in dict.fromkeys(write_tokens))
        self._read = tuple(_digest(t) for t in dict.fromkeys(read_tokens))

    @property
    def write_count(self) -> int:
        return len(self._write)

    @property
    def read_count(self) -> int:
        return len(self._read)

    @property
    def enabled(self) -> bool:
        return bool(self._write or self._read)

    def locks(self, level: Access) -> bool:
        if level is Access.WRITE:
            return bool(self._write)
        if level is Access.READ:
            return bool(self._read)
        return False

    def valid(self, level: Access, token: str) -> bool:
        """Constant time in the token: every configured digest is compared, match or not."""
        presented = _digest(token)
        allowed = self._write if level is Access.WRITE else self._write + self._read
        match = False
        for digest in allowed:
            match |= hmac.compare_digest(digest, presented)
        return match

    def refusal(
        self, method: str, metadata: Iterable[tuple[str, Any]] | None
    ) -> tuple[grpc.StatusCode, str] | None:
        """None if the call may proceed, else the status code and message to abort with."""
        level = access_level(method)
        if not self.locks(level):
            return None
        name = method.rpartition("/")[2]
        values = [v for k, v in metadata or () if k == METADATA_KEY]
        if not values:
            if level is Access.WRITE:
                need = "; see --write-tokens-file"
            else:
                need = " with a read or write token; see --read-tokens-file"
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                f"{name}: this RPC needs `authorization: Bearer <token>`{need} "
                "(the sidecar CLI sends one with --token-file or $UNIROUTE_TOKEN, a follower "
                "with --leader-token-file)",
            )
        value = values[0]
        scheme, _, token = (value if isinstance(value, str) else "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                f"{name}: the authorization metadata must be `Bearer <token>`",
            )
        if not self.valid(level, token):
            kind = "write" if level is Access.WRITE else "read or write"
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name}: the bearer token is not a valid {kind} token",
            )
        return None


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls whose metadata lacks a token for the method's level."""

    def __init__(self, policy: AuthPolicy, *, log_every: float = 10.0) -> None:
        self.policy = policy
        self._log_every = log_every
        self._lock = threading.Lock()
        self._last_log: dict[tuple[str, grpc.StatusCode], float] = {}
        self._suppressed: collections.Counter[tuple[str, grpc.StatusCode]] = collections.Counter()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        refusal = self.policy.refusal(method, handler_call_details.invocation_metadata)
        handler = continuation(handler_call_details)
        if refusal is None or handler is None:
            return handler
        return self._refusing(handler, method, *refusal)

    def _refusing(
        self, handler: grpc.RpcMethodHandler, method: str, code: grpc.StatusCode, message: str
    ) -> grpc.RpcMethodHandler:
        """A handler of the same shape that only aborts (and logs, rate-limited)."""

        def abort(_request: Any, context: grpc.ServicerContext) -> Any:
            self._log(method, code, context.peer())
            context.abort(code, message)

        if handler.request_streaming and handler.response_streaming:
            make = grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            make = grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            make = grpc.unary_stream_rpc_method_handler
        else:
            make = grpc.unary_unary_rpc_method_handler
        return make(
            abort,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _log(self, method: str, code: grpc.StatusCode, peer: str) -> None:
        key = (method, code)
        now = time.monotonic()
        with self._lock:
            last = self._last_log.get(key)
            if last is not None and now - last < self._log_every:
                self._suppressed[key] += 1
                return
            self._last_log[key] = now
            suppressed = self._suppressed.pop(key, 0)
        more = f" (and {suppressed} more since the last report)" if suppressed else ""
        log.warning("refused %s from %s: %s%s", method, peer, code.name, more)


# ------------------------------------------------------------------------ client


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A client interceptor that adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self._metadata = bearer_metadata(token)

    def __repr__(self) -> str:
        return "BearerToken(<redacted>)"

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *self._metadata],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if not token else ((METADATA_KEY, f"Bearer {token}"),)
