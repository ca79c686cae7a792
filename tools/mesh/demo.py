"""`make mesh-demo`: Envoy, the sidecar and three stand-in LLMs on loopback, driven by `openai`.

It starts three stand-in upstream LLMs, a `sidecar serve` leader (the starter
clustering), registers three models graded on the starter validation set,
starts Envoy with the generated config (`sidecar envoy-config`) and sends a
handful of ordinary OpenAI requests with `"model": "auto"` through the
official `openai` client. It prints which model served each, then stops
everything: the sidecar and Envoy run in their own process groups, which are
killed on any exit (a failure, Ctrl-C or SIGTERM included).

    python -m tools.mesh.demo [--keep-running]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

import grpc
import openai
from uniroute.v1 import registry_pb2, registry_pb2_grpc

from sidecar._envoy_config import Upstream as Route
from sidecar._envoy_config import envoy_config
from sidecar._readiness import FAST_RECONNECT, free_port, wait_serving
from sidecar._server import starter_artifact_dir
from tools.mesh.envoy import envoy_command, stop_group, wait_ready
from tools.mesh.upstream import Upstream

VAL = starter_artifact_dir() / "val.jsonl"
# name: (cost, families it answers right, share right elsewhere, upstream model id)
MODELS = {
    "small-chat": (0.1, {"casual_chat", "creative_writing", "translation", "summarization"}, 0.2),
    "coder": (1.0, {"python_coding", "sql_data", "web_debugging"}, 0.5),
    "math-pro": (3.0, {"advanced_math", "math_word_problem", "science_qa"}, 0.7),
}
UPSTREAM_IDS = {"coder": "coder-2024-07-18"}  # coder's upstream knows it by another id
REQUESTS = [
    ("auto", "Write a Python function that merges two sorted lists.", {}),
    ("auto", "A train travels 120 km in 1.5 hours. What is its average speed?", {}),
    ("auto", "Translate 'see you tomorrow at the station' into Spanish.", {}),
    ("auto", "My neighbour's dog barks all night. How do I bring it up politely?", {}),
    ("auto", "Prove that the square root of 2 is irrational.", {"x-uniroute-cost-weight": "5"}),
    (
        "auto",
        "Write a Python function that merges two sorted lists.",
        {"x-uniroute-candidates": "small-chat,math-pro"},
    ),
    ("math-pro", "An explicit model passes through untouched.", {}),
]


class Stopped(SystemExit):
    """SIGTERM: unwind through the finally clauses that stop every process."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Stopped(143)


def register_models(address: str) -> None:
    items = [json.loads(line) for line in VAL.read_text().splitlines() if line.strip()]
    with grpc.insecure_channel(address) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        for name, (cost, good, elsewhere) in MODELS.items():
            results = [
                registry_pb2.ValidationResult(
                    item_id=item["id"],
                    score=1.0 if item["family"] in good else float(n % 10 < elsewhere * 10),
                )
                for n, item in enumerate(items)
            ]
            labels = {"upstream_model": UPSTREAM_IDS[name]} if name in UPSTREAM_IDS else {}
            stub.RegisterModel(
                registry_pb2.RegisterModelRequest(
                    name=name,
                    cost=cost,
                    labels=labels,
                    results=registry_pb2.ValidationResults(results=results),
                ),
                timeout=10,
            )
            upstream_id = labels.get("upstream_model", name)
            print(f"registered {name:10} cost {cost:<4} upstream model id {upstream_id}")


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def run(workdir: Path, keep_running: bool) -> None:
    processes: list[subprocess.Popen[bytes]] = []
    upstreams = {name: Upstream(name).start() for name in MODELS}
    default = Upstream("default-gateway").start()
    try:
        sidecar_address = f"127.0.0.1:{free_port()}"
        sidecar_log = workdir / "sidecar.log"
        sidecar = start(
            [
                *(sys.executable, "-m", "sidecar._cli", "serve"),
                *("--listen", sidecar_address, "--db", str(workdir / "registry.db")),
            ],
            sidecar_log,
        )
        processes.append(sidecar)
        print(f"sidecar starting on {sidecar_address} (log {sidecar_log})")
        with grpc.insecure_channel(sidecar_address, FAST_RECONNECT) as channel:
            wait_serving(channel, process=sidecar, log=sidecar_log, timeout=120)
        register_models(sidecar_address)

        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        config = workdir / "envoy.yaml"
        config.write_text(
            envoy_config(
                [Route(name, upstream.address) for name, upstream in upstreams.items()],
                default=default.address,
                sidecar=sidecar_address,
                listen=listen,
                admin=admin,
            )
        )
        envoy_log = workdir / "envoy.log"
        envoy = start(envoy_command(config), envoy_log)
        processes.append(envoy)
        wait_ready(admin, envoy, log=envoy_log)
        print(f"envoy listening on {listen} (config {config})\n")

        with openai.OpenAI(base_url=f"http://{listen}/v1", api_key="unused", max_retries=0) as c:
            print(f"{'asked for':10} {'served by':16} {'routed to':10} prompt")
            for model, prompt, headers in REQUESTS:
                raw = c.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt}],
                    extra_headers=headers,
                )
                answer = raw.parse()
                routed = raw.headers.get("x-uniroute-model", "-")
                hint = " ".join(f"[{k}: {v}]" for k, v in headers.items())
                print(f"{model:10} {answer.model:16} {routed:10} {prompt[:48]} {hint}".rstrip())
            stream = c.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "Tell me a two-line poem about rain."}],
                stream=True,
            )
            pieces = [(chunk.model, chunk.choices[0].delta.content or "") for chunk in stream]
            words = " ".join(text for _, text in pieces)
            served = pieces[0][0]
            print(f"{'auto':10} {served:16} {'(stream)':10} {len(pieces)} SSE chunks: {words}")
        if keep_running:
            print(f"\nEnvoy on {listen}, sidecar on {sidecar_address}; Ctrl-C stops them")
            signal.pause()
    finally:
        for process in reversed(processes):
            stop_group(process)
        for upstream in (*upstreams.values(), default):
            upstream.stop()
        print("\nstopped envoy, the sidecar and the stand-in upstreams")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mesh.demo", description=__doc__)
    parser.add_argument("--keep-running", action="store_true", help="serve until Ctrl-C")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    with tempfile.TemporaryDirectory(prefix="uniroute-mesh-") as workdir:
        try:
            run(Path(workdir), args.keep_running)
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
