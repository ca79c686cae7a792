"""What every benchmark shares: machine facts, percentiles, writing results, child processes.

Each benchmark writes machine-readable JSON under bench/out/ and replaces its
own section of bench/RESULTS.md, so the file always holds the latest run of
every benchmark with the command that produced it.

Benchmarks start their servers with `spawn` or `sidecar_process` and run
inside `guarded`, so no server outlives its bench (see "Child processes").
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any

import grpc
import numpy as np

from sidecar._children import dying_with_parent
from sidecar._readiness import FAST_RECONNECT, free_port, wait_serving

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


# --- Child processes ------------------------------------------------------------------
#
# A bench that starts servers must leave none behind, however it ends: a normal
# return, an exception, Ctrl-C (SIGINT), SIGTERM (an outer `timeout`, run_all
# stopping it) or its own --time-limit. So:
#
# - every child is started by `spawn`: in its own session, hence its own process
#   group (os.killpg reaches anything it starts too), tracked in _CHILDREN;
# - on Linux each child also gets PR_SET_PDEATHSIG = SIGKILL, so even a bench
#   killed with SIGKILL (which runs no clean-up) takes its children with it;
# - `guarded` (each bench's main runs inside it) turns SIGTERM and SIGINT into a
#   clean exit that first signals every child's group, runs a watchdog for the
#   time limit, and stops and reaps every child on the way out.

EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM death
EXIT_TIME_LIMIT = 124  # what timeout(1) returns
#: After a stop is requested, how long the bench may take to unwind before it
#: kills its children with SIGKILL and exits at once.
STOP_GRACE_S = 30.0

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


class TimeLimitExceeded(SystemExit):
    """Raised in the main thread when a bench runs past its --time-limit."""


def _say(message: str) -> None:
    """One line on stderr, written with os.write: safe inside a signal handler."""
    with contextlib.suppress(OSError):
        os.write(2, (message + "\n").encode())


def spawn(
    command: Sequence[str],
    *,
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    name: str = "child",
) -> subprocess.Popen[bytes]:
    """Starts ``command`` as a tracked child in its own process group; see `stop`."""
    process = subprocess.Popen(
        dying_with_parent(command),
        stdout=log,
        stderr=log,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    with _CHILDREN_LOCK:
        _CHILDREN[process.pid] = process
    _say(f"bench: started {name} (pid {process.pid})")
    return process


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    # Only while the child is unreaped: after that its pid (= its group id) may be reused.
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to the child's whole group, SIGKILL if it is not gone after ``timeout``; reaps it."""
    try:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.pop(process.pid, None)


def signal_children(sig: int) -> None:
    """Sends ``sig`` to every live child's group and returns at once (safe in a signal handler)."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN.values())
    for process in children:
        _signal_group(process, sig)


def stop_children(timeout: float = 10.0) -> None:
    """Stops and reaps every child still tracked."""
    with _CHILDREN_LOCK:
        children = list(_CHILDREN.values())
    for process in children:
        stop(process, timeout)


def children() -> list[int]:
    """Pids of the children started by `spawn` and not yet stopped."""
    with _CHILDREN_LOCK:
        return list(_CHILDREN)


atexit.register(stop_children)


def add_time_limit(parser: argparse.ArgumentParser, default_s: float) -> None:
    parser.add_argument(
        "--time-limit",
        type=float,
        default=default_s,
        metavar="SECONDS",
        help=f"stop (and stop every server started) after this long; 0 = none "
        f"(default {default_s:.0f}); exit status {EXIT_TIME_LIMIT}",
    )


def _hard_exit_after(delay: float, code: int) -> None:
    """Backstop: if the process is still unwinding after ``delay`` s, kill the children, exit."""

    def fire() -> None:
        _say(f"bench: still running {delay:.0f} s after the stop; exiting")
        signal_children(signal.SIGKILL)
        os._exit(code)

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()


@contextmanager
def guarded(time_limit_s: float | None, name: str = "bench") -> Iterator[None]:
    """Runs a bench's body so that it leaves no child process behind, whatever ends it.

    Inside, SIGTERM and SIGINT first signal every child's group with SIGTERM,
    then raise SystemExit(143) or KeyboardInterrupt in the main thread (a repeat
    signal only escalates the children to SIGKILL). After ``time_limit_s``
    seconds (None or 0: no limit) a watchdog thread signals the children itself
    (so they stop even if the main thread is busy in C code) and raises
    TimeLimitExceeded (exit status 124) in the main thread. Once a stop is
    requested the bench has STOP_GRACE_S seconds to unwind before it kills its
    children and exits at once. On the way out every child is stopped and reaped.
    """
    stopping = threading.Event()

    def request_stop(message: str, code: int) -> bool:
        """True the first time; later calls only escalate the children to SIGKILL."""
        if stopping.is_set():
            signal_children(signal.SIGKILL)
            return False
        stopping.set()
        _say(f"{name}: {message}; stopping {len(children())} child process(es)")
        signal_children(signal.SIGTERM)
        _hard_exit_after(STOP_GRACE_S, code)
        return True

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if sig == signal.SIGALRM:  # sent by the watchdog below, which already signalled
            raise TimeLimitExceeded(EXIT_TIME_LIMIT)
        if not request_stop(f"received {sig.name}", 128 + signum):
            return
        if sig == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(EXIT_TERMINATED)

    in_main = threading.current_thread() is threading.main_thread()

    def on_time_limit() -> None:
        # Off the main thread no handler is installed: request_stop's hard exit ends the run.
        if request_stop(f"time limit of {time_limit_s:g} s reached", EXIT_TIME_LIMIT) and in_main:
            os.kill(os.getpid(), signal.SIGALRM)

    previous = (
        {
            sig: signal.signal(sig, on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)
        }
        if in_main
        else {}
    )
    watchdog = None
    if time_limit_s:
        watchdog = threading.Timer(time_limit_s, on_time_limit)
        watchdog.daemon = True
        watchdog.start()
    try:
        yield
    finally:
        if watchdog is not None:
            watchdog.cancel()
        stop_children()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def sidecar_process(workdir: Path, name: str, *args: str) -> Iterator[str]:
    """A `sidecar serve` process on a free port, SERVING before this yields; stopped after."""
    address = f"127.0.0.1:{free_port()}"
    log_path = workdir / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "sidecar._cli",
        "serve",
        "--listen",
        address,
        "--db",
        str(workdir / f"{name}.db"),
        *args,
    ]
    with log_path.open("wb") as log:
        process = spawn(command, log=log, name=name)
        try:
            with grpc.insecure_channel(address, options=FAST_RECONNECT) as channel:
                wait_serving(channel, timeout=120, process=process, log=log_path, name=name)
            _say(f"bench: {name} SERVING at {address}")
            yield address
        finally:
            stop(process)
