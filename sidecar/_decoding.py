"""Turn undecodable requests into INVALID_ARGUMENT instead of gRPC's generic INTERNAL.

gRPC Python reports a request that fails to parse (garbage bytes, or a string
field that is not valid UTF-8) as INTERNAL "Exception deserializing request".
This interceptor receives the raw bytes instead and parses them itself, so the
caller learns what is wrong with its input. It also refuses work whose
deadline has already passed, before any of it is done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError


def _identity(data: bytes) -> bytes:
    return data


class DecodingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps every unary-request handler with explicit parsing and a deadline check."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        method = handler_call_details.method
        behaviour = handler.unary_unary or handler.unary_stream

        def decoded(raw: bytes, context: grpc.ServicerContext) -> Any:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before work began"
                )
            try:
                request = parse(raw)
            except (DecodeError, UnicodeDecodeError, ValueError) as exc:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{method}: the request is not a valid message ({exc}); string fields "
                    "must be valid UTF-8",
                )
            return behaviour(request, context)

        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary is not None
            else grpc.unary_stream_rpc_method_handler
        )
        return make(
            decoded, request_deserializer=_identity, response_serializer=handler.response_serializer
        )
