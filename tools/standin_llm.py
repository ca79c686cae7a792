"""A stand-in OpenAI-compatible chat endpoint on loopback, for tests and the README walkthrough.

Real LLM endpoints are outside the machine, so tests and demos talk to this
instead, over a real socket. It answers `POST /v1/chat/completions` (no
streaming) deterministically from a table keyed by model and the text of the
last user message, reports usage (one token per whitespace-separated word),
and counts calls per prompt. A reply can be a fault instead of an answer:

- an HTTP status such as `500` or `400`: that status with an OpenAI-style error body
  (`429` also sends `Retry-After`);
- `timeout`: the response comes after `slow_seconds`, past the client's timeout;
- `malformed`: a 200 whose body is not JSON;
- `truncated`: a 200 whose body stops half-way (Content-Length promises more);
- `close`: the connection closes without a response.

Faults are listed per prompt and consumed in order, one per call; the
answer comes after them. `GET /stats` returns the call counts.

    python -m tools.standin_llm --port 8000 \\
        --model frugal-1=examples/sval/answers/frugal-1.jsonl \\
        --model coder-1=examples/sval/answers/coder-1.jsonl --val examples/sval/sval.jsonl
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULTS = ("429", "500", "503", "timeout", "malformed", "truncated", "close")  # and any status
UNKNOWN_ANSWER = "I don't know."


@dataclass
class Script:
    """What one prompt gets: these faults in order, one per call, then the answer."""

    answer: str
    faults: list[str] = field(default_factory=list)


#: A reply function: (model, messages) -> the script for that call; used when no table entry fits.
Responder = Callable[[str, Sequence[Mapping[str, Any]]], Script]


class StandinLLM:
    """The server; `table[(model, prompt)]` or `table[("*", prompt)]` scripts each prompt."""

    def __init__(
        self,
        table: Mapping[tuple[str, str], Script] | None = None,
        *,
        responder: Responder | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_after: float = 0.05,
        slow_seconds: float = 3.0,
        delay_seconds: float = 0.0,
    ) -> None:
        self.table = {key: Script(s.answer, list(s.faults)) for key, s in (table or {}).items()}
        self.responder = responder
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.delay_seconds = delay_seconds
        self.calls: Counter[str] = Counter()  # per last user message
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StandinLLM:
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_reply(self, model: str, messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
        """(fault or "", answer) for this call, counting it."""
        prompt = last_user_text(messages)
        with self.lock:
            self.calls[prompt] += 1
            script = self.table.get((model, prompt)) or self.table.get(("*", prompt))
            if script is None and self.responder is not None:
                script = self.responder(model, messages)
            if script is None:
                return "", UNKNOWN_ANSWER
            fault = script.faults.pop(0) if script.faults else ""
            return fault, script.answer


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def _handler(llm: StandinLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/stats":
                with llm.lock:
                    self._json(200, {"calls": dict(llm.calls)})
            else:
                self._error(404, "not found")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length))
                messages = request["messages"]
                model = str(request["model"])
            except (ValueError, KeyError, TypeError):
                self._error(400, "expected a chat completion request")
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            with llm.lock:
                llm.in_flight += 1
                llm.max_in_flight = max(llm.max_in_flight, llm.in_flight)
            try:
                self._reply(model, messages)
            finally:
                with llm.lock:
                    llm.in_flight -= 1

        def _reply(self, model: str, messages: Sequence[Mapping[str, Any]]) -> None:
            fault, answer = llm.next_reply(model, messages)
            if llm.delay_seconds:
                time.sleep(llm.delay_seconds)
            if fault == "429":
                self._error(429, "rate limited", {"Retry-After": f"{llm.retry_after:g}"})
            elif fault.isdigit():
                self._error(int(fault), f"stand-in error {fault}")
            elif fault == "timeout":
                time.sleep(llm.slow_seconds)
                self._json(200, _completion(model, messages, answer))
            elif fault == "malformed":
                self._raw(200, b'{"id": "chatcmpl-x", "choices": [{"message": ', len_extra=0)
            elif fault == "truncated":
                body = json.dumps(_completion(model, messages, answer)).encode()
                self._raw(200, body[: len(body) // 2], len_extra=len(body) - len(body) // 2)
            elif fault == "close":
                self.close_connection = True
                self.connection.close()
            else:
                self._json(200, _completion(model, messages, answer))

        def _json(self, status: int, body: object, headers: Mapping[str, str] = {}) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _raw(self, status: int, data: bytes, *, len_extra: int) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) + len_extra))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            if len_extra:
                self.close_connection = True
                self.connection.shutdown(2)

        def _error(self, status: int, message: str, headers: Mapping[str, str] = {}) -> None:
            body = {"error": {"message": message, "type": "standin_error", "code": status}}
            self._json(status, body, headers)

    return Handler


def _completion(model: str, messages: Sequence[Mapping[str, Any]], answer: str) -> dict[str, Any]:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_tokens = len(answer.split())
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def table_from_files(
    val: Path, models: Sequence[tuple[str, Path]]
) -> dict[tuple[str, str], Script]:
    """Per-model answers by item id (`{"id", "answer", "faults"?}`), matched to val prompts."""
    prompts: dict[str, str] = {}
    for line in val.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line) if line.strip() else {}
        if "id" in obj:
            prompts[str(obj["id"])] = obj.get("prompt") or last_user_text(obj.get("messages", []))
    table = {}
    for model, path in models:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                obj = json.loads(line)
                key = (model, prompts[str(obj["id"])])
                table[key] = Script(str(obj["answer"]), list(obj.get("faults", [])))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--val", type=Path, required=True, help="the validation file (ids, prompts)"
    )
    parser.add_argument(
        "--model", action="append", default=[], metavar="NAME=ANSWERS.jsonl", help="repeatable"
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args(argv)
    models = [(spec.split("=", 1)[0], Path(spec.split("=", 1)[1])) for spec in args.model]
    llm = StandinLLM(
        table_from_files(args.val, models), port=args.port, delay_seconds=args.delay
    ).start()
    names = ", ".join(name for name, _ in models) or "none"
    print(f"stand-in LLM at {llm.base_url} serving models: {names}", flush=True)
    try:
        assert llm.thread is not None
        llm.thread.join()
    except KeyboardInterrupt:
        llm.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
