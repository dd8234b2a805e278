"""`linewarden checker` option handling (serving itself is covered by the browser tests)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from linewarden.checker_cli import checker, parse_listen


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:9000", ("::1", 9000)),
    ("localhost:1", ("localhost", 1)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "127.0.0.1:", "127.0.0.1:99999", "[zz]:80"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_bad_region_is_a_usage_error() -> None:
    result = CliRunner().invoke(checker, ["--region", "UK"])
    assert result.exit_code == 2
    assert "unknown region UK" in result.output


def test_bad_listen_is_a_usage_error() -> None:
    result = CliRunner().invoke(checker, ["--listen", "nowhere"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(checker, ["--help"])
    assert result.exit_code == 0
    for option in ("--listen", "--region", "--identity-name", "--identity-suffix"):
        assert option in result.output
