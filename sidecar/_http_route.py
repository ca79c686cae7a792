"""Routing one OpenAI-style HTTP request, as Envoy's external processor sees it.

Envoy hands the processor a request's headers, then its buffered body. This
module decides what to do with each, in plain Python (no gRPC, no Envoy
messages): pass the request through, rewrite it for the model the Router
chose, or answer it at once with an HTTP error in the OpenAI API's shape.
``_extproc`` adapts it to the ext_proc stream and ``_wire`` to its messages.

The header contract (see the README's "Running in a mesh"):

- in: ``x-uniroute-cost-weight`` (λ for this request), ``x-uniroute-candidates``
  (comma-separated registry names), ``x-request-id`` (for the log);
- out, on a routed request: ``x-uniroute-model`` (the registry name, which
  Envoy's routes match), ``x-uniroute-cluster`` (the prompt's cluster),
  ``x-uniroute-revision`` (the routing table's revision), and a corrected
  ``content-length``; the body's ``model`` becomes the chosen model's upstream
  id (its ``upstream_model`` label, else its registry name).

Only requests whose body says ``"model": <alias>`` (``auto`` by default) are
routed. Everything else passes through untouched, and the processor never
sees a response: it is done once the request is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import FailedPrecondition, InvalidArgument, NotFound, SidecarError
from ._openai_body import (
    DEFAULT_PROMPT_RULE,
    PROMPT_RULES,
    clip,
    endpoint_kind,
    error_body,
    parse_body,
    prompt_text,
    with_model,
)
from ._route_records import Decision, Query
from ._router import Router

log = logging.getLogger("sidecar.extproc")

HEADER_MODEL = "x-uniroute-model"
HEADER_CLUSTER = "x-uniroute-cluster"
HEADER_REVISION = "x-uniroute-revision"
HEADER_COST_WEIGHT = "x-uniroute-cost-weight"
HEADER_CANDIDATES = "x-uniroute-candidates"
HEADER_REQUEST_ID = "x-request-id"
UPSTREAM_LABEL = "upstream_model"
DEFAULT_ALIAS = "auto"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_LOGGED_ID = 128


@dataclass(frozen=True)
class RouteOptions:
    """How the processor reads requests: `sidecar serve --extproc-*`."""

    alias: str = DEFAULT_ALIAS  # the body's "model" value that asks for routing
    prompt_rule: str = DEFAULT_PROMPT_RULE  # last-user | all-user | conversation
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger bodies get 413

    def __post_init__(self) -> None:
        if self.prompt_rule not in PROMPT_RULES:
            raise InvalidArgument(
                f"--extproc-prompt must be one of {', '.join(PROMPT_RULES)}, "
                f"got {self.prompt_rule!r}"
            )
        if not self.alias:
            raise InvalidArgument("--extproc-alias must not be empty")
        if self.max_body_bytes < 1:
            raise InvalidArgument("--extproc-max-body-bytes must be at least 1")


@dataclass(frozen=True)
class Reply:
    """An immediate HTTP answer to the client, sent instead of forwarding the request."""

    status: int
    body: bytes
    details: str  # Envoy's response code details, e.g. uniroute_bad_request


@dataclass(frozen=True)
class Step:
    """The processor's answer to one message of the exchange."""

    reply: Reply | None = None  # answer the client now; the request goes nowhere
    set_headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # replace the request body with this
    clear_route_cache: bool = False  # Envoy picks the route again from the new headers
    wants_body: bool = False  # after headers: send the buffered body next
    done: bool = True  # nothing more to do for this request: the stream may end


PASS = Step()


class Exchange:
    """One HTTP request: ``on_request_headers``, then maybe ``on_request_body``.

    Never raises: every failure becomes a Reply, and unexpected ones are logged
    with their stack trace here, never sent to the client.
    """

    def __init__(self, router: Router, options: RouteOptions) -> None:
        self.router = router
        self.options = options
        self.kind: str | None = None
        self.request_id = "-"
        self.headers: Mapping[str, str] = {}
        self.decision: Decision | None = None
        self.outcome = "passed"  # routed | passed | the HTTP status of a reply

    def on_request_headers(self, headers: Mapping[str, str], end_of_stream: bool) -> Step:
        self.headers = headers
        self.request_id = headers.get(HEADER_REQUEST_ID, "-")[:MAX_LOGGED_ID] or "-"
        if headers.get(":method", "").upper() != "POST" or end_of_stream:
            return PASS
        self.kind = endpoint_kind(headers.get(":path", ""))
        if self.kind is None:
            return PASS
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.options.max_body_bytes:
            return self._too_large(int(declared))
        return Step(wants_body=True, done=False)

    def on_request_body(self, body: bytes, end_of_stream: bool) -> Step:
        if self.kind is None:
            return PASS
        if len(body) > self.options.max_body_bytes:
            return self._too_large(len(body))
        if not end_of_stream:
            return self._reply(
                500,
                "the processor received part of a body; configure Envoy's ext_proc filter "
                "with request_body_mode: BUFFERED",
                "server_error",
                "uniroute_misconfigured",
            )
        try:
            return self._route(body)
        except SidecarError as exc:
            return self._refused(exc)
        except Exception:
            log.exception("extproc request_id=%s: unexpected error", self.request_id)
            return self._reply(
                500, "internal error in the routing sidecar", "server_error", "uniroute_internal"
            )

    def _route(self, body: bytes) -> Step:
        payload = parse_body(body)
        if payload.get("model") != self.options.alias:
            return PASS
        assert self.kind is not None
        text = clip(prompt_text(payload, self.kind, self.options.prompt_rule), self._max_prompt)
        query = Query(prompt=text, candidates=self._candidates(), cost_weight=self._cost_weight())
        decision = self.router.route(query, path="extproc")
        self.decision, self.outcome = decision, "routed"
        upstream = decision.table.labels[decision.chosen].get(UPSTREAM_LABEL) or decision.model
        rewritten = with_model(payload, upstream)
        log.info(
            "extproc routed request_id=%s model=%s upstream=%s cluster=%d revision=%d",
            self.request_id,
            decision.model,
            upstream,
            decision.cluster,
            decision.table.revision,
        )
        return Step(
            set_headers=(
                (HEADER_MODEL, decision.model),
                (HEADER_CLUSTER, str(decision.cluster)),
                (HEADER_REVISION, str(decision.table.revision)),
                ("content-length", str(len(rewritten))),
            ),
            body=rewritten,
            clear_route_cache=True,
        )

    @property
    def _max_prompt(self) -> int:
        return self.router.max_prompt_bytes

    def _cost_weight(self) -> float | None:
        raw = self.headers.get(HEADER_COST_WEIGHT, "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise InvalidArgument(
                f"{HEADER_COST_WEIGHT} must be a finite number >= 0, got {raw[:40]!r}"
            )
        return value

    def _candidates(self) -> tuple[str, ...]:
        raw = self.headers.get(HEADER_CANDIDATES, "")
        return tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))

    def _too_large(self, size: int) -> Step:
        return self._reply(
            413,
            f"the request body is {size} bytes, over the routing sidecar's limit of "
            f"{self.options.max_body_bytes} bytes (--extproc-max-body-bytes)",
            "invalid_request_error",
            "request_too_large",
        )

    def _refused(self, exc: SidecarError) -> Step:
        if isinstance(exc, NotFound):  # only unknown candidates reach here
            return self._reply(400, str(exc), "invalid_request_error", "unknown_candidates")
        if isinstance(exc, InvalidArgument):
            return self._reply(400, str(exc), "invalid_request_error", "invalid_request")
        if isinstance(exc, FailedPrecondition):
            return self._reply(503, str(exc), "server_error", "no_models_available")
        log.error("extproc request_id=%s: %s", self.request_id, exc)
        return self._reply(500, str(exc), "server_error", "uniroute_error")

    def _reply(self, status: int, message: str, type_: str, code: str) -> Step:
        self.outcome = str(status)
        log.info(
            "extproc answered request_id=%s status=%d code=%s: %s",
            self.request_id,
            status,
            code,
            message,
        )
        return Step(
            reply=Reply(status, error_body(message, type_=type_, code=code), f"uniroute_{code}")
        )
