"""`linewarden bindings list|show|drop` against a running gateway's admin API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bindings_support import MSISDN_A, EchoOrigin, GatewayProcess, start_gateway
from click.testing import CliRunner

from linewarden.bindings.cli import bindings
from linewarden.cli_support import CliState


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    origin = EchoOrigin()
    gateway = start_gateway(tmp_path_factory.mktemp("cli-gw"), origin.port)
    yield gateway
    gateway.stop()
    origin.stop()


def cli(gw: GatewayProcess, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(bindings, [*args, "--config", str(gw.config)],
                                obj=CliState(None))
    return result.exit_code, result.output


def test_list_show_drop(gw: GatewayProcess) -> None:
    assert gw.accounting("Start", "127.0.0.91", session="cli-1", nas="10.0.9.1")
    code, out = cli(gw, "list")
    assert code == 0 and "127.0.0.91" in out and "*********123" in out
    assert MSISDN_A not in out  # masked unless asked
    code, out = cli(gw, "list", "--reveal")
    assert code == 0 and MSISDN_A in out
    code, out = cli(gw, "show", "127.0.0.91")
    assert code == 0 and "*********123" in out and "cli-1" in out and "10.0.9.1" in out
    assert "internet" in out  # the APN attribute
    code, out = cli(gw, "show", "127.0.0.91", "--reveal")
    assert MSISDN_A in out
    code, out = cli(gw, "drop", "127.0.0.91")
    assert code == 0 and "dropped" in out
    assert gw.identity("127.0.0.91") is None
    code, out = cli(gw, "show", "127.0.0.91")
    assert code == 2 and "no binding" in out
    code, out = cli(gw, "drop", "not-an-ip")
    assert code == 1 and "not an IP address" in out


def test_unreachable_gateway_is_one_clear_sentence(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[web]\nlisten = "127.0.0.1:1"\n')
    result = CliRunner().invoke(bindings, ["list", "--config", str(config)],
                                obj=CliState(None))
    assert result.exit_code == 1 and "cannot reach the gateway's admin API" in result.output
