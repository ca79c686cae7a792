"""`sidecar serve --processes N`: N serving processes that share one listening port.

Why: one Python process runs one thread at a time, and gRPC's own per-call
work (about 350 µs of CPU per call on these machines, more than a static
Route's) then caps a sidecar at one core's worth of calls, however many cores
it has. N processes each bind the same port with SO_REUSEPORT and the kernel
spreads *connections* (not calls) over them, so it pays off with several
client connections: a mesh of Envoys, or a client with a channel per worker.

Process 0, the one started, serves first; then it starts siblings 1..N-1 with
its own command line plus ``--process-index I`` and waits until each reports
SERVING through a pipe. It supervises them: a sibling that exits stops the
whole group with an error, so the orchestrator restarts it as one unit, and
every sibling gets SIGKILL if process 0 dies (a parent-death signal).

What the processes share and what each keeps is decided by
``sibling_settings``: a leader's processes share its store (SQLite's announcer
notices the others' commits; PostgreSQL replicas always did); a follower's
each keep their own copy; ``--metrics-listen`` moves up one port per process.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._children import dying_with_parent
from ._errors import ArtifactError, InvalidArgument
from ._store import is_postgres

log = logging.getLogger("sidecar")

READY = b"ready\n"


@dataclass(frozen=True)
class SiblingSettings:
    """What process ``index`` of a group changes in the command line it shares."""

    db: str
    metrics_listen: str | None
    activate_artifact: bool  # only process 0 activates --artifact; the rest find it stored


def check_group(listen: str, processes: int) -> None:
    """Refuses what SO_REUSEPORT cannot share: unix sockets and port 0."""
    if processes < 1:
        raise InvalidArgument(f"--processes must be at least 1, got {processes}")
    if processes == 1:
        return
    if listen.startswith(("unix:", "unix-abstract:")):
        raise InvalidArgument(
            f"--processes {processes} shares a TCP port between processes; {listen} is a unix "
            "socket. Listen on HOST:PORT, or run one process per socket"
        )
    if listen.rpartition(":")[2] == "0":
        raise InvalidArgument(
            f"--processes {processes} needs a fixed port to share; {listen} asks for any free "
            "port, which would give every process its own"
        )


def sibling_settings(
    index: int, db: str, metrics_listen: str | None, *, follow: bool
) -> SiblingSettings:
    """Process ``index``'s own values (process 0 keeps the command line's)."""
    if index == 0:
        return SiblingSettings(db, metrics_listen, activate_artifact=True)
    if follow and not is_postgres(db):
        # A follower applies the leader's revisions to its copy: two processes
        # applying them to one file would each write every revision.
        path = Path(db.removeprefix("sqlite://"))
        db = str(path.with_name(f"{path.name}.{index}"))
    if metrics_listen:
        host, _, port = metrics_listen.rpartition(":")
        if port != "0":
            metrics_listen = f"{host}:{int(port) + index}"
    return SiblingSettings(db, metrics_listen, activate_artifact=False)


class ProcessGroup:
    """Siblings 1..N-1 of a serving process: started, awaited, supervised, stopped."""

    def __init__(
        self,
        argv: Sequence[str],
        processes: int,
        *,
        ready_timeout: float = 300.0,
        python: str = sys.executable,
    ) -> None:
        """``argv``: the serve command line (after the program name) that started process 0."""
        self._argv = list(argv)
        self._count = processes - 1
        self._ready_timeout = ready_timeout
        self._python = python
        self.children: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self.failure: str | None = None  # why the group stopped on its own

    def start(self, on_failure: Callable[[], None], cancel: threading.Event) -> None:
        """Starts every sibling and returns once all are SERVING; ``on_failure`` if one exits.

        Raises ArtifactError (after stopping the ones started) if one exits or
        stays silent past ``ready_timeout``: its own log says why. Returns early,
        siblings stopped, once ``cancel`` is set (a SIGTERM during start-up).
        """
        pipes: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for index in range(1, self._count + 1):
                read_end, write_end = os.pipe()
                command = [
                    self._python,
                    "-m",
                    "sidecar._cli",
                    *self._argv,
                    "--process-index",
                    str(index),
                    "--ready-fd",
                    str(write_end),
                ]
                try:
                    # A session of its own: a terminal's Ctrl-C reaches process 0
                    # only, which stops the siblings itself (see stop).
                    child = subprocess.Popen(
                        dying_with_parent(command), pass_fds=(write_end,), start_new_session=True
                    )
                finally:
                    os.close(write_end)
                self.children.append(child)
                pipes[read_end] = child
            self._await_ready(pipes, cancel)
            if cancel.is_set():
                self.stop(grace=0)
                return
        except BaseException:
            self.stop(grace=0)
            raise
        finally:
            for read_end in pipes:
                os.close(read_end)
        for index, child in enumerate(self.children, start=1):
            threading.Thread(
                target=self._supervise,
                args=(index, child, on_failure),
                name=f"process-{index}",
                daemon=True,
            ).start()

    def _await_ready(
        self, pipes: dict[int, subprocess.Popen[bytes]], cancel: threading.Event
    ) -> None:
        waiting = dict(pipes)
        deadline = time.monotonic() + self._ready_timeout
        while waiting and not cancel.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                pids = ", ".join(str(child.pid) for child in waiting.values())
                raise ArtifactError(
                    f"serving process(es) {pids} did not report SERVING within "
                    f"{self._ready_timeout:.0f} s; see their log lines"
                )
            readable, _, _ = select.select(list(waiting), [], [], min(left, 0.25))
            for read_end in readable:
                child = waiting.pop(read_end)
                if os.read(read_end, len(READY)) != READY:  # EOF: it exited before SERVING
                    code = child.wait()
                    raise ArtifactError(
                        f"serving process {child.pid} exited with code {code} before SERVING; "
                        "its log lines above say why"
                    )

    def _supervise(
        self, index: int, child: subprocess.Popen[bytes], on_failure: Callable[[], None]
    ) -> None:
        code = child.wait()
        if self._stopping.is_set():
            return
        self.failure = f"serving process {index} (pid {child.pid}) exited with code {code}"
        log.error("%s; stopping the group so that it restarts as one", self.failure)
        on_failure()

    def stop(self, grace: float) -> None:
        """SIGTERM to every sibling (each drains for ``grace``), then SIGKILL the late ones."""
        self._stopping.set()
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + 10.0
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("serving process %d did not stop in time; killing it", child.pid)
                child.kill()
                child.wait()


def report_ready(fd: int | None) -> None:
    """A sibling tells process 0 it is SERVING (no-op for process 0 itself)."""
    if fd is None:
        return
    try:
        os.write(fd, READY)
    finally:
        os.close(fd)
