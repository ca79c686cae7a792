"""Bench hygiene: no benchmark leaves a server behind, and the README quotes no results.

Each case starts a real bench, `python -m bench.watch_propagation` with a
real leader and real follower processes (or run_all running it), as a
subprocess. It waits until the servers are SERVING (bench/_common.py logs
"bench: started NAME (pid P)" and "bench: NAME SERVING at ADDR"), stops the
bench as an operator, an outer `timeout` or the bench's own --time-limit
would, and checks that the bench exits and that no server process, and no
process in a server's process group, survives.

Before issue 8 a SIGTERM killed the bench at once and its servers kept
running (reparented to init); that is the leak these tests pin.

The last test keeps benchmark numbers in one place: bench/RESULTS.md, which
each bench rewrites. The README's Benchmarks section links to it and must not
quote measurements, which would go stale with the next run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).absolute().parent.parent
STARTED = re.compile(r"bench: started (\S+) \(pid (\d+)\)")
SERVING = re.compile(r"bench: (\S+) SERVING at ")
BENCH_PID = re.compile(r"^=== python -m bench\.watch_propagation .*\(pid (\d+)\)$")
# Enough registrations that the bench is still measuring when it is stopped.
ENDLESS = ["--registrations", "1000000"]
STARTUP_TIMEOUT_S = 40.0
EXIT_TIMEOUT_S = 30.0
TINY_LIMIT_S = 6

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to find surviving processes"
)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of a live pid from /proc, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2]), int(fields[19])


def survivors(started: dict[int, int]) -> list[str]:
    """Processes that outlived the bench: each started pid (same start time, not a zombie)
    and any process whose group is one of theirs."""
    alive = []
    for pid, start_time in started.items():
        stat = proc_stat(pid)
        if stat is not None and stat[0] not in "ZX" and stat[2] == start_time:
            alive.append(f"pid {pid} (state {stat[0]})")
    groups = set(started)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat is not None and stat[0] not in "ZX" and stat[1] in groups:
            alive.append(f"pid {entry.name} in group {stat[1]}")
    return sorted(set(alive))


class Bench:
    """A bench subprocess whose output is read line by line in the background."""

    def __init__(self, args: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so signals here never reach pytest
        )
        self.lines: list[str] = []
        self.started: dict[int, int] = {}  # server pid -> its start time, from /proc
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                match = STARTED.search(line)
                if match:
                    pid = int(match.group(2))
                    stat = proc_stat(pid)
                    self.started[pid] = stat[2] if stat is not None else -1
                self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], count: int, timeout: float) -> list[str]:
        """Blocks until ``count`` output lines match ``pattern``; returns them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if pattern.search(line)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"wanted {count} lines like {pattern.pattern!r}; output:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(left, 0.5))

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the bench did not exit within {timeout} s; output:\n{self.output()}"
            ) from None

    def kill_everything(self) -> None:
        """Teardown safety net: a failing test must not leak either."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in list(self.started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()


def watch_bench(*extra: str) -> list[str]:
    return ["-m", "bench.watch_propagation", "--followers", "1", *ENDLESS, *extra]


def run_all_script() -> list[str]:
    plan = [("bench.watch_propagation", ["--followers", "1", *ENDLESS])]
    return [
        "-c",
        "from bench.run_all import run_plan; "
        f"raise SystemExit(run_plan({plan!r}, 'test', timeout_s=300))",
    ]


@pytest.fixture(scope="module")
def benches() -> Iterator[dict[str, Bench]]:
    """Every case's bench, started at once so their start-ups overlap; each test stops its
    own. Whatever is left of any of them is killed at teardown."""
    started: dict[str, Bench] = {}
    try:
        started["SIGTERM"] = Bench(watch_bench("--time-limit", "300"))
        started["SIGINT"] = Bench(watch_bench("--time-limit", "300"))
        started["time limit"] = Bench(watch_bench("--time-limit", str(TINY_LIMIT_S)))
        started["run_all"] = Bench(run_all_script())
        yield started
    finally:
        for b in started.values():
            b.kill_everything()


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize(
    ("sig", "expected"),
    [(signal.SIGTERM, (128 + signal.SIGTERM,)), (signal.SIGINT, (-signal.SIGINT, 130))],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signalled_bench_stops_every_server(
    benches: dict[str, Bench], sig: signal.Signals, expected: tuple[int, ...]
) -> None:
    b = benches[sig.name]
    b.wait_for(SERVING, 2, STARTUP_TIMEOUT_S)
    assert len(b.started) == 2
    assert [p for p in b.started if proc_stat(p) is None] == [], "servers should be running"

    os.kill(b.process.pid, sig)
    code = b.wait(EXIT_TIMEOUT_S)

    assert code in expected, b.output()
    assert f"received {sig.name}" in b.output()
    assert survivors(b.started) == [], b.output()


@pytest.mark.slow
@linux_only
def test_a_bench_past_its_time_limit_stops_every_server(benches: dict[str, Bench]) -> None:
    b = benches["time limit"]
    code = b.wait(STARTUP_TIMEOUT_S + EXIT_TIMEOUT_S)

    assert code == 124, b.output()
    assert f"time limit of {TINY_LIMIT_S} s reached" in b.output()
    assert b.started, f"the bench started no server before its limit:\n{b.output()}"
    assert survivors(b.started) == [], b.output()


@pytest.mark.slow
@linux_only
def test_run_all_forwards_sigterm_to_the_bench_and_its_servers(
    benches: dict[str, Bench],
) -> None:
    b = benches["run_all"]
    b.wait_for(SERVING, 2, STARTUP_TIMEOUT_S)
    (header,) = b.wait_for(BENCH_PID, 1, 1.0)
    match = BENCH_PID.search(header)
    assert match is not None
    bench_pid = int(match.group(1))
    bench_stat = proc_stat(bench_pid)
    assert bench_stat is not None
    b.started[bench_pid] = bench_stat[2]

    os.kill(b.process.pid, signal.SIGTERM)
    code = b.wait(EXIT_TIMEOUT_S + 5)

    assert code == 128 + signal.SIGTERM, b.output()
    assert "bench.watch_propagation: received SIGTERM" in b.output()
    assert survivors(b.started) == [], b.output()


README = REPO / "README.md"
# A decimal number, a number with a unit of time, size or ratio, or a table row.
MEASUREMENT = re.compile(
    r"\d\.\d|\d\s*(?:ms|µs|us|ns|s|MB|MiB|GB|GiB)\b|\d\s*[×%]|^\|", re.MULTILINE
)


def test_the_readme_benchmarks_section_quotes_no_measurement() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Benchmarks\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    prose = re.sub(r"```.*?```", "", section, flags=re.DOTALL)  # commands may carry numbers
    found = [m.group(0) for m in MEASUREMENT.finditer(prose)]
    assert found == [], (
        f"README's Benchmarks section quotes measurements {found}: put numbers in "
        "bench/RESULTS.md (written by the benches) and link to it"
    )
