"""A stand-in upstream LLM: an OpenAI-compatible HTTP server that answers as one model.

The real upstreams are outside the machine, so the mesh tests, `make
mesh-demo` and the ext_proc bench put these on loopback behind Envoy. Each
answers `POST .../chat/completions` and `POST .../completions` with its own
model name (so a client sees which upstream served it) and token usage (one
token per whitespace-separated word), streams Server-Sent Events when asked
(`"stream": true`), and keeps every request it received (path, headers, raw
body) so a test can check exactly what arrived. `GET .../models` lists its
model. Bad requests get an OpenAI-style 400.

    python -m tools.mesh.upstream --port 8001 --model model-a [--chunk-delay 0.05]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as it reached the upstream."""

    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Upstream:
    """The server on a loopback port; ``received`` holds what it was sent, in order."""

    def __init__(
        self,
        model: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chunks: int = 3,
        chunk_delay: float = 0.0,
    ) -> None:
        self.model = model
        self.chunks = chunks  # SSE content chunks per streamed answer
        self.chunk_delay = chunk_delay  # seconds between SSE chunks
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Upstream:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"upstream-{self.model}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def clear(self) -> None:
        with self.lock:
            self.received.clear()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _words(payload: Mapping[str, Any]) -> int:
    """Prompt 'tokens': words in the prompt or in the messages' text."""
    texts: list[str] = []
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        texts.append(prompt)
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return sum(len(str(t).split()) for t in texts)


def _handler(upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate writes; without this, Nagle's
            # algorithm and the peer's delayed ACK add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                listing = {"object": "list", "data": [{"id": upstream.model, "object": "model"}]}
                self._json(200, listing)
            else:
                self._error(404, f"no route for GET {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with upstream.lock:
                upstream.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
            path = self.path.split("?", 1)[0].rstrip("/")
            chat = path.endswith("/chat/completions")
            if not chat and not path.endswith("/completions"):
                self._error(404, f"no route for POST {self.path}")
                return
            try:
                payload = json.loads(body)
                if not isinstance(payload, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._error(400, "the body is not a JSON object")
                return
            usage = {"prompt_tokens": _words(payload), "completion_tokens": 5}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            text = f"answer from {upstream.model}"
            if payload.get("stream"):
                self._stream(chat, text, usage)
            elif chat:
                message = {"role": "assistant", "content": text}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._json(200, self._envelope("chat.completion", choice, usage))
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                self._json(200, self._envelope("text_completion", choice, usage))

        def _envelope(
            self, kind: str, choice: dict[str, Any], usage: dict[str, int] | None
        ) -> dict[str, Any]:
            reply: dict[str, Any] = {
                "id": f"standin-{upstream.model}",
                "object": kind,
                "created": int(time.time()),
                "model": upstream.model,
                "choices": [choice],
            }
            if usage is not None:
                reply["usage"] = usage
            return reply

        def _stream(self, chat: bool, text: str, usage: dict[str, int]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            kind = "chat.completion.chunk" if chat else "text_completion"
            words = text.split()
            pieces = [" ".join(words[i :: upstream.chunks]) for i in range(upstream.chunks)]
            try:
                for i, piece in enumerate(pieces):
                    if chat:
                        choice: dict[str, Any] = {"index": 0, "delta": {"content": piece}}
                    else:
                        choice = {"index": 0, "text": piece}
                    choice["finish_reason"] = "stop" if i == len(pieces) - 1 else None
                    last = i == len(pieces) - 1
                    event = self._envelope(kind, choice, usage if last else None)
                    self._chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
                    if upstream.chunk_delay and not last:
                        time.sleep(upstream.chunk_delay)
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away mid-stream

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _json(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            error = {"message": message, "type": "invalid_request_error", "code": None}
            self._json(status, {"error": error})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.mesh.upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="the model name it answers as")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE chunks")
    args = parser.parse_args()
    upstream = Upstream(args.model, port=args.port, chunk_delay=args.chunk_delay)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    upstream.start()
    print(f"upstream {args.model} on {upstream.address}", flush=True)
    stop.wait()
    upstream.stop()


if __name__ == "__main__":
    main()
