"""What every benchmark shares: machine facts, percentiles, and writing results.

Each benchmark writes machine-readable JSON under bench/out/ and replaces its
own section of bench/RESULTS.md, so the file always holds the latest run of
every benchmark with the command that produced it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
RESULTS_MD = BENCH_DIR / "RESULTS.md"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def summarise_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9 and mean in milliseconds, from samples in seconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "p99.9": float(np.percentile(a, 99.9)),
        "mean": float(a.mean()),
    }


def command_line() -> str:
    """The command that is running, as someone would retype it."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else f"python {sys.argv[0]}"
    return " ".join([program, *sys.argv[1:]])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def record(name: str, data: dict[str, Any], markdown: str) -> Path:
    """Writes bench/out/<name>.json, replaces the <name> section of RESULTS.md, prints both."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "command": command_line(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **data,
    }
    out = OUT_DIR / f"{name}.json"
    out.write_text(json.dumps(payload, indent=1) + "\n")
    m = payload["machine"]
    section = (
        f"<!-- BEGIN {name} -->\n"
        f"## {name}\n\n"
        f"Command: `{payload['command']}`  \n"
        f"Run: {payload['time']} on {m['cores']} cores, {m['cpu']}, "
        f"load average {m['load_average']}\n\n"
        f"{markdown.strip()}\n"
        f"<!-- END {name} -->"
    )
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    pattern = re.compile(
        rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else (text.rstrip() + "\n\n" + section + "\n")
    )
    RESULTS_MD.write_text(text)
    print(markdown.strip())
    print(f"\nwrote {out} and the {name} section of {RESULTS_MD}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sidecar_process(workdir: Path, name: str, *args: str) -> Iterator[str]:
    """A `sidecar serve` process on a free port, SERVING before this yields."""
    address = f"127.0.0.1:{free_port()}"
    log_path = workdir / f"{name}.log"
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sidecar._cli",
                "serve",
                "--listen",
                address,
                "--db",
                str(workdir / f"{name}.db"),
                *args,
            ],
            stdout=log,
            stderr=log,
        ) as process,
    ):
        try:
            wait_serving(address, process, log_path)
            yield address
        finally:
            process.terminate()
            process.wait(timeout=30)


def wait_serving(address: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 120
    # A short reconnect backoff, so SERVING is seen within ~50 ms rather than ~1 s.
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 50)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{address} exited: {log_path.read_text()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"{address} did not become SERVING")
