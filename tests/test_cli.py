"""The `sidecar` command as people and CI run it: real subprocesses against a real server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _helpers import CODE_PROMPT, COOK_PROMPT

from sidecar import Registry
from sidecar._clustering import load_clustering
from sidecar._readiness import free_port, wait_serving

SIDECAR = [sys.executable, "-m", "sidecar._cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SIDECAR, *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sidecar {args} failed: {result.stderr}")
    return result


@contextlib.contextmanager
def serving(log_dir: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`sidecar serve` as a real process on a free port; logs go to a file, not a pipe."""
    address = f"127.0.0.1:{free_port()}"
    log_path = log_dir / f"serve-{address.replace(':', '-')}.log"
    with (
        log_path.open("wb") as log,
        subprocess.Popen(
            [*SIDECAR, "serve", "--listen", address, *args], stdout=log, stderr=log
        ) as process,
    ):
        try:
            with grpc.insecure_channel(address) as channel:
                wait_serving(channel, process=process, log=log_path, name="serve")
            yield address, process
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def fitted(topic_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-fit")
    result = run(
        "fit",
        "--train",
        str(topic_files["train"]),
        "--val",
        str(topic_files["val"]),
        "-k",
        "2",
        "--out",
        str(out),
    )
    assert "version=" in result.stdout
    return out, result


@pytest.fixture(scope="module")
def server(fitted, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-db")
    with serving(d, "--db", str(d / "reg.db"), "--artifact", str(fitted[0])) as running:
        yield running


def test_fit_writes_a_loadable_artifact(fitted, embedder):
    out, result = fitted
    clustering = load_clustering(out)
    assert clustering.k == 2
    assert len(clustering.item_ids) == 20
    assert clustering.embedder_fingerprint == embedder.fingerprint
    assert clustering.version in result.stdout
    assert "embedding prompts" in result.stderr  # the progress bar


def test_register_route_models(server, topic_files):
    address, _ = server
    for name, cost in (("coder", "10"), ("chef", "8"), ("cheap", "0.1")):
        result = run(
            "register",
            "--server",
            address,
            "--name",
            name,
            "--cost",
            cost,
            "--results",
            str(topic_files[name]),
            "--label",
            "team=test",
        )
        assert f"registered {name}" in result.stdout
    routed = json.loads(
        run(
            "route", "--server", address, "--prompt", CODE_PROMPT, "--cost-weight", "0", "--json"
        ).stdout
    )
    assert routed["model"] == "coder"
    assert len(routed["scores"]) == 3
    human = run("route", "--server", address, "--prompt", COOK_PROMPT, "--cost-weight", "0")
    assert human.stdout.startswith("chef")
    cheap = run(
        "route",
        "--server",
        address,
        "--prompt",
        COOK_PROMPT,
        "--cost-weight",
        "100",
        "--candidates",
        "chef,cheap",
        "--json",
    )
    assert json.loads(cheap.stdout)["model"] == "cheap"
    models = json.loads(run("models", "--server", address, "--json").stdout)
    assert [m["name"] for m in models] == ["cheap", "chef", "coder"]
    assert models[1]["labels"] == {"team": "test"}
    one = run("models", "--server", address, "--name", "chef")
    assert one.stdout.startswith("chef")


def test_cli_errors_have_clear_messages_and_exit_codes(server, topic_files, tmp_path):
    address, _ = server
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "code-0", "correct": 1}\n{"id": "ghost", "correct": 0}\n')
    result = run(
        "register",
        "--server",
        address,
        "--name",
        "ghosted",
        "--cost",
        "1",
        "--results",
        str(bad),
        check=False,
    )
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr
    assert "ghost" in result.stderr
    assert "Traceback" not in result.stderr

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "code-0", "correct": 1}\nnot json\n')
    result = run(
        "register",
        "--server",
        address,
        "--name",
        "x",
        "--cost",
        "1",
        "--results",
        str(broken),
        check=False,
    )
    assert result.returncode == 2
    assert "broken.jsonl:2" in result.stderr

    result = run(
        "route", "--server", address, "--prompt", "hi", "--candidates", "nobody", check=False
    )
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "nobody" in result.stderr

    result = run(
        "route",
        "--server",
        f"127.0.0.1:{free_port()}",
        "--prompt",
        "hi",
        "--timeout",
        "2",
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr


def test_serve_refuses_corrupt_artifact(tmp_path, fitted):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in fitted[0].iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((corrupt / "clustering.json").read_text())
    manifest["validation"]["items"][0][1] = 1 - manifest["validation"]["items"][0][1]
    (corrupt / "clustering.json").write_text(json.dumps(manifest))
    result = subprocess.run(
        [
            *SIDECAR,
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--db",
            str(tmp_path / "x.db"),
            "--artifact",
            str(corrupt),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "corrupt" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_server_cleanly(fitted, tmp_path):
    with serving(tmp_path, "--db", str(tmp_path / "t.db"), "--artifact", str(fitted[0])) as (
        _,
        process,
    ):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert os.path.getsize(tmp_path / "t.db") > 0


def _serve_fails(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*SIDECAR, "serve", "--listen", f"127.0.0.1:{free_port()}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    return result


def test_serve_refuses_a_corrupt_or_missing_onnx_model(tmp_path, embedder):
    broken = tmp_path / "embedder"
    shutil.copytree(embedder.path, broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    result = _serve_fails(tmp_path, "--db", str(tmp_path / "a.db"), "--embedder", str(broken))
    assert "model.onnx" in result.stderr and "corrupt" in result.stderr
    (broken / "model.onnx").unlink()
    result = _serve_fails(tmp_path, "--db", str(tmp_path / "a.db"), "--embedder", str(broken))
    assert "model.onnx" in result.stderr and "missing" in result.stderr


def test_serve_refuses_a_database_from_a_newer_schema(tmp_path):
    db = tmp_path / "newer.db"
    Registry.open(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    result = _serve_fails(tmp_path, "--db", str(db))
    assert "schema version 99" in result.stderr and "upgrade the sidecar" in result.stderr
