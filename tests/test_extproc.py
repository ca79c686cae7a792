"""The ext_proc servicer over a real gRPC server, spoken to as Envoy would, message by message.

These pin the wire contract with Envoy's messages (the answers, the mode
override, the stream ending once the request is decided) and how the
listener's interceptors treat a bidi stream: tokens, bad bytes, accounting.
tests/test_mesh.py runs the same path with a real Envoy in front.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from _helpers import CODE_PROMPT, register_specialists
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._proto import envoy_base_pb2, ext_proc_pb2, ext_proc_pb2_grpc, processing_mode_pb2
from sidecar._readiness import wait_until

MODE = processing_mode_pb2.ProcessingMode
METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"


def headers(method: str = "POST", path: str = "/v1/chat/completions", **extra: str) -> Any:
    values = {":method": method, ":path": path, "x-request-id": "rid-1", **extra}
    return ext_proc_pb2.ProcessingRequest(
        request_headers=ext_proc_pb2.HttpHeaders(
            headers=envoy_base_pb2.HeaderMap(
                headers=[
                    envoy_base_pb2.HeaderValue(key=k, raw_value=v.encode())
                    for k, v in values.items()
                ]
            )
        )
    )


def body(payload: object) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ext_proc_pb2.ProcessingRequest(
        request_body=ext_proc_pb2.HttpBody(body=raw, end_of_stream=True)
    )


def auto(text: str = CODE_PROMPT) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


class Stream:
    """One Process stream: send a message, read its answer, as Envoy does."""

    def __init__(self, channel: grpc.Channel, metadata: tuple = ()) -> None:
        self._outbox: list[Any] = []
        self._ready = threading.Condition()
        self._closed = False
        stub = ext_proc_pb2_grpc.ExternalProcessorStub(channel)
        self.call = stub.Process(self._requests(), metadata=metadata, timeout=30)

    def _requests(self) -> Iterator[Any]:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._outbox or self._closed)
                if not self._outbox:
                    return
                message = self._outbox.pop(0)
            yield message

    def send(self, message: Any) -> Any:
        with self._ready:
            self._outbox.append(message)
            self._ready.notify()
        return next(self.call)

    def ended(self) -> bool:
        """True when the server ended the stream (OK) without waiting for more."""
        try:
            next(self.call)
        except StopIteration:
            return True
        return False

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()


@pytest.fixture
def live(make_sidecar, connect, topic_artifact):
    sidecar = make_sidecar(artifact_dir=topic_artifact, extproc_max_body_bytes=4096)
    client = connect(sidecar.port)
    register_specialists(client)
    return sidecar, client


def test_an_auto_request_is_decided_in_two_messages(live) -> None:
    sidecar, client = live
    stream = Stream(client.channel)
    first = stream.send(headers())
    assert first.WhichOneof("response") == "request_headers"
    assert first.mode_override.request_body_mode == MODE.BUFFERED
    assert first.mode_override.response_header_mode == MODE.SKIP
    assert first.mode_override.response_body_mode == MODE.NONE
    second = stream.send(body(auto()))
    assert second.WhichOneof("response") == "request_body"
    common = second.request_body.response
    assert common.clear_route_cache
    rewritten = common.body_mutation.body
    assert json.loads(rewritten)["model"] == "coder"
    set_headers = {
        h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers
    }
    assert set_headers["x-uniroute-model"] == "coder"
    assert set_headers["content-length"] == str(len(rewritten))
    assert set_headers["x-uniroute-revision"] == str(sidecar.registry.revision)
    assert {h.append_action for h in common.header_mutation.set_headers} == {
        envoy_base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    }
    assert stream.ended()  # the processor never waits for the response
    stream.close()


def test_other_requests_end_after_their_headers(live) -> None:
    _, client = live
    for message in (headers(method="GET", path="/v1/models"), headers(path="/v1/embeddings")):
        stream = Stream(client.channel)
        answer = stream.send(message)
        assert answer.WhichOneof("response") == "request_headers"
        assert answer.mode_override.request_body_mode == MODE.NONE
        assert not answer.request_headers.response.HasField("header_mutation")
        assert stream.ended()
        stream.close()


def test_bad_input_gets_an_immediate_openai_error(live) -> None:
    sidecar, client = live
    stream = Stream(client.channel)
    stream.send(headers())
    answer = stream.send(body(b"{oops"))
    immediate = answer.immediate_response
    assert answer.WhichOneof("response") == "immediate_response"
    assert immediate.status.code == 400
    assert immediate.details == "uniroute_invalid_request"
    assert [(h.header.key, h.header.raw_value) for h in immediate.headers.set_headers] == [
        ("content-type", b"application/json")
    ]
    assert json.loads(immediate.body)["error"]["type"] == "invalid_request_error"
    assert stream.ended()
    stream.close()
    too_big = Stream(client.channel).send(headers(**{"content-length": "5000"}))
    assert too_big.immediate_response.status.code == 413
    count = sidecar.metrics.registry.get_sample_value
    wait_until(lambda: count("uniroute_extproc_requests_total", {"outcome": "413"}) == 1)
    assert count("uniroute_extproc_requests_total", {"outcome": "400"}) == 1


def test_a_stream_cancelled_mid_request_leaves_nothing_behind(live) -> None:
    sidecar, client = live
    for _ in range(5):
        stream = Stream(client.channel)
        stream.send(headers())  # the processor now waits for the body...
        stream.call.cancel()  # ...and Envoy resets the stream (its client went away)
        stream.close()
    assert sidecar.extproc is not None
    wait_until(lambda: sidecar.extproc.active_streams == 0 and sidecar.admission.in_flight == 0)
    count = sidecar.metrics.registry.get_sample_value
    wait_until(lambda: count("uniroute_extproc_requests_total", {"outcome": "cancelled"}) == 5)
    stream = Stream(client.channel)  # and the processor still routes
    stream.send(headers())
    assert stream.send(body(auto())).request_body.response.clear_route_cache
    stream.close()


def test_garbage_on_the_stream_is_invalid_argument(live) -> None:
    sidecar, client = live
    call = client.channel.stream_stream(METHOD)
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([b"\xff\xff\xff\xff"]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message 1 is not a valid message" in info.value.details()
    wait_until(lambda: sidecar.admission.in_flight == 0)


def test_the_processor_is_a_read_for_tokens(make_sidecar, connect, topic_artifact) -> None:
    sidecar = make_sidecar(artifact_dir=topic_artifact, write_tokens=(WRITE,), read_tokens=(READ,))
    client = connect(sidecar.port)
    with pytest.raises(grpc.RpcError) as info:
        Stream(client.channel).send(headers())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        Stream(client.channel, (("authorization", "Bearer " + "x" * 20),)).send(headers())
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for token in (READ, WRITE):  # what Envoy sends as its grpc_service's initial_metadata
        stream = Stream(client.channel, (("authorization", f"Bearer {token}"),))
        assert stream.send(headers()).WhichOneof("response") == "request_headers"
        stream.close()
        stream.call.cancel()


def test_health_names_the_processor(make_sidecar, connect, topic_artifact) -> None:
    sidecar = make_sidecar(artifact_dir=topic_artifact)
    client = connect(sidecar.port)
    reply = health_pb2_grpc.HealthStub(client.channel).Check(
        health_pb2.HealthCheckRequest(service="envoy.service.ext_proc.v3.ExternalProcessor")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
