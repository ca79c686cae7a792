"""The generated Envoy config: the shipped example is up to date and Envoy itself accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sidecar import InvalidArgument
from sidecar._cli import main
from sidecar._envoy_config import Upstream, envoy_config
from tools.mesh.envoy import envoy_binary

SHIPPED = Path(__file__).absolute().parent.parent / "deploy" / "envoy" / "envoy.yaml"


def validate(config: str, tmp_path: Path) -> None:
    """Envoy's own check (`--mode validate`): schema, references, filter configs."""
    path = tmp_path / "envoy.yaml"
    path.write_text(config)
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_shipped_config_is_the_generators_output() -> None:
    assert SHIPPED.read_text() == envoy_config(), (
        "deploy/envoy/envoy.yaml is stale: run `make envoy-config`"
    )


def test_envoy_accepts_the_shipped_config(tmp_path: Path) -> None:
    validate(SHIPPED.read_text(), tmp_path)


def test_a_config_with_a_token_and_odd_model_names(tmp_path: Path) -> None:
    config = envoy_config(
        [Upstream("gpt-4o/mini:2024", "127.0.0.1:9001"), Upstream("gpt 4o", "llm.internal:443")],
        default="127.0.0.1:9000",
        token="read-token-0123456789",
        failure_mode_allow=True,
        message_timeout_s=0.25,
    )
    validate(config, tmp_path)
    assert '"Bearer read-token-0123456789"' in config
    assert "failure_mode_allow: true" in config and "message_timeout: 0.25s" in config
    assert "type: STRICT_DNS" in config  # a host name is resolved, an IP is static
    assert '{exact: "gpt-4o/mini:2024"}' in config


@pytest.mark.parametrize(
    ("upstreams", "options", "message"),
    [
        ([], {}, "at least one"),
        ([Upstream("a", "h:1"), Upstream("a", "h:2")], {}, "one upstream"),
        ([Upstream("a", "nohost")], {}, "HOST:PORT"),
        ([Upstream("a", "h:99999")], {}, "HOST:PORT"),
        ([Upstream("a", "h:1")], {"message_timeout_s": 0}, "timeout"),
        ([Upstream("a", "h:1")], {"sidecar": "x"}, "sidecar"),
    ],
)
def test_bad_settings_are_refused(upstreams, options, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        envoy_config(upstreams, **options)


def test_the_cli_prints_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("read-token-0123456789\n")
    code = main(
        [
            "envoy-config",
            "--upstream",
            "small=127.0.0.1:7001",
            "--upstream",
            "large=127.0.0.1:7002",
            "--token-file",
            str(token),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out == envoy_config(
        [Upstream("small", "127.0.0.1:7001"), Upstream("large", "127.0.0.1:7002")],
        token="read-token-0123456789",
    )
    assert main(["envoy-config", "--upstream", "small"]) == 2
