"""Call admission on a live server: undecodable bytes, overload, and in-flight accounting."""

from __future__ import annotations

import threading

import grpc
from _helpers import topic_results
from uniroute.v1 import registry_pb2, router_pb2


def raw_call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_undecodable_requests_are_invalid_argument(make_sidecar, connect, topic_artifact):
    sidecar = make_sidecar(artifact_dir=topic_artifact)
    client = connect(sidecar.port)
    # Field 1 (prompt), length 2, bytes that are not UTF-8.
    bad_utf8 = b"\x0a\x02\xff\xfe"
    assert raw_call(client.channel, "/uniroute.v1.Router/Route", bad_utf8) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert raw_call(client.channel, "/uniroute.v1.Registry/RegisterModel", b"\xff\xff\xff") == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    before = sidecar.registry.revision
    assert raw_call(client.channel, "/uniroute.v1.Registry/RegisterModel", b"\x0a\x01\xc3") == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert sidecar.registry.revision == before
    assert sidecar.admission.in_flight == 0


def test_overload_is_refused_quickly(make_sidecar, connect, topic_artifact):
    sidecar = make_sidecar(artifact_dir=topic_artifact, max_concurrent_rpcs=2)
    client = connect(sidecar.port)
    client.registry.RegisterModel(
        registry_pb2.RegisterModelRequest(
            name="coder",
            cost=1.0,
            results=registry_pb2.ValidationResults(results=topic_results("code")),
        )
    )
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()
    long_prompt = "explain this code " * 150

    def call() -> None:
        try:
            client.router.Route(router_pb2.RouteRequest(prompt=long_prompt), timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert grpc.StatusCode.OK in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


class _Aborted(Exception):
    pass


class _Context:
    """A stand-in for grpc.ServicerContext with a chosen time budget."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


class _CallDetails:
    method = "/uniroute.v1.Router/Route"
    invocation_metadata = ()


def _handler(calls: list[object]) -> grpc.RpcMethodHandler:
    def behaviour(request: object, context: object) -> str:
        calls.append(request)
        return "done"

    return grpc.unary_unary_rpc_method_handler(
        behaviour, request_deserializer=lambda b: b.decode(), response_serializer=str.encode
    )


def test_dead_or_hopeless_deadlines_are_refused_before_any_work():
    import pytest

    from sidecar._admission import AdmissionInterceptor

    interceptor = AdmissionInterceptor(min_deadline=0.001)
    calls: list[object] = []
    details = _CallDetails()
    handler = interceptor.intercept_service(lambda _: _handler(calls), details)
    assert handler is not None
    for remaining, code in (
        (-0.5, grpc.StatusCode.DEADLINE_EXCEEDED),
        (0.0002, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ):
        with pytest.raises(_Aborted) as info:
            handler.unary_unary(b"x", _Context(remaining))
        assert info.value.args[0] == code
    assert calls == []
    assert handler.unary_unary(b"ok", _Context(5.0)) == "done"
    assert handler.unary_unary(b"ok", _Context(None)) == "done"
    assert calls == ["ok", "ok"]
    assert interceptor.in_flight == 0 and interceptor.accepted == 4
