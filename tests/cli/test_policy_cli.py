"""`linewarden policy check|explain|diff` as an operator runs them: real process, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    assert f"{bad}:2:" in result.stderr and "not host:port" in result.stderr


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


def test_diff_exits_0_when_only_withdrawing() -> None:
    result = run("policy", "diff", str(EXAMPLES / "partners-v2.toml"),
                 str(EXAMPLES / "partners.toml"))
    # v1 re-adds the age-gate pseudonym that v2 dropped: that is new exposure relative to v2.
    assert result.returncode == 3
    assert "+ newly exposed verify.agegate.example.net: pseudonym" in result.stdout
    same = run("policy", "diff", str(EXAMPLES / "partners.toml"),
               str(EXAMPLES / "partners.toml"))
    assert same.returncode == 0
    assert "0 newly exposed, 0 withdrawn" in same.stdout


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
