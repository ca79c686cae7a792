"""Envoy's external processor (envoy.service.ext_proc.v3): a thin adapter over ``_http_route``.

Envoy opens one bidirectional stream per HTTP request and sends the parts of
the exchange it is configured to send; each gets exactly one answer. Served
on the sidecar's one gRPC listener beside Router and Registry, so it shares
the listener's TLS, tokens, admission and the Router (the same table and
embedder as Route: an ``auto`` request lands where Route would send its prompt).

The stream ends as soon as the request is decided, so a worker thread is held
for the request's headers and body only, never while the upstream LLM
answers: Envoy treats the processor closing the stream as "no more processing
for this request" and forwards the response untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import grpc

from ._http_route import PASS, Exchange, RouteOptions
from ._metrics import Metrics
from ._proto import ext_proc_pb2, ext_proc_pb2_grpc
from ._router import Router
from ._wire import extproc_phase, extproc_response, http_headers

EXT_PROC_SERVICE = ext_proc_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name


class ExternalProcessorServicer(ext_proc_pb2_grpc.ExternalProcessorServicer):
    def __init__(self, router: Router, options: RouteOptions, metrics: Metrics) -> None:
        self.router = router
        self.options = options
        self.metrics = metrics
        self._lock = threading.Lock()
        self.active_streams = 0  # open Process streams (a gauge: leaks show here)

    def Process(
        self,
        request_iterator: Iterable[ext_proc_pb2.ProcessingRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[ext_proc_pb2.ProcessingResponse]:
        exchange = Exchange(self.router, self.options)
        outcome = "cancelled"  # until the request is decided
        with self._lock:
            self.active_streams += 1
        try:
            # A cancelled stream (the client went away) raises RpcError out of
            # this loop; the finally clause still runs.
            for request in request_iterator:
                phase = extproc_phase(request)
                if phase == "request_headers":
                    step = exchange.on_request_headers(
                        http_headers(request.request_headers),
                        request.request_headers.end_of_stream,
                    )
                elif phase == "request_body":
                    body = request.request_body
                    step = exchange.on_request_body(body.body, body.end_of_stream)
                else:  # not asked for (mode_override says so); answer it without changes
                    step = PASS
                yield extproc_response(phase, step)
                if step.done:
                    outcome = exchange.outcome
                    return
        finally:
            with self._lock:
                self.active_streams -= 1
            self.metrics.extproc_requests.labels(outcome=outcome).inc()
