"""Admission of every call: decode it clearly, refuse dead work, and count what is in flight.

gRPC Python reports a request that fails to parse (garbage bytes, or a string
field that is not valid UTF-8) as INTERNAL "Exception deserializing request".
This interceptor receives the raw bytes instead and parses them itself, so the
caller learns what is wrong with its input. It refuses work whose deadline has
already passed, before any of it is done, and it counts accepted and finished
calls so a graceful shutdown can show that no accepted call was dropped.
Bidirectional streams (Envoy's ext_proc) are decoded message by message the
same way and counted too; client-streaming calls (none yet) pass as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError


def _identity(data: bytes) -> bytes:
    return data


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Wraps every unary-request and bidi handler: parsing, deadlines, in-flight accounting."""

    def __init__(self, *, min_deadline: float = 0.001) -> None:
        """``min_deadline``: calls with less time left than this are refused at once."""
        self.min_deadline = min_deadline
        self._lock = threading.Lock()
        self.accepted = 0
        self.finished = 0

    @property
    def in_flight(self) -> int:
        return self.accepted - self.finished

    def _enter(self) -> None:
        with self._lock:
            self.accepted += 1

    def _leave(self) -> None:
        with self._lock:
            self.finished += 1

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        if handler.request_streaming:
            return self._bidi(handler, handler_call_details.method)
        parse = handler.request_deserializer
        method = handler_call_details.method

        def decoded(raw: bytes, context: grpc.ServicerContext) -> Any:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before work began"
                )
            if remaining is not None and remaining < self.min_deadline:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{remaining * 1000:.2f} ms left is too little to finish; allow at least "
                    f"{self.min_deadline * 1000:.1f} ms",
                )
            try:
                request = parse(raw)
            except (DecodeError, UnicodeDecodeError, ValueError) as exc:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{method}: the request is not a valid message ({exc}); string fields "
                    "must be valid UTF-8",
                )
            return request

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            def unary_call(raw: bytes, context: grpc.ServicerContext) -> Any:
                self._enter()
                try:
                    return unary(decoded(raw, context), context)
                finally:
                    self._leave()

            return grpc.unary_unary_rpc_method_handler(
                unary_call,
                request_deserializer=_identity,
                response_serializer=handler.response_serializer,
            )
        stream = handler.unary_stream

        def stream_call(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            self._enter()
            try:
                yield from stream(decoded(raw, context), context)
            finally:
                self._leave()

        return grpc.unary_stream_rpc_method_handler(
            stream_call,
            request_deserializer=_identity,
            response_serializer=handler.response_serializer,
        )

    def _bidi(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """A bidi stream whose messages are parsed one by one; a bad one is INVALID_ARGUMENT."""
        if not handler.response_streaming or handler.stream_stream is None:
            return handler
        parse, bidi = handler.request_deserializer, handler.stream_stream

        def parsed(raws: Iterable[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            for number, raw in enumerate(raws, start=1):
                try:
                    request = parse(raw)
                except (DecodeError, UnicodeDecodeError, ValueError) as exc:
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"{method}: message {number} is not a valid message ({exc}); string "
                        "fields must be valid UTF-8",
                    )
                yield request

        def bidi_call(raws: Iterable[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before work began"
                )
            self._enter()
            try:
                yield from bidi(parsed(raws, context), context)
            finally:
                self._leave()

        return grpc.stream_stream_rpc_method_handler(
            bidi_call,
            request_deserializer=_identity,
            response_serializer=handler.response_serializer,
        )
