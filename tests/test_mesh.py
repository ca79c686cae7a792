"""End to end in the traffic's path: a real Envoy, real `sidecar serve` processes as its
external processor, stand-in upstream LLMs on loopback, and the official `openai` client.

Envoy's config comes from ``sidecar._envoy_config`` (the shipped example's
generator) with this module's ports. Every process is killed at teardown,
whatever the tests did: sidecars and Envoys run in their own sessions and are
killed as a group.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT, topic_results, two_topic_prompts
from uniroute.v1 import registry_pb2, registry_pb2_grpc, router_pb2, router_pb2_grpc

from sidecar._envoy_config import Upstream as Route
from sidecar._envoy_config import envoy_config
from sidecar._readiness import FAST_RECONNECT, free_port, wait_serving, wait_until
from tools.mesh.envoy import envoy_command, wait_ready
from tools.mesh.upstream import Upstream

MAX_BODY = 64 * 1024  # the processor's limit here (--extproc-max-body-bytes)
BUFFER = 256 * 1024  # Envoy's buffer: bodies between the two get the processor's 413
MODELS = ("coder", "chef", "cheap", "newcomer")  # newcomer registers late, in one test
UPSTREAM_IDS = {"coder": "coder-2024-07-18"}  # the coder upstream knows itself by another id
PROPAGATION = 5.0  # seconds a registration may take to reach a follower's Envoy
USER = b'{"model": "auto", "messages": [{"role": "user", "content": '
IMAGE_ONLY = USER + b'[{"type": "image_url", "image_url": {"url": "x"}}]}]}'
TOO_LARGE = USER + b'"' + b"x" * MAX_BODY + b'"}]}'


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    address: str = ""
    metrics: str = ""

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address, FAST_RECONNECT)


class Mesh:
    """Processes of one module; ``close`` kills every group, then reaps."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[Process] = []
        self.upstreams = {m: Upstream(m).start() for m in (*MODELS, "default")}

    def sidecar(self, name: str, *args: str) -> Process:
        address, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        command = [sys.executable, "-m", "sidecar._cli", "serve", "--listen", address]
        command += ["--db", str(self.root / f"{name}.db"), "--metrics-listen", metrics]
        command += ["--progress-interval", "0.5", "--extproc-max-body-bytes", str(MAX_BODY)]
        process = self._start(name, [*command, *args])
        process.address, process.metrics = address, metrics
        with process.channel() as channel:
            wait_serving(channel, process=process.popen, log=process.log, name=name)
        return process

    def envoy(self, name: str, sidecar: Process, **options: object) -> str:
        """An Envoy in front of the upstreams with ``sidecar`` as its processor; its address."""
        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        config = self.root / f"{name}.yaml"
        config.write_text(
            envoy_config(
                [Route(m, self.upstreams[m].address) for m in MODELS],
                default=self.upstreams["default"].address,
                sidecar=sidecar.address,
                listen=listen,
                admin=admin,
                buffer_limit_bytes=BUFFER,
                **options,  # type: ignore[arg-type]
            )
        )
        process = self._start(name, envoy_command(config))
        wait_ready(admin, process.popen, log=process.log)
        return listen

    def _start(self, name: str, command: list[str]) -> Process:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.popen.pid, signal.SIGCONT)
                    os.killpg(process.popen.pid, signal.SIGKILL)
        for process in self.processes:
            process.popen.wait(timeout=30)
        for upstream in self.upstreams.values():
            upstream.stop()

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.log.name} -----\n{p.log.read_text(errors='replace')[-3000:]}"
            for p in self.processes
        )


def register(channel: grpc.Channel, name: str, topic: str | None, cost: float = 1.0) -> None:
    """A model right on `topic` and wrong elsewhere (None: a coin flip on everything)."""
    labels = {"upstream_model": UPSTREAM_IDS[name]} if name in UPSTREAM_IDS else {}
    registry_pb2_grpc.RegistryStub(channel).RegisterModel(
        registry_pb2.RegisterModelRequest(
            name=name,
            cost=cost,
            labels=labels,
            allow_update=True,
            results=registry_pb2.ValidationResults(results=topic_results(topic)),
        ),
        timeout=10,
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, topic_artifact: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("mesh")
    group = Mesh(root)
    try:
        leader = group.sidecar("leader", "--artifact", str(topic_artifact))
        with leader.channel() as channel:
            register(channel, "coder", "code")
            register(channel, "chef", "cook")
            register(channel, "cheap", None, cost=0.05)
        follower = group.sidecar("follower", "--follow", leader.address)
        yield {
            "group": group,
            "leader": leader,
            "follower": follower,
            "envoy": group.envoy("envoy", leader),
            "follower_envoy": group.envoy("follower-envoy", follower),
        }
    finally:
        group.close()
        print(group.logs())  # shown only when a test failed


@pytest.fixture
def client(mesh: dict) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"http://{mesh['envoy']}/v1", api_key="unused", max_retries=0, timeout=30
    ) as c:
        yield c


def chat(client: openai.OpenAI, text: str, **headers: str) -> tuple[str, dict[str, str]]:
    """The model that answered and the response headers."""
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], extra_headers=headers
    )
    return raw.parse().model, dict(raw.headers)


def post(address: str, body: bytes, path: str = "/v1/chat/completions", **headers: str):
    """Raw HTTP: (status, headers, parsed JSON body or the raw bytes)."""
    connection = http.client.HTTPConnection(address, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        reply = connection.getresponse()
        data = reply.read()
        with contextlib.suppress(ValueError):
            return reply.status, dict(reply.headers), json.loads(data)
        return reply.status, dict(reply.headers), data
    finally:
        connection.close()


def scrape(process: Process, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://{process.metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    selector = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(name + (selector if labels else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def routed_by_route_rpc(process: Process, prompt: str, weight: float) -> router_pb2.RouteResponse:
    with process.channel() as channel:
        return router_pb2_grpc.RouterStub(channel).Route(
            router_pb2.RouteRequest(prompt=prompt, cost_weight=weight), timeout=10
        )


def test_auto_lands_where_route_would_for_the_same_prompt_and_weight(mesh, client) -> None:
    prompts = [CODE_PROMPT, COOK_PROMPT, *(p for _, p, _ in two_topic_prompts()[1][::4])]
    seen = set()
    for prompt in prompts:
        for weight in (0.0, 0.5, 20.0):
            expected = routed_by_route_rpc(mesh["leader"], prompt, weight)
            model, headers = chat(client, prompt, **{"x-uniroute-cost-weight": str(weight)})
            assert (model, headers["x-uniroute-model"]) == (expected.model, expected.model)
            seen.add(model)
            arrived = mesh["group"].upstreams[model].requests()[-1]
            assert arrived.json()["model"] == UPSTREAM_IDS.get(model, model)
            assert arrived.headers["x-uniroute-cluster"] == str(expected.cluster)
            assert arrived.headers["x-uniroute-revision"] == str(expected.revision)
            assert int(arrived.headers["content-length"]) == len(arrived.body)
    assert seen == {"coder", "chef", "cheap"}  # the check covered every upstream
    assert scrape(mesh["leader"], "uniroute_routes_total", model="coder", path="extproc") > 0


def test_completions_are_routed(mesh) -> None:
    with openai.OpenAI(base_url=f"http://{mesh['envoy']}/v1", api_key="x", max_retries=0) as c:
        answer = c.completions.create(model="auto", prompt=COOK_PROMPT)
    assert answer.model == "chef" and answer.choices[0].text == "answer from chef"


def test_explicit_models_pass_through_untouched(mesh) -> None:
    body = b'{ "model" : "gpt-4o",\n  "messages": [{"role": "user", "content": "hi"}] }'
    default = mesh["group"].upstreams["default"]
    status, headers, reply = post(mesh["envoy"], body, **{"content-type": "application/json"})
    assert status == 200 and reply["model"] == "default"
    assert default.requests()[-1].body == body  # byte for byte
    assert "x-uniroute-model" not in default.requests()[-1].headers
    assert "x-uniroute-model" not in headers
    with urllib.request.urlopen(f"http://{mesh['envoy']}/v1/models", timeout=10) as listing:
        assert json.loads(listing.read())["data"][0]["id"] == "default"


def test_hints_pick_among_candidates(mesh, client) -> None:
    assert chat(client, CODE_PROMPT)[0] == "coder"
    assert chat(client, CODE_PROMPT, **{"x-uniroute-candidates": "chef,cheap"})[0] == "cheap"
    assert chat(client, CODE_PROMPT, **{"x-uniroute-candidates": "chef"})[0] == "chef"
    assert chat(client, CODE_PROMPT, **{"x-uniroute-cost-weight": "50"})[0] == "cheap"
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, CODE_PROMPT, **{"x-uniroute-candidates": "chef,gpt-9"})
    assert "gpt-9" in info.value.message and info.value.code == "unknown_candidates"
    with pytest.raises(openai.BadRequestError, match="cost-weight"):
        chat(client, CODE_PROMPT, **{"x-uniroute-cost-weight": "-2"})


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"this is not json", 400, "invalid_request"),
        (b'{"model": "auto", "messages": []}', 400, "invalid_request"),
        (IMAGE_ONLY, 400, "invalid_request"),
        (TOO_LARGE, 413, "request_too_large"),
    ],
)
def test_bad_input_gets_its_documented_answer(mesh, body: bytes, status: int, code: str) -> None:
    got, headers, reply = post(mesh["envoy"], body, **{"content-type": "application/json"})
    assert (got, reply["error"]["code"]) == (status, code)
    assert headers["content-type"] == "application/json"
    assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["message"]


def send_chunked(address: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """A body without content-length, so Envoy and the processor learn its size by reading it."""
    connection = http.client.HTTPConnection(address, timeout=30)
    try:
        connection.request("POST", "/v1/chat/completions", body=iter(chunks), encode_chunked=True)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def test_oversized_chunked_bodies_get_413(mesh) -> None:
    head = b'{"model": "auto", "messages": [{"role": "user", "content": "'
    status, data = send_chunked(mesh["envoy"], [head, b"y" * (MAX_BODY + 10), b'"}]}'])
    assert status == 413 and json.loads(data)["error"]["code"] == "request_too_large"
    processor_message = json.loads(data)["error"]["message"]
    status, data = send_chunked(mesh["envoy"], [head, b"y" * (BUFFER + 10), b'"}]}'])
    assert status == 413  # past Envoy's own buffer: Envoy answers, in OpenAI's shape too
    error = json.loads(data)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    assert error["message"] != processor_message and "too_large" in error["message"]


def test_streaming_passes_through(mesh, client) -> None:
    mesh["group"].upstreams["chef"].chunk_delay = 0.05
    try:
        with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": COOK_PROMPT}], stream=True
        ) as response:
            assert response.headers["x-uniroute-model"] == "chef"
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = list(response.parse())
    finally:
        mesh["group"].upstreams["chef"].chunk_delay = 0.0
    assert len(chunks) == 3 and {c.model for c in chunks} == {"chef"}
    assert " ".join(c.choices[0].delta.content or "" for c in chunks) == "answer from chef"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_clients_that_disconnect_leave_no_stream_behind(mesh) -> None:
    leader, envoy = mesh["leader"], mesh["envoy"]
    host, port = envoy.split(":")
    watching = scrape(leader, "uniroute_calls_in_flight")
    for _ in range(10):  # mid-body: the processor has the headers and waits for the body
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                b'\r\ncontent-length: 500\r\n\r\n{"model": "auto", "mess'
            )
            time.sleep(0.05)
    mesh["group"].upstreams["coder"].chunk_delay = 0.2
    try:  # mid-response: an SSE stream dropped after its first event
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                body = json.dumps(
                    {
                        "model": "auto",
                        "stream": True,
                        "messages": [{"role": "user", "content": CODE_PROMPT}],
                    }
                ).encode()
                s.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                assert b"data:" in s.recv(65536) or b"data:" in s.recv(65536)
    finally:
        mesh["group"].upstreams["coder"].chunk_delay = 0.0

    def settled() -> bool:
        return (
            scrape(leader, "uniroute_extproc_streams") == 0
            and scrape(leader, "uniroute_calls_in_flight") == watching  # the follower's Watch
            and scrape(leader, "uniroute_extproc_requests_total", outcome="cancelled") >= 10
        )

    wait_until(settled, timeout=15)


@pytest.mark.slow
def test_a_registration_on_the_leader_reaches_the_followers_envoy(mesh) -> None:
    follower_envoy = mesh["follower_envoy"]
    with openai.OpenAI(base_url=f"http://{follower_envoy}/v1", api_key="x", max_retries=0) as c:
        assert chat(c, COOK_PROMPT)[0] == "chef"
        with mesh["leader"].channel() as channel:
            registered = time.monotonic()
            register(channel, "newcomer", "cook", cost=0.5)  # as right as chef, cheaper
            try:
                wait_until(lambda: chat(c, COOK_PROMPT)[0] == "newcomer", timeout=PROPAGATION)
                print(f"follower's Envoy picked it after {time.monotonic() - registered:.3f} s")
            finally:
                registry_pb2_grpc.RegistryStub(channel).DeregisterModel(
                    registry_pb2.DeregisterModelRequest(name="newcomer"), timeout=10
                )
        wait_until(lambda: chat(c, COOK_PROMPT)[0] == "chef", timeout=PROPAGATION)


@pytest.mark.slow
@pytest.mark.parametrize("allow", [False, True])
def test_a_slow_or_dead_sidecar_is_decided_by_envoys_settings(mesh, allow: bool) -> None:
    """failure_mode_allow false: the client gets an error; true: the request goes on unrouted."""
    group: Mesh = mesh["group"]
    spare = group.sidecar(f"spare-{allow}")  # starter clustering, no models
    envoy = group.envoy(
        f"envoy-spare-{allow}", spare, failure_mode_allow=allow, message_timeout_s=0.3
    )
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, _, reply = post(envoy, body)
    assert (status, reply["error"]["code"]) == (503, "no_models_available")
    default = group.upstreams["default"]

    def outcome() -> tuple[int, Any]:
        before = len(default.requests())
        status, _, reply = post(envoy, body)
        if allow:
            assert default.requests()[before:][-1].json()["model"] == "auto"  # unrouted
        return status, reply

    os.kill(spare.popen.pid, signal.SIGSTOP)  # too slow: alive, but answers nothing
    try:
        started = time.monotonic()
        status, reply = outcome()
        assert time.monotonic() - started < 5
        assert status == (200 if allow else 504), reply
        if not allow:  # Envoy's own reply, in OpenAI's error shape
            assert (reply["error"]["type"], reply["error"]["code"]) == (
                "server_error",
                "gateway_timeout",
            )
    finally:
        os.kill(spare.popen.pid, signal.SIGCONT)
    spare.popen.kill()  # down: nothing listens any more
    spare.popen.wait(timeout=30)
    status, reply = outcome()
    assert status == (200 if allow else 500), reply
    if not allow:
        assert (reply["error"]["type"], reply["error"]["code"]) == ("server_error", "proxy_error")
        assert "ext_proc" in reply["error"]["message"]  # Envoy's details say what failed
