"""The package surface and the generated code: what users import and what `make proto` owns."""

from __future__ import annotations

import filecmp
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sidecar

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "sidecar" / "_gen"


def test_public_surface_resolves():
    for name in sidecar.__all__:
        assert getattr(sidecar, name) is not None, name
    with pytest.raises(AttributeError):
        _ = sidecar.NoSuchThing


def test_exception_tree():
    for name in ("InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition"):
        assert issubclass(getattr(sidecar, name), sidecar.SidecarError)
    assert issubclass(sidecar.ArtifactError, sidecar.SidecarError)


def test_client_commands_do_not_load_the_server_stack():
    code = (
        "import sys, sidecar._cli\n"
        "heavy = [m for m in ('numba', 'onnxruntime', 'sklearn', 'torch') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_generated_code_is_up_to_date(tmp_path):
    """sidecar/_gen must be exactly what `make proto` produces from proto/."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        check=True,
        cwd=PROTO_DIR,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc produced nothing"
    for rel in generated:
        assert filecmp.cmp(tmp_path / rel, GEN_DIR / rel, shallow=False), (
            f"{rel} is stale: run `make proto`"
        )


def test_every_proto_field_is_documented():
    """Each field, enum value, message, service and rpc has a comment right above it."""
    declaration = re.compile(
        r"^\s*(message|enum|service|rpc|oneof|optional|repeated|map<|string|bool|double|float|"
        r"int32|int64|uint32|uint64|bytes|google\.protobuf\.|[A-Z][A-Za-z]+\s+\w+\s*=|[A-Z_]+\s*=)"
    )
    undocumented = []
    for path in PROTO_DIR.rglob("*.proto"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if declaration.match(line) and not lines[i - 1].strip().startswith("//"):
                undocumented.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert not undocumented, "\n".join(undocumented)
