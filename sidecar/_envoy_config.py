"""The Envoy configuration that puts the sidecar in the traffic's path, generated in one place.

``deploy/envoy/envoy.yaml`` is this function's output with the default
addresses (``sidecar envoy-config`` prints it; a test keeps the file up to
date), and the tests, the mesh demo and the bench generate theirs with their
own ports, so the shipped example and what is tested cannot drift apart.

The shape: one listener for OpenAI-style traffic; the ext_proc filter sends
each request's headers and buffered body to the sidecar, which sets
``x-uniroute-model``; one route per registered model matches that header and
sends the request to that model's upstream cluster; a last route sends
everything else (explicit models, requests the processor let through) to the
default upstream. The chosen model is copied onto the response by Envoy, and
Envoy's own error replies are put in OpenAI's error shape, as the sidecar's are.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import InvalidArgument
from ._http_route import HEADER_MODEL

DEFAULT_LISTEN = "127.0.0.1:10000"
DEFAULT_ADMIN = "127.0.0.1:9901"
DEFAULT_SIDECAR = "127.0.0.1:50051"
DEFAULT_MESSAGE_TIMEOUT_S = 1.0
DEFAULT_BUFFER_LIMIT_BYTES = 2 * 1024 * 1024  # above the processor's 1 MiB default
DEFAULT_ROUTE_TIMEOUT_S = 300.0
_TYPES = "type.googleapis.com/envoy.extensions."
_HCM = _TYPES + "filters.network.http_connection_manager.v3.HttpConnectionManager"
_EXT_PROC = _TYPES + "filters.http.ext_proc.v3.ExternalProcessor"
_CEL = _TYPES + "access_loggers.filters.cel.v3.ExpressionFilter"

# Envoy's own error replies (a body past its buffer, the processor down or too
# slow, an upstream unreachable) in OpenAI's error shape, as the processor's
# replies already are: an OpenAI client then reads every error the same way.
# The processor's replies carry response code details "uniroute_*" and are
# left as they are.
_NOT_THE_PROCESSORS = "!response.code_details.startsWith('uniroute')"
_LOCAL_REPLY_MAPPERS = (
    ("413", "invalid_request_error", "request_too_large"),
    ("504", "server_error", "gateway_timeout"),
    ("500", "server_error", "proxy_error"),
    ("502", "server_error", "proxy_error"),
    ("503", "server_error", "upstream_unavailable"),
)
_LOCAL_REPLIES = """          # Envoy's own error replies in OpenAI's error shape (the processor's
          # replies, response code details uniroute_*, already are).
          local_reply_config:
            mappers:
""" + "".join(
    f"""            - filter:
                and_filter:
                  filters:
                  - status_code_filter:
                      comparison:
                        op: EQ
                        value: {{default_value: {status}, runtime_key: uniroute.local_reply}}
                  - extension_filter:
                      name: envoy.access_loggers.extension_filters.cel
                      typed_config:
                        "@type": {_CEL}
                        expression: "{_NOT_THE_PROCESSORS}"
              body_format_override:
                json_format:
                  error:
                    message: "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)"
                    type: {kind}
                    code: {code}
                content_type: application/json
"""
    for status, kind, code in _LOCAL_REPLY_MAPPERS
)


@dataclass(frozen=True)
class Upstream:
    """One model's upstream: requests routed to ``model`` (a registry name) go to ``address``."""

    model: str
    address: str  # host:port of an OpenAI-compatible server


EXAMPLE_UPSTREAMS = (
    Upstream("model-a", "127.0.0.1:8001"),
    Upstream("model-b", "127.0.0.1:8002"),
    Upstream("model-c", "127.0.0.1:8003"),
)
EXAMPLE_DEFAULT = "127.0.0.1:8000"


def _host_port(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"{what}: {address!r} is not HOST:PORT")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster_name(model: str, taken: set[str]) -> str:
    base = "model_" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def _cluster(name: str, address: str, what: str, *, grpc: bool = False) -> str:
    host, port = _host_port(address, what)
    lines = [
        f"  - name: {_q(name)}",
        f"    type: {'STATIC' if _is_ip(host) else 'STRICT_DNS'}",
    ]
    if grpc:  # gRPC needs HTTP/2; a sidecar that is down should fail fast
        lines += [
            "    connect_timeout: 0.25s",
            "    typed_extension_protocol_options:",
            "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
            '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3'
            ".HttpProtocolOptions",
            "        explicit_http_config:",
            "          http2_protocol_options: {}",
        ]
    else:
        lines.append("    connect_timeout: 1s")
    lines += [
        "    load_assignment:",
        f"      cluster_name: {_q(name)}",
        "      endpoints:",
        "      - lb_endpoints:",
        "        - endpoint:",
        "            address:",
        f"              socket_address: {{address: {_q(host)}, port_value: {port}}}",
    ]
    return "\n".join(lines)


def envoy_config(
    upstreams: Sequence[Upstream] = EXAMPLE_UPSTREAMS,
    *,
    default: str = EXAMPLE_DEFAULT,
    sidecar: str = DEFAULT_SIDECAR,
    listen: str = DEFAULT_LISTEN,
    admin: str = DEFAULT_ADMIN,
    failure_mode_allow: bool = False,
    message_timeout_s: float = DEFAULT_MESSAGE_TIMEOUT_S,
    buffer_limit_bytes: int = DEFAULT_BUFFER_LIMIT_BYTES,
    route_timeout_s: float = DEFAULT_ROUTE_TIMEOUT_S,
    token: str | None = None,
    processor: bool = True,
) -> str:
    """Envoy's YAML for these upstreams and this sidecar, commented for people reading it.

    ``token`` is the bearer token Envoy sends on each ext_proc stream when the
    sidecar locks reads (``--read-tokens-file``); the file then holds a secret.
    ``processor=False`` leaves the ext_proc filter out: Envoy alone, the bench's baseline.
    """
    if not upstreams:
        raise InvalidArgument("the Envoy config needs at least one upstream model")
    models = [u.model for u in upstreams]
    if len(set(models)) != len(models):
        raise InvalidArgument("each model may have one upstream in the Envoy config")
    if not message_timeout_s > 0:
        raise InvalidArgument("the ext_proc message timeout must be > 0 seconds")
    listen_host, listen_port = _host_port(listen, "listen")
    admin_host, admin_port = _host_port(admin, "admin")
    _host_port(sidecar, "sidecar")
    taken: set[str] = {"uniroute", "default_upstream"}
    clusters = [(u, _cluster_name(u.model, taken)) for u in upstreams]
    routes = "\n".join(
        f"""              - match:
                  prefix: "/"
                  headers:
                  - name: {HEADER_MODEL}
                    string_match: {{exact: {_q(u.model)}}}
                route: {{cluster: {_q(name)}, timeout: {route_timeout_s:g}s}}"""
        for u, name in clusters
    )
    metadata = (
        f"""
                initial_metadata:  # the sidecar locks reads: a read token (keep this file secret)
                - key: authorization
                  value: {_q("Bearer " + token)}"""
        if token
        else """
                # With --read-tokens-file on the sidecar, send a read token here:
                # initial_metadata: [{key: authorization, value: "Bearer TOKEN"}]"""
    )
    ext_proc_filter = (
        f"""          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": {_EXT_PROC}
              grpc_service:
                envoy_grpc: {{cluster_name: uniroute}}{metadata}
              # Sidecar down or erroring: false answers the client with an error
              # (500); true forwards the request unchanged (to default_upstream).
              failure_mode_allow: {str(failure_mode_allow).lower()}
              # How long Envoy waits for each answer from the sidecar (one for the
              # headers, one for the body). Past it: 504, or with
              # failure_mode_allow the request goes on unchanged.
              message_timeout: {message_timeout_s:g}s
              # The sidecar asks for the body only of POST .../chat/completions and
              # .../completions, and for nothing of the response.
              allow_mode_override: true
              processing_mode:
                request_header_mode: SEND
                request_body_mode: BUFFERED
                request_trailer_mode: SKIP
                response_header_mode: SKIP
                response_body_mode: NONE
                response_trailer_mode: SKIP
"""
        if processor
        else ""
    )
    cluster_blocks = "\n".join(
        [
            _cluster("uniroute", sidecar, "sidecar", grpc=True),
            *(_cluster(name, u.address, f"upstream of {u.model}") for u, name in clusters),
            _cluster("default_upstream", default, "default upstream"),
        ]
    )
    return f"""\
# Envoy in front of OpenAI-compatible upstreams, with the UniRoute sidecar as its
# external processor. Generated by `sidecar envoy-config`; the README's "Running
# in a mesh" explains each part. Send requests with "model": "auto" to the
# listener; every other request passes through to the default upstream.
admin:
  address:
    socket_address: {{address: {_q(admin_host)}, port_value: {admin_port}}}
static_resources:
  listeners:
  - name: openai
    address:
      socket_address: {{address: {_q(listen_host)}, port_value: {listen_port}}}
    # Envoy buffers each request body for the processor up to this many bytes
    # and answers 413 itself beyond it. Keep it above the sidecar's
    # --extproc-max-body-bytes (1 MiB by default), so that the processor
    # answers an oversized body with its own OpenAI-style 413.
    per_connection_buffer_limit_bytes: {buffer_limit_bytes}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}
          stat_prefix: openai
{_LOCAL_REPLIES}          route_config:
            name: models
            virtual_hosts:
            - name: llm
              domains: ["*"]
              # The model the sidecar chose, on the response too (absent when
              # the request was not routed).
              response_headers_to_add:
              - header: {{key: {HEADER_MODEL}, value: "%REQ({HEADER_MODEL})%"}}
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              routes:
              # One route per model: the processor sets x-uniroute-model to the
              # chosen registry name and clears the route cache, so Envoy picks
              # the route again after the body is rewritten.
{routes}
              # Everything else: explicit models, non-OpenAI paths, and "auto"
              # requests let through by failure_mode_allow.
              - match: {{prefix: "/"}}
                route: {{cluster: default_upstream, timeout: {route_timeout_s:g}s}}
          http_filters:
{ext_proc_filter}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  # The sidecar's gRPC listener first (`sidecar serve --listen`, where it serves
  # envoy.service.ext_proc.v3.ExternalProcessor beside Router and Registry),
  # then one cluster per model and the default. A remote provider also needs a
  # TLS transport_socket and auto_host_rewrite on its cluster and route.
  clusters:
{cluster_blocks}
"""


def main() -> None:
    """Prints the shipped example (``python -m sidecar._envoy_config``)."""
    print(envoy_config(), end="")


if __name__ == "__main__":
    main()
