"""Runs every benchmark in sequence, each in its own process, and sums up their goals.

Each bench runs as `python -m bench.NAME ...` in a subprocess in its own
session, with its output streamed through. Stopping run_all stops the bench
and so its servers: SIGTERM or Ctrl-C is forwarded to the bench's process
group as SIGTERM (SIGKILL if it is still there 30 s later), and on Linux the
bench also gets SIGTERM from the kernel if run_all dies without a chance to
forward anything (SIGKILL). Each bench stops its own servers when it is
signalled or reaches its own --time-limit (bench/_common.py); run_all's
per-bench timeout stops a bench the same way. One bench crashing does not
stop the others. A bench module that does not exist yet is skipped with a message; one that
exists but cannot be imported is not run and counts as crashed.

Exit status: 0 when every bench that ran exited 0, whether its goals PASS or
FAIL (goals are reported, never enforced); 1 when any bench crashed, timed out
or could not be imported.

    python -m bench.run_all [--quick] [--only MODULE ...]

--quick (a smoke run, a few minutes on 2 cores) uses fewer rounds, runs and
followers; its numbers are noisier and overwrite the full run's sections of
RESULTS.md like any later run does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parent.parent
VERDICT = re.compile(r"\b(PASS|FAIL)\b")

# (module, full-run arguments, quick-run arguments). Flags for modules owned
# elsewhere are only ones those modules define (throughput and quality are
# expected to accept --quick).
PLAN: list[tuple[str, list[str], list[str]]] = [
    ("bench.kernels", [], ["--quick"]),
    ("bench.route_latency", [], ["--rounds", "4", "--per-round", "25"]),
    ("bench.extproc_latency", [], ["--rounds", "3", "--per-round", "20"]),
    ("bench.throughput", [], ["--quick"]),
    ("bench.startup", [], ["--runs", "1"]),
    (
        "bench.watch_propagation",
        ["--followers", "10", "--registrations", "100"],
        ["--followers", "3", "--registrations", "30"],
    ),
    (
        "bench.registry_replicas",
        [],
        ["--registrations", "30", "--propagation", "20", "--failovers", "2", "--freezes", "0"],
    ),
    ("bench.quality", [], ["--quick"]),
    # The static embedder (issue 10): in process, over gRPC, against a peer, quality.
    ("bench.static_speed", [], ["--quick"]),
    ("bench.static_serving", [], ["--quick"]),
    ("bench.peer", [], ["--quick"]),
    ("bench.quality_static", [], ["--quick"]),
]
TIMEOUT_S = {"full": 45 * 60, "quick": 5 * 60}
STOP_GRACE_S = 30.0  # after SIGTERM, how long a bench gets before SIGKILL
_PR_SET_PDEATHSIG = 1

# Run in a fresh interpreter so importing one bench cannot disturb the others or
# this process. Prints {module: null | [kind, message]}.
_PROBE = """
import importlib, importlib.util, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        if importlib.util.find_spec(name) is None:
            out[name] = ["missing", "module not found"]
            continue
        importlib.import_module(name)
        out[name] = None
    except (Exception, SystemExit) as exc:
        out[name] = ["broken", f"{type(exc).__name__}: {exc}"]
print(json.dumps(out))
"""


@dataclass
class Outcome:
    module: str
    args: list[str]
    status: str  # ok | crashed | timeout | skipped | not importable
    seconds: float = 0.0
    returncode: int | None = None
    detail: str = ""
    verdicts: list[str] = field(default_factory=list)

    @property
    def bad(self) -> bool:
        return self.status in ("crashed", "timeout", "not importable")


def probe(modules: Sequence[str]) -> dict[str, list[str] | None]:
    """Which modules import cleanly; if the probe itself fails, {} (run them all and see)."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, *modules],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode == 0:
            found: dict[str, list[str] | None] = json.loads(result.stdout.strip().splitlines()[-1])
            return found
        problem = result.stderr.strip() or f"exit {result.returncode}"
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        problem = str(exc)
    print(f"import probe failed ({problem}); running every bench", flush=True)
    return {}


def _terminate_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn: the kernel sends the bench SIGTERM if run_all dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # run_all died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


class Terminated(Exception):
    """run_all itself got SIGTERM: stop the running bench, then exit 143."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def run_one(module: str, args: list[str], timeout_s: float) -> Outcome:
    command = [sys.executable, "-m", module, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    verdicts: list[str] = []
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, signalled as a whole
        preexec_fn=_terminate_with_parent(os.getpid()),
    )
    print(f"\n=== {' '.join(['python', '-m', module, *args])} (pid {process.pid})", flush=True)
    timed_out = False

    def stop(_signum: int = 0, _frame: object = None) -> None:
        # First SIGTERM; if the group is still there 30 s later, SIGKILL.
        nonlocal timed_out
        with_group(process, signal.SIGKILL if timed_out else signal.SIGTERM)
        timed_out = True
        signal.setitimer(signal.ITIMER_REAL, STOP_GRACE_S)

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if VERDICT.search(line):
                verdicts.append(line.strip())
        returncode = process.wait()
    except BaseException:  # SIGTERM (Terminated) or Ctrl-C: do not leave the bench behind
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        # While stopping, a repeated SIGTERM or Ctrl-C only escalates to SIGKILL.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: with_group(process, signal.SIGKILL))
        stop_group(process)
        _drain(process)
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.monotonic() - t0
    if timed_out:
        return Outcome(module, args, "timeout", seconds, returncode, f"after {timeout_s:.0f} s")
    status = "ok" if returncode == 0 else "crashed"
    return Outcome(module, args, status, seconds, returncode, "", verdicts)


def _drain(process: subprocess.Popen[str], timeout: float = 5.0) -> None:
    """Passes on what the stopped bench wrote last (e.g. what it stopped), without hanging."""

    def copy() -> None:
        assert process.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in process.stdout:
                sys.stdout.write(line)
        sys.stdout.flush()

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    reader.join(timeout)


def stop_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the bench's group, SIGKILL after STOP_GRACE_S; waits for the bench."""
    with_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with_group(process, signal.SIGKILL)
        process.wait()
    print(f"\n=== stopped the bench, pid {process.pid} (exit {process.returncode})", flush=True)


def with_group(process: subprocess.Popen[str], sig: int) -> None:
    """Signals the bench's own process group (the bench and the servers it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def report(outcomes: Sequence[Outcome], total_s: float, mode: str) -> str:
    lines = [f"\n=== summary ({mode}, {total_s:.0f} s total)"]
    passes = fails = 0
    for o in outcomes:
        what = " ".join([o.module, *o.args])
        if o.status == "skipped":
            lines.append(f"SKIPPED  {what}: {o.detail}")
            continue
        if o.status == "not importable":
            lines.append(f"CRASHED  {what}: not importable: {o.detail}")
            continue
        head = {"ok": "ran", "crashed": "CRASHED", "timeout": "TIMEOUT"}[o.status]
        code = f", exit {o.returncode}" if o.status == "crashed" else ""
        extra = f", {o.detail}" if o.detail else ""
        lines.append(f"{head:8} {what} ({o.seconds:.0f} s{code}{extra})")
        for v in o.verdicts:
            lines.append(f"    {v}")
            passes += len(re.findall(r"\bPASS\b", v))
            fails += len(re.findall(r"\bFAIL\b", v))
    bad = [o for o in outcomes if o.bad]
    lines.append(
        f"goals: {passes} PASS, {fails} FAIL; benches: "
        f"{sum(o.status == 'ok' for o in outcomes)} ran, {len(bad)} crashed, "
        f"{sum(o.status == 'skipped' for o in outcomes)} skipped"
    )
    return "\n".join(lines)


def run_plan(plan: Sequence[tuple[str, list[str]]], mode: str, timeout_s: float) -> int:
    """Runs ``plan`` (module, arguments) in order and prints the summary; the exit status.

    SIGTERM stops the running bench (and so its servers), prints the summary so
    far and returns 143; Ctrl-C does the same and re-raises KeyboardInterrupt.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    t0 = time.monotonic()
    outcomes: list[Outcome] = []
    try:
        importable = probe([module for module, _ in plan])
        for module, bench_args in plan:
            problem = importable.get(module)
            if problem is not None:
                kind, message = problem
                if kind == "missing":
                    print(f"\n=== skipping {module}: it does not exist yet", flush=True)
                    outcomes.append(Outcome(module, bench_args, "skipped", detail="does not exist"))
                else:
                    print(f"\n=== not running {module}: cannot import it: {message}", flush=True)
                    outcomes.append(Outcome(module, bench_args, "not importable", detail=message))
                continue
            outcomes.append(run_one(module, bench_args, timeout_s))
    except Terminated as exc:
        print(report(outcomes, time.monotonic() - t0, mode), flush=True)
        print(f"run_all: stopped by {exc}", flush=True)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report(outcomes, time.monotonic() - t0, mode), flush=True)
    return 1 if any(o.bad for o in outcomes) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="short smoke run (fewer rounds and runs)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="MODULE",
        help="run only these benches (e.g. bench.quality or quality), in the suite's order",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    plan = [(module, quick if args.quick else full) for module, full, quick in PLAN]
    if args.only:
        wanted = {name if name.startswith("bench.") else f"bench.{name}" for name in args.only}
        unknown = wanted - {module for module, _ in plan}
        if unknown:
            parser.error(f"no such bench in the suite: {', '.join(sorted(unknown))}")
        plan = [(module, bench_args) for module, bench_args in plan if module in wanted]
    return run_plan(plan, mode, TIMEOUT_S[mode])


if __name__ == "__main__":
    raise SystemExit(main())
