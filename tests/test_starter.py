"""The shipped starter prompts are exactly what the generator in tools/ writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "starter" / "generate.py"
STARTER = ROOT / "sidecar" / "data" / "starter"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("starter")
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


@pytest.mark.parametrize("name", ["train.jsonl", "val.jsonl"])
def test_regenerating_reproduces_the_shipped_file_byte_for_byte(
    regenerated: Path, name: str
) -> None:
    fresh = (regenerated / name).read_bytes()
    shipped = (STARTER / name).read_bytes()
    assert fresh == shipped, f"{name} differs: run `python3 tools/starter/generate.py`"


def test_the_generator_is_not_part_of_the_package() -> None:
    assert not list(STARTER.glob("*.py")), "sidecar/data/starter must hold data only"
