"""The code grader: right answers pass, and hanging or hostile answers fail without harm."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from sidecar._code_grader import CodeLimits, Sandbox, extract_code, grade_code
from sidecar._valset import Item, read_valset

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
LIMITS = CodeLimits(timeout_s=3.0, memory_mb=256)


def add_item(tmp_path: Path) -> Item:
    path = tmp_path / "code.jsonl"
    line = {"id": "add", "prompt": "Write add(a, b).", "grader": "code", "tests": TESTS}
    path.write_text(json.dumps(line) + "\n")
    return read_valset(path)[0]


def fenced(code: str) -> str:
    return f"Sure! Here is the function:\n\n```python\n{code}\n```\n\nHope this helps."


def test_right_answer_passes(tmp_path: Path) -> None:
    grade = grade_code(fenced("def add(a, b):\n    return a + b"), add_item(tmp_path), LIMITS)
    assert grade.score == 1.0, grade.detail


def test_wrong_answer_fails_with_the_reason(tmp_path: Path) -> None:
    grade = grade_code(fenced("def add(a, b):\n    return a - b"), add_item(tmp_path), LIMITS)
    assert grade.score == 0.0
    assert "AssertionError" in grade.detail


def test_prose_and_empty_answers_fail(tmp_path: Path) -> None:
    item = add_item(tmp_path)
    assert grade_code("I cannot help with that.", item, LIMITS).score == 0.0
    assert grade_code("", item, LIMITS).detail == "no code in the answer"


def test_setup_runs_before_the_answer(tmp_path: Path) -> None:
    path = tmp_path / "code.jsonl"
    line = {
        "id": "s",
        "prompt": "p",
        "grader": "code",
        "setup": "from typing import List",
        "tests": "assert total([1, 2]) == 3",
    }
    path.write_text(json.dumps(line) + "\n")
    item = read_valset(path)[0]
    answer = fenced("def total(xs: List[int]) -> int:\n    return sum(xs)")
    assert grade_code(answer, item, LIMITS).score == 1.0


def test_extract_code() -> None:
    two_blocks = "```python\nimport math\n```\ntext\n```py\nx = math.pi\n```\n```text\nout\n```"
    assert extract_code(two_blocks) == "import math\n\n\nx = math.pi\n"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    assert extract_code("```\nprint(1)\n```") == "print(1)\n"
    assert extract_code("```python\nprint(1)") == "print(1)"  # an unclosed fence


def test_an_endless_loop_is_killed_at_the_time_limit(tmp_path: Path) -> None:
    started = time.monotonic()
    answer = fenced("def add(a, b):\n    while True:\n        pass")
    grade = grade_code(answer, add_item(tmp_path), CodeLimits(timeout_s=1.0))
    assert grade.score == 0.0
    assert "timed out" in grade.detail
    assert time.monotonic() - started < 10


def test_unbounded_allocation_hits_the_memory_limit(tmp_path: Path) -> None:
    answer = fenced("blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))")
    grade = grade_code(answer, add_item(tmp_path), LIMITS)
    assert grade.score == 0.0
    assert "MemoryError" in grade.detail


def test_flooding_the_output_is_cut_off(tmp_path: Path) -> None:
    answer = fenced("while True:\n    print('x' * 10_000)")
    grade = grade_code(answer, add_item(tmp_path), CodeLimits(timeout_s=5.0, output_kb=64))
    assert grade.score == 0.0
    assert "timed out" not in grade.detail


def test_no_network(tmp_path: Path) -> None:
    """A listener on loopback in this process: the answer must not reach it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]
        answer = fenced(
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
            "def add(a, b):\n    return a + b"
        )
        grade = grade_code(answer, add_item(tmp_path), LIMITS)
        assert grade.score == 0.0
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected


def test_raw_sockets_are_refused_too(tmp_path: Path) -> None:
    answer = fenced("import _socket\n_socket.socket()\ndef add(a, b):\n    return a + b")
    grade = grade_code(answer, add_item(tmp_path), LIMITS)
    assert grade.score == 0.0


@pytest.mark.parametrize(
    "attack",
    [
        "open({target!r}, 'w').write('owned')",
        "import os\nos.close(os.open({target!r}, os.O_WRONLY | os.O_CREAT))",
        "import pathlib\npathlib.Path({target!r}).write_text('owned')",
        "import shutil, os\nopen('x', 'w').write('x')\nshutil.copyfile('x', {target!r})",
        "import os\nos.system('touch ' + {target!r})",
        "import subprocess\nsubprocess.run(['touch', {target!r}])",
        "import os\nif os.fork() == 0:\n    open({target!r}, 'w')",
        "import ctypes\nctypes.CDLL(None).system(b'touch ' + {target!r}.encode())",
    ],
)
def test_writing_outside_the_work_dir_fails(tmp_path: Path, attack: str) -> None:
    target = tmp_path / "outside.txt"
    answer = fenced(attack.format(target=str(target)) + "\ndef add(a, b):\n    return a + b")
    grade = grade_code(answer, add_item(tmp_path), LIMITS)
    assert grade.score == 0.0, grade.detail
    assert not target.exists()


def test_deleting_outside_the_work_dir_fails(tmp_path: Path) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    answer = fenced(f"import os\nos.remove({str(victim)!r})\ndef add(a, b):\n    return a + b")
    assert grade_code(answer, add_item(tmp_path), LIMITS).score == 0.0
    assert victim.read_text() == "precious"


def test_writing_inside_the_work_dir_is_fine(tmp_path: Path) -> None:
    answer = fenced(
        "import os, tempfile\n"
        "open('scratch.txt', 'w').write('ok')\n"
        "fd, name = tempfile.mkstemp()\n"
        "os.close(fd)\n"
        "assert open('scratch.txt').read() == 'ok'\n"
        "assert os.path.expanduser('~') == os.getcwd()\n"
        "def add(a, b):\n    return a + b"
    )
    grade = grade_code(answer, add_item(tmp_path), LIMITS)
    assert grade.score == 1.0, grade.detail


def test_probe_reports_the_layers() -> None:
    sandbox = Sandbox.probe()
    text = sandbox.describe()
    assert "audit hook" in text and "rlimits" in text
    # This machine (root, or user namespaces) grants the kernel layers; say so if not.
    assert sandbox.network_namespace, text
    assert sandbox.read_only_fs, text
