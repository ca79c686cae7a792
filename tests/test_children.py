"""Children that die with their parent: real processes, a real SIGKILL of the parent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sidecar._children import dying_with_parent

needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or not sys.platform.startswith("linux"),
    reason="needs Linux and util-linux's setpriv",
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead, only not yet reaped
        return stat.read().split(")")[1].split()[0] != "Z"


def _program(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().split(b"\0")[0]


@needs_setpriv
def test_the_child_dies_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent_code = textwrap.dedent(
        f"""
        import subprocess, time
        from sidecar._children import dying_with_parent
        child = subprocess.Popen(dying_with_parent(["sleep", "600"]))
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the parent never started its child"
            time.sleep(0.02)
        child = int(pid_file.read_text())
        # Popen returns at fork: setpriv may not have set the signal and exec'd sleep yet.
        while _program(child) != b"sleep":
            assert _alive(child), "the child died before it ran its command"
            assert time.monotonic() < deadline, "setpriv never exec'd the command"
            time.sleep(0.02)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


def test_without_setpriv_the_command_runs_as_it_is(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert dying_with_parent(["postgres", "-D", "x"]) == ["postgres", "-D", "x"]
    with pytest.raises(RuntimeError, match="setpriv"):
        dying_with_parent(["postgres"], "--reuid=postgres")


@needs_setpriv
def test_options_go_to_setpriv_before_the_command():
    command = dying_with_parent(["initdb", "-D", "d"], "--reuid=postgres")
    assert command[1:] == ["--reuid=postgres", "--pdeathsig=KILL", "--", "initdb", "-D", "d"]
