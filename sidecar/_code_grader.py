"""The `code` grader: run the answer's code and the item's tests in a sandboxed subprocess.

A hanging or hostile answer must not hurt the runner. Each run is a fresh
`python -I` whose bootstrap, before any answer code, sets up:

- a temporary working directory, also its HOME and TMPDIR, removed afterwards;
- resource limits: address space (memory), CPU seconds, the size of any file
  written (its own output included), no core dumps;
- when the kernel allows it (as root, or with unprivileged user namespaces):
  its own network namespace, so no network at all (not even loopback), and
  its own mount namespace in which every mount is read-only except the
  working directory, so a write anywhere else fails with EROFS;
- no capabilities and no_new_privs, so even as root it cannot remount,
  change owners or signal other processes;
- a Python audit hook, impossible to remove from Python, that refuses
  sockets, subprocesses, fork, exec, ctypes and signals, and writes, renames
  or deletes outside the working directory. It is the one layer present on
  every machine; alone it is best effort (an in-process guard);
- a wall-clock time limit, after which the whole process group is killed.

`Sandbox.probe()` finds which kernel layers this machine grants; the
evaluation summary records it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._graders import Grade

if TYPE_CHECKING:
    from ._valset import Item

# The child's first code: limits, namespaces, a read-only file system, no capabilities,
# the audit hook, then the program. argv: program path, memory bytes, cpu s, file-size bytes.
_BOOTSTRAP = r"""
import ctypes, os, resource, sys
program, memory, cpu, fsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
root = os.path.realpath(os.getcwd())
status = {"netns": False, "readonly_fs": False, "no_capabilities": False}
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) == 0:
    status["netns"] = True
elif libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) == 0:
    status["netns"] = True
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
if status["netns"]:
    # Every mount read-only except the working directory, in this process's own namespace.
    ok = libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0
    ok = ok and libc.mount(root.encode(), root.encode(), None, MS_BIND, None) == 0
    if ok:
        with open("/proc/self/mountinfo") as f:
            mounts = [(line.split()[4], line.split()[5]) for line in f]
        for point, options in reversed(mounts):
            point = point.replace("\\040", " ")
            if point == root:
                continue
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY
            for option, bit in (("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC)):
                flags |= bit if option in options.split(",") else 0
            ok = libc.mount(None, point.encode(), None, flags, None) == 0 and ok
        status["readonly_fs"] = ok
        os.chdir(root)  # the old cwd is the directory under the bind mount: step onto it
# No capabilities, and no way to gain any: root can no longer remount, chown or kill.
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
for cap in range(64):
    libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
status["no_capabilities"] = libc.capset(header, data) == 0
libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
del ctypes, libc
for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
    del sys.modules[name]  # a fresh `import ctypes` must dlopen, which the hook refuses

def _inside(path):
    if isinstance(path, int):
        return True
    try:
        real = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return real == root or real.startswith(root + os.sep)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown",
                "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree",
                "shutil.copyfile", "shutil.copytree", "shutil.move", "os.chflags", "os.lchown"}
_REFUSED = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym",
            "ctypes.cdata", "ctypes.call_function", "os.startfile", "pty.spawn",
            "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
            "socket.gethostbyname", "socket.sendto", "sys.addaudithook", "os.chroot",
            "mmap.__new__"}

def _guard(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the working directory: {path!r}")
    elif event in _PATH_EVENTS:
        for arg in args:
            if isinstance(arg, (str, bytes, os.PathLike)) and not _inside(arg):
                raise PermissionError(f"sandbox: {event} outside the working directory")
    elif event in _REFUSED:
        raise PermissionError(f"sandbox: {event} is not allowed")

sys.addaudithook(_guard)
sys.argv = [program]
with open(program, encoding="utf-8") as f:
    source = f.read()
namespace = {"__name__": "__main__", "__file__": program, "__sandbox__": status}
exec(compile(source, program, "exec"), namespace)
"""


@dataclass(frozen=True)
class CodeLimits:
    """What one run may use; an answer over any limit fails its item."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    output_kb: int = 1024


@dataclass(frozen=True)
class Sandbox:
    """Which kernel layers this machine grants, found once by `probe()`."""

    network_namespace: bool
    read_only_fs: bool
    no_capabilities: bool

    @classmethod
    def probe(cls) -> Sandbox:
        """Runs a program in the sandbox that prints the status the bootstrap recorded."""
        outcome = _run("import json\nprint(json.dumps(__sandbox__))\n", CodeLimits(timeout_s=30))
        try:
            status = json.loads(outcome.stdout)
        except ValueError:
            status = {}
        return cls(
            bool(status.get("netns")),
            bool(status.get("readonly_fs")),
            bool(status.get("no_capabilities")),
        )

    def describe(self) -> str:
        """The layers in force, for the summary: a reader can tell how strong the sandbox was."""
        layers = ["network namespace"] if self.network_namespace else []
        layers += ["read-only mounts but the work dir"] if self.read_only_fs else []
        layers += ["no capabilities"] if self.no_capabilities else []
        layers += ["rlimits", "temp work dir", "audit hook", "process-group kill"]
        text = ", ".join(layers)
        if not self.network_namespace:
            text += " (no namespaces here: only the audit hook refuses sockets and outside writes)"
        return text


@dataclass(frozen=True)
class Outcome:
    passed: bool
    reason: str
    stdout: str = ""


_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(answer: str) -> str:
    """The answer's Python: its fenced python (or unlabelled) blocks joined, or all of it."""
    blocks = [
        body
        for lang, body in _FENCE.findall(answer)
        if lang.lower() in ("", "python", "py", "python3")
    ]
    return "\n\n".join(blocks) if blocks else answer


def grade_code(answer: str, item: Item, limits: CodeLimits) -> Grade:
    """1 if setup + the answer's code + the item's tests run to completion, else 0."""
    code = extract_code(answer)
    if not code.strip():
        return Grade(0.0, "no code in the answer")
    program = "\n\n".join(
        part for part in (item.options.get("setup", ""), code, item.options["tests"]) if part
    )
    outcome = _run(program, limits)
    return Grade(float(outcome.passed), outcome.reason)


def _run(program: str, limits: CodeLimits) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-code-"))
    try:
        (workdir / "answer.py").write_text(program, encoding="utf-8")
        argv = [
            sys.executable,
            "-I",
            "-c",
            _BOOTSTRAP,
            str(workdir / "answer.py"),
            str(limits.memory_mb * 1024 * 1024),
            str(int(limits.timeout_s) + 1),
            str(limits.output_kb * 1024),
        ]
        env = {
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with (workdir / ".stdout").open("wb") as out, (workdir / ".stderr").open("wb") as err:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return Outcome(False, f"timed out after {limits.timeout_s:g} s")
            finally:
                _kill_group(proc)
        if code == 0:
            stdout = (workdir / ".stdout").read_bytes()[:65536].decode("utf-8", "replace")
            return Outcome(True, "tests passed", stdout)
        return Outcome(False, _failure_reason(code, workdir / ".stderr"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kills the run's whole process group (anything it started), then reaps it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _failure_reason(code: int, stderr: Path) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else code
        return f"killed by {name}"
    try:
        lines = stderr.read_bytes()[-4096:].decode("utf-8", "replace").strip().splitlines()
    except OSError:
        lines = []
    return f"exit {code}: {lines[-1][:200] if lines else 'no output'}"
