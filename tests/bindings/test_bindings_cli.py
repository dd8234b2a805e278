"""`linewarden bindings list|show|drop` against a running gateway's admin API."""

from __future__ import annotations

import socket
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
    code, out = cli(gw, "list", "--reveal", "--reason", "test")
    assert code == 0 and MSISDN_A in out
    code, out = cli(gw, "show", "127.0.0.91")
    assert code == 0 and "*********123" in out and "cli-1" in out and "10.0.9.1" in out
    assert "internet" in out  # the APN attribute
    code, out = cli(gw, "show", "127.0.0.91", "--reveal", "--reason", "test")
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
    config.write_text('state_dir = "st"\n[web]\nlisten = "127.0.0.1:1"\n')
    result = CliRunner().invoke(bindings, ["list", "--config", str(config)],
                                obj=CliState(None))
    assert result.exit_code == 1
    assert result.output == (f"linewarden: no admin socket at {tmp_path / 'st' / 'admin.sock'}"
                             f": is `linewarden serve --config {config}` running?\n")
    # A socket file nobody listens on (a crashed gateway's leftover): said as such.
    (tmp_path / "st").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
        left.bind(str(tmp_path / "st" / "admin.sock"))
    result = CliRunner().invoke(bindings, ["list", "--config", str(config)],
                                obj=CliState(None))
    assert result.exit_code == 1 and "nothing listens on the admin socket" in result.output
    assert "Traceback" not in result.output


def test_cli_ignores_proxy_environment(gw: GatewayProcess, monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    """The admin API is never reached through an environment proxy (here: a dead one)."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    code, out = cli(gw, "list")
    assert code == 0, out
