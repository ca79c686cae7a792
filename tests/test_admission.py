"""Call admission on a live server: undecodable bytes, overload, and in-flight accounting."""

from __future__ import annotations

import threading

import grpc
from conftest import topic_results
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
