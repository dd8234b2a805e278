"""`linewarden policy check|explain|diff` as an operator runs them: real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from linewarden.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "linewarden.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=60)


def test_check_accepts_a_good_policy() -> None:
    result = run("policy", "check", str(EXAMPLES / "partners.toml"))
    assert result.returncode == 0, result.stderr
    assert "OK, 3 partners (1 with the raw number)" in result.stdout


def test_check_refuses_the_o2_failure_with_file_line_and_partner() -> None:
    result = run("policy", "check", str(EXAMPLES / "bad-partners.toml"))
    assert result.returncode == 1
    err = result.stderr
    assert "Traceback" not in err
    assert "bad-partners.toml:6: partner 'everyone': error: host '*' matches every site" in err
    assert "'*.co.uk' is a public suffix" in err
    assert "bad-partners.toml:8:" in err and "raw phone number without opt-in" in err
    assert "header name 'X_MSISDN' is not a valid token" in err
    assert "unknown purpose 'marketing'" in err


def test_check_reports_corrupt_toml_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[[partners]]\nid = "a"\nhosts = ["a.example.com"\n')
    result = run("policy", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:" in result.stderr and "invalid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_unknown_keys_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[[partners]]\nid = "a"\npurpose = "billing"\nhosts = ["a.example.com"]\n'
                   'colour = "blue"\n[partners.headers]\nX-A = "pseudonym"\n')
    result = run("policy", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:5: partner 'a': error: unknown key 'colour'" in result.stderr


def test_check_validates_the_rest_of_a_full_config(tmp_path: Path) -> None:
    bad = tmp_path / "linewarden.toml"
    bad.write_text('[proxy]\nlisten = "nowhere"\n')
    result = run("policy", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:2:" in result.stderr and "not HOST:PORT" in result.stderr


def test_check_missing_file_is_one_sentence() -> None:
    result = run("policy", "check", "/nonexistent/partners.toml")
    assert result.returncode == 1
    assert result.stderr.strip() == \
        "linewarden: /nonexistent/partners.toml: file not found (fix: check the path)"


def test_explain_shows_partner_headers_and_privacy() -> None:
    result = run("policy", "explain", str(EXAMPLES / "partners.toml"),
                 "--host", "PAY.shop.example.com.", "--path", "/checkout/basket")
    assert result.returncode == 0
    assert "partner 'shop-billing' (billing, privacy: raw number)" in result.stdout
    assert "X-Up-Calling-Line-Id: msisdn, format e164 [raw phone number]" in result.stdout


@pytest.mark.parametrize(("host", "path", "reason"), [
    ("pay.shop.example.com", "/", "limited to paths ['/checkout']"),
    ("pay.shop.example.com", "/checkout/../admin", "limited to paths"),
    ("pay.shop.example.com.evil.example", "/checkout", "no host pattern matches"),
    ("selfcare.operator.example", "/", "no host pattern matches"),  # wildcard excludes apex
])
def test_explain_says_why_nothing_matches(host: str, path: str, reason: str) -> None:
    result = run("policy", "explain", str(EXAMPLES / "partners.toml"), "--host", host,
                 "--path", path)
    assert result.returncode == 0
    assert "no identity is sent" in result.stdout
    assert reason in result.stdout


def test_diff_exits_3_on_new_exposure_and_lists_it() -> None:
    result = run("policy", "diff", str(EXAMPLES / "partners.toml"),
                 str(EXAMPLES / "partners-v2.toml"))
    assert result.returncode == 3
    out = result.stdout
    assert "+ newly exposed *.shop.example.com: msisdn:e164 in x-up-calling-line-id to " \
           "partner 'shop-billing'" in out
    assert "+ newly exposed api.fraudcheck.example.org: pseudonym" in out
    assert "- withdrawn    verify.agegate.example.net: pseudonym" in out


def test_diff_back_to_v1_reports_the_narrowing_as_narrowed() -> None:
    result = run("policy", "diff", str(EXAMPLES / "partners-v2.toml"),
                 str(EXAMPLES / "partners.toml"))
    # v1 re-adds the age-gate pseudonym that v2 dropped: the one new exposure (exit 3). The
    # shop's number going back from the whole site to /checkout is narrowing, not new.
    assert result.returncode == 3
    out = result.stdout
    assert "+ newly exposed verify.agegate.example.net: pseudonym" in out
    assert "- narrowed     pay.shop.example.com: msisdn:e164 in x-up-calling-line-id to " \
           "partner 'shop-billing' (now only pay.shop.example.com paths ['/checkout'])" in out
    assert "+ newly exposed pay.shop" not in out
    assert "1 newly exposed, 2 withdrawn, 1 narrowed" in out
    same = run("policy", "diff", str(EXAMPLES / "partners.toml"),
               str(EXAMPLES / "partners.toml"))
    assert same.returncode == 0
    assert "0 newly exposed, 0 withdrawn, 0 narrowed" in same.stdout


SHOP = """
[[partners]]
id = "shop"
purpose = "billing"
hosts = ["pay.shop.example.com"]
allow_raw_msisdn = true
{scope}
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
"""


@pytest.mark.parametrize(("wide", "narrow"), [
    ("", 'paths = ["/checkout"]'),
    ('paths = ["/checkout"]', 'paths = ["/checkout/card"]'),
    ("", "ports = [443]"),
    ("ports = [80, 443]", 'ports = [443]\npaths = ["/checkout"]'),
])
def test_diff_narrowing_is_not_new_exposure(tmp_path: Path, wide: str, narrow: str) -> None:
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(SHOP.format(scope=wide))
    new.write_text(SHOP.format(scope=narrow))
    narrowed = run("policy", "diff", str(old), str(new))
    assert narrowed.returncode == 0, narrowed.stdout
    assert "0 newly exposed, 0 withdrawn, 1 narrowed" in narrowed.stdout
    widened = run("policy", "diff", str(new), str(old))
    assert widened.returncode == 3, widened.stdout  # the old scope is still inside the new
    assert "1 newly exposed, 0 withdrawn, 0 narrowed" in widened.stdout


def test_diff_a_sibling_path_is_new_exposure(tmp_path: Path) -> None:
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(SHOP.format(scope='paths = ["/checkout"]'))
    new.write_text(SHOP.format(scope='paths = ["/checkoutx"]'))  # not under /checkout
    result = run("policy", "diff", str(old), str(new))
    assert result.returncode == 3
    assert "1 newly exposed, 1 withdrawn, 0 narrowed" in result.stdout


def test_check_explain_diff_json() -> None:
    good = run("policy", "check", str(EXAMPLES / "partners.toml"), "--json")
    assert good.returncode == 0
    doc = json.loads(good.stdout)
    assert doc["ok"] is True and doc["partners"] == 3 and doc["raw_number_partners"] == 1
    bad = run("policy", "check", str(EXAMPLES / "bad-partners.toml"), "--json")
    assert bad.returncode == 1
    findings = json.loads(bad.stdout)["findings"]
    assert {"level": "error", "file": str(EXAMPLES / "bad-partners.toml"), "line": 6,
            "partner": "everyone", "message": "host '*' matches every site",
            "fix": "list the partner's exact host names"} in findings
    explained = json.loads(run("policy", "explain", str(EXAMPLES / "partners.toml"), "--host",
                               "pay.shop.example.com", "--path", "/checkout",
                               "--json").stdout)
    assert explained["partner"]["id"] == "shop-billing"
    assert explained["partner"]["privacy"] == "raw number"
    assert explained["headers"] == [{"header": "X-Up-Calling-Line-Id", "claim": "msisdn",
                                     "include": [], "format": "e164"}]
    nobody = json.loads(run("policy", "explain", str(EXAMPLES / "partners.toml"), "--host",
                            "example.org", "--json").stdout)
    assert nobody["partner"] is None and nobody["reason"] == "no host pattern matches"
    diffed = run("policy", "diff", str(EXAMPLES / "partners-v2.toml"),
                 str(EXAMPLES / "partners.toml"), "--json")
    assert diffed.returncode == 3
    doc = json.loads(diffed.stdout)
    assert (doc["newly_exposed"], doc["withdrawn"], doc["narrowed"]) == (1, 2, 1)
    narrowed = [c for c in doc["changes"] if c["change"] == "narrowed"]
    assert narrowed == [{"change": "narrowed", "host": "pay.shop.example.com", "ports": [],
                         "paths": [], "partner": "shop-billing", "claim": "msisdn:e164",
                         "header": "x-up-calling-line-id", "oauth_scope": False,
                         "now": [{"host": "pay.shop.example.com", "ports": [],
                                  "paths": ["/checkout"]}]}]


@pytest.mark.parametrize("host", ["http://pay.shop.example.com/checkout",
                                  "https://pay.shop.example.com", "pay.shop.example.com/x"])
def test_explain_refuses_a_url_for_host(host: str) -> None:
    result = run("policy", "explain", str(EXAMPLES / "partners.toml"), "--host", host)
    assert result.returncode == 2
    assert "give a host name, not a URL (e.g. --host pay.shop.example.com" in result.stderr
    assert result.stdout == ""


def _commands(group: click.Group, prefix: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


CONFIG_FREE = {("policy", "check"), ("policy", "explain"), ("policy", "diff"), ("checker",),
               ("scan",)}


def test_every_command_says_whether_it_reads_the_config() -> None:
    seen = set()
    for path, command in _commands(cli_main):
        text = CliRunner().invoke(cli_main, [*path, "--help"], terminal_width=200).output
        takes_config = any(p.name == "_config" for p in command.params)
        assert takes_config == (path not in CONFIG_FREE), path
        if takes_config:
            assert "Reads the config: --config FILE" in text, path
        else:
            assert "Reads the config:" not in text, path
        seen.add(path)
    assert seen >= CONFIG_FREE and len(seen) > 20
    for path in [("policy", "check"), ("policy", "explain"), ("policy", "diff")]:
        text = CliRunner().invoke(cli_main, [*path, "--help"], terminal_width=200).output
        assert "not the --config" in text, path


def test_diff_with_invalid_file_exits_1() -> None:
    result = run("policy", "diff", str(EXAMPLES / "partners.toml"),
                 str(EXAMPLES / "bad-partners.toml"))
    assert result.returncode == 1


@pytest.mark.parametrize("args", [(), ("serve",), ("policy",), ("policy", "check"),
                                  ("policy", "explain"), ("policy", "diff")])
def test_every_command_has_help(args: tuple[str, ...]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout and len(result.stdout) > 150


OAUTH_PARTNER = """
[[partners]]
id = "shop"
purpose = "billing"
hosts = ["shop.example.com"]
allow_raw_msisdn = true
[partners.oauth]
client_id = "shop-app"
redirect_uris = ["https://shop.example.com/cb"]
client_secret_sha256 = "{digest}"
scopes = {scopes}
"""


def _oauth_policy(tmp_path: Path, name: str, scopes: str) -> Path:
    path = tmp_path / name
    path.write_text(OAUTH_PARTNER.format(digest="ab" * 32, scopes=scopes))
    return path


def test_diff_flags_a_number_verification_read_scope_as_new_exposure(tmp_path: Path) -> None:
    old = _oauth_policy(tmp_path, "old.toml", '["number-verification:verify"]')
    new = _oauth_policy(tmp_path, "new.toml", '["number-verification:verify", '
                                              '"number-verification:device-phone-number:read"]')
    result = run("policy", "diff", str(old), str(new))
    assert result.returncode == 3, result.stderr
    assert ("+ newly exposed oauth client shop-app: number-verification:device-phone-number:"
            "read as an OAuth scope to partner 'shop'") in result.stdout
    assert "1 newly exposed, 0 withdrawn" in result.stdout
    back = run("policy", "diff", str(new), str(old))
    assert back.returncode == 0 and "0 newly exposed, 1 withdrawn" in back.stdout


def test_explain_shows_the_oauth_client_and_its_privacy(tmp_path: Path) -> None:
    path = _oauth_policy(tmp_path, "p.toml", '["number-verification:verify", '
                                             '"number-verification:device-phone-number:read"]')
    result = run("policy", "explain", str(path), "--host", "shop.example.com")
    assert result.returncode == 0, result.stderr
    assert "partner 'shop' (billing, privacy: raw number)" in result.stdout
    assert ("OAuth client 'shop-app' (Number Verification): scopes number-verification:verify, "
            "number-verification:device-phone-number:read") in result.stdout


RESERVED_SPELLINGS = ["content-length", "CONTENT-LENGTH", "Content-Length", "x-forwarded-host",
                      "Proxy-Foo", "Transfer-Encoding", "host", "Cookie", "Authorization",
                      "Connection", "Via", "X-Forwarded-For", "Content-Type"]


def _partner_file(tmp_path: Path, header: str) -> Path:
    path = tmp_path / "partners.toml"
    path.write_text('[[partners]]\nid = "acme-pay"\npurpose = "billing"\n'
                    'hosts = ["pay.example.com"]\n[partners.headers]\n'
                    f'X-Acme-Sub = "pseudonym"\n"{header}" = "operator"\n')
    return path


@pytest.mark.parametrize("header", RESERVED_SPELLINGS)
def test_check_refuses_a_partner_header_the_gateway_owns(tmp_path: Path, header: str) -> None:
    """Issue 15: a `Content-Length` partner header put `Content-Length: 234-10` on the wire."""
    result = run("policy", "check", str(_partner_file(tmp_path, header)))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (f"{tmp_path / 'partners.toml'}:7: partner 'acme-pay': error: header name "
            f"'{header}' is reserved") in result.stderr
    assert "(fix: agree a header name of its own with partner 'acme-pay'" in result.stderr
    assert "the policy was not accepted" in result.stderr


def test_check_accepts_names_that_only_resemble_reserved_ones(tmp_path: Path) -> None:
    result = run("policy", "check", str(_partner_file(tmp_path, "X-Forwarded-Msisdn-Sub")))
    assert result.returncode == 1  # an identity-looking X-Forwarded-* is still refused
    for header in ("X-Content-Sub", "X-Host-Operator", "X-Via-Operator"):
        result = run("policy", "check", str(_partner_file(tmp_path, header)))
        assert result.returncode == 0, result.stderr
        assert "OK, 1 partners (0 with the raw number)" in result.stdout
