"""A throwaway PostgreSQL server for tests, the bench and demos: initdb, start, stop, restart.

It uses the machine's server binaries (``pg_config --bindir``, else the newest
``/usr/lib/postgresql/N/bin``; Debian's ``postgresql`` package installs them).
The cluster lives in a temporary directory, listens on a loopback port with
trust authentication, and is removed on ``close()``. ``postgres`` runs in the
foreground as a direct child with a parent-death signal, so a test or bench
killed outright takes the server with it.

initdb and postgres refuse to run as root. As root (CI) both run as the
unprivileged ``postgres`` user through ``setpriv``, in a directory owned by
that user; ``.ci/run`` creates the user when it is missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from ._children import dying_with_parent
from ._readiness import free_port

RUN_AS = "postgres"  # the unprivileged user initdb and postgres run as under root


def server_bindir() -> Path | None:
    """Where initdb and postgres are, or None when this machine has no server binaries."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0)
    )
    candidates += [Path(p) for p in reversed(versions)]
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    return None


class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary directory; ``with`` it or call close()."""

    def __init__(
        self, *, settings: Mapping[str, str] | None = None, parent: Path | None = None
    ) -> None:
        """``parent``: where the temporary directory goes (default: the system's temp dir)."""
        bindir = server_bindir()
        if bindir is None:
            raise RuntimeError(
                "no PostgreSQL server binaries (initdb, postgres) on this machine: "
                "apt-get install postgresql"
            )
        self.bindir = bindir
        self.port = free_port()
        self.settings = {"listen_addresses": "127.0.0.1", **(settings or {})}
        self.root = Path(tempfile.mkdtemp(prefix="uniroute-pg-", dir=parent))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        self._process: subprocess.Popen[bytes] | None = None
        try:
            if self._as_root:
                user = pwd.getpwnam(RUN_AS)
                os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run(
                [
                    *("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust"),
                    *("-E", "UTF8", "--locale=C", "--no-sync"),
                ]
            )
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bindir / program), *args]
        if self._as_root:
            user = (f"--reuid={RUN_AS}", f"--regid={RUN_AS}", "--init-groups")
            return dying_with_parent(command, *user)
        return dying_with_parent(command)

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            self._command(*command), capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}):\n{result.stderr}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> ThrowawayPostgres:
        """Starts the server and waits until it accepts connections."""
        if self.running:
            return self
        options = [f"-c{key}={value}" for key, value in self.settings.items()]
        command = self._command(
            "postgres", "-D", str(self.data), "-p", str(self.port), "-k", str(self.root), *options
        )
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=log)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{self.log_tail()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not ready in {timeout}s:\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (SIGINT): abort sessions, checkpoint, exit; ``immediate`` (SIGQUIT): a crash."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops a database, closing whatever sessions are still in it."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def close(self) -> None:
        """Stops the server (immediately: it is thrown away) and removes its directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
