"""`linewarden killswitch trip|clear|status` and `linewarden canary --once` against a real
running gateway (the commands reach it through its admin API and its proxy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from canary_support import (
    IDENTITY_HEADER,
    PARTNER_HOST,
    PLAIN_HOST,
    SUBSCRIBER_MSISDN,
    Gateway,
    start_gateway,
)
from click.testing import CliRunner, Result

from linewarden.canary_cli import canary
from linewarden.cli_support import CliState
from linewarden.killswitch_cli import killswitch

HEADER = IDENTITY_HEADER.lower()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway without [canary]: the CLI runs the rounds here."""
    gateway = start_gateway(tmp_path_factory.mktemp("cli") / "gw")
    try:
        yield gateway
    finally:
        gateway.stop()


def _run(command: object, args: list[str]) -> Result:
    return CliRunner().invoke(command, args, obj=CliState(None))  # type: ignore[arg-type]


def _cli_config(gw: Gateway, tmp_path: Path, canary_section: str) -> str:
    """The gateway's own config plus a [canary] section, for the CLI only."""
    path = tmp_path / "cli.toml"
    path.write_text(gw.config.read_text() + "\n" + canary_section)
    return str(path)


def test_trip_status_clear(gw: Gateway) -> None:
    config = str(gw.config)
    result = _run(killswitch, ["status", "--config", config])
    assert result.exit_code == 0 and "kill switch clear" in result.output

    result = _run(killswitch, ["trip", "--config", config, "--reason", "incident 7",
                               "--by", "ops"])
    assert result.exit_code == 0, result.output
    assert "TRIPPED" in result.output and "incident 7" in result.output
    assert HEADER not in gw.received(PARTNER_HOST)

    doc = json.loads(_run(killswitch, ["status", "--config", config, "--json"]).output)
    assert doc["tripped"] is True and doc["by"] == "ops"

    result = _run(killswitch, ["clear", "--config", config])
    assert result.exit_code == 2 and "--reason" in result.output  # click: missing option
    assert gw.admin("GET", "/admin/killswitch")["tripped"] is True

    result = _run(killswitch, ["clear", "--config", config, "--reason", "fixed the LB"])
    assert result.exit_code == 0, result.output
    assert "kill switch clear" in result.output
    assert gw.received(PARTNER_HOST).get(HEADER) == SUBSCRIBER_MSISDN

    # Tripping needs no reason (the safe direction must never wait); the state says so.
    result = _run(killswitch, ["trip", "--config", config])
    assert result.exit_code == 0, result.output
    assert "no reason given" in result.output
    assert HEADER not in gw.received(PARTNER_HOST)
    result = _run(killswitch, ["clear", "--config", config, "--reason", "drill over"])
    assert result.exit_code == 0, result.output


def test_status_names_the_admin_socket_when_nothing_runs(tmp_path: Path) -> None:
    config = tmp_path / "lw.toml"
    config.write_text('[web]\nlisten = "127.0.0.1:9"\n')
    result = _run(killswitch, ["status", "--config", str(config)])
    assert result.exit_code == 1
    assert f"no admin socket at {tmp_path / '.linewarden' / 'admin.sock'}" in result.output
    assert f"is `linewarden serve --config {config}` running?" in result.output
    assert "Traceback" not in result.output


def test_the_demo_config_is_named_as_such(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no linewarden.toml here: the embedded demo
    result = _run(killswitch, ["status"])
    assert result.exit_code == 1
    assert f"no admin socket at {tmp_path / '.linewarden' / 'admin.sock'}" in result.output
    assert "is `linewarden serve` (the embedded demo) running in this directory?" in \
        result.output


def test_status_names_the_admin_url_when_nothing_runs(tmp_path: Path) -> None:
    config = tmp_path / "lw.toml"
    config.write_text('[admin]\nlisten = "127.0.0.1:9"\nadmin_token = "0123456789abcdef"\n')
    result = _run(killswitch, ["status", "--config", str(config)])
    assert result.exit_code == 1
    assert "cannot reach the admin API at http://127.0.0.1:9" in result.output
    assert "0123456789abcdef" not in result.output


@pytest.mark.parametrize(("section", "code", "words"), [
    (f'control_urls = ["http://{PLAIN_HOST}/api/check"]', 0, "OK"),
    (f'control_urls = ["http://{PARTNER_HOST}/api/check"]', 1, "LEAK"),
    (f'control_urls = ["http://{PLAIN_HOST}/api/check"]\n'
     f'expect_urls = {{ "billing" = ["http://{PARTNER_HOST}/api/check"] }}', 0, "OK"),
    (f'control_urls = ["http://{PLAIN_HOST}/api/check"]\n'
     f'expect_urls = {{ "billing" = ["http://{PLAIN_HOST}/api/check"] }}', 2, "DEGRADED"),
    ('control_urls = ["http://127.0.0.1:9/api/check"]', 2, "ERROR"),
])
def test_canary_once_exit_codes(gw: Gateway, tmp_path: Path, section: str, code: int,
                                words: str) -> None:
    config = _cli_config(gw, tmp_path, f"[canary]\ninterval = 2\n{section}\n")
    result = _run(canary, ["--once", "--config", config])
    assert result.exit_code == code, result.output
    assert words in result.output
    assert SUBSCRIBER_MSISDN not in result.output and "447400900999" not in result.output


def test_canary_once_json(gw: Gateway, tmp_path: Path) -> None:
    config = _cli_config(gw, tmp_path, f'[canary]\ncontrol_urls = ["http://{PARTNER_HOST}/"]\n')
    result = _run(canary, ["--once", "--json", "--config", config])
    doc = json.loads(result.output.splitlines()[-1])
    assert doc["outcome"] == "error"  # "/" is the HTML page, not the checker JSON
    assert "checker JSON" in doc["probes"][0]["detail"]
