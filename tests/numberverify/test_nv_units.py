"""[partners.oauth] lint, and the opt-out writer on both profile file kinds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from nv_support import sha

from linewarden.bindings.profiles import ProfileBook
from linewarden.numberverify.optout import OptOuts
from linewarden.policy import PolicyError
from linewarden.policy.load import parse_policy

READ = "number-verification:device-phone-number:read"


def oauth_partner(*, purpose: str = "fraud_prevention", raw: bool = False,
                  scopes: str = '["number-verification:verify"]',
                  redirect: str = "https://shop.test/cb", credential: str | None = None,
                  headers: bool = False, client_id: str = "shop") -> str:
    cred = credential if credential is not None else f'client_secret_sha256 = "{sha("s")}"'
    return f"""
[[partners]]
id = "p-{client_id}"
purpose = "{purpose}"
hosts = ["shop.test"]
allow_raw_msisdn = {str(raw).lower()}
{'[partners.headers]' + chr(10) + 'X-Sub = "pseudonym"' if headers else ''}
[partners.oauth]
client_id = "{client_id}"
redirect_uris = ["{redirect}"]
{cred}
scopes = {scopes}
"""


def messages(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return str(info.value)


def test_oauth_only_partner_is_valid() -> None:
    policy, findings = parse_policy(oauth_partner())
    assert findings == []
    [partner] = policy.partners
    assert partner.oauth is not None and partner.claims == ()
    assert policy.header_names == frozenset()


def test_partner_needs_headers_or_oauth() -> None:
    text = '[[partners]]\nid = "p"\npurpose = "billing"\nhosts = ["a.test"]\n'
    assert "headers" in messages(text)


def test_read_scope_only_for_purposes_that_justify_the_number() -> None:
    scopes = f'["{READ}"]'
    assert "hands over the raw phone number" in messages(oauth_partner(scopes=scopes))
    assert "hands over" in messages(oauth_partner(scopes=scopes, purpose="billing"))
    _, findings = parse_policy(oauth_partner(scopes=scopes, purpose="billing", raw=True))
    assert [f.level for f in findings] == ["warning"]


@pytest.mark.parametrize(("redirect", "problem"), [
    ("http://shop.test/cb", "http:// is allowed only for loopback"),
    ("https://evil.test/cb", "not one of the partner's hosts"),
    ("https://shop.test/cb#x", "fragment"),
    ("shop.test/cb", "not an absolute"),
])
def test_redirect_uris(redirect: str, problem: str) -> None:
    assert problem in messages(oauth_partner(redirect=redirect))


def test_loopback_redirect_allowed() -> None:
    # RFC 8252 §7.3: http is fine on loopback (a native app's own listener), nowhere else.
    policy, findings = parse_policy(oauth_partner(redirect="http://127.0.0.1:9000/cb"))
    assert findings == []
    oauth = policy.partners[0].oauth
    assert oauth is not None and oauth.redirect_uris == ("http://127.0.0.1:9000/cb",)
    assert "allowed only for loopback" in messages(oauth_partner(redirect="http://shop.test/cb"))


def test_credentials_and_scopes() -> None:
    assert "exactly one of" in messages(oauth_partner(credential=""))
    assert "not a PEM public key" in messages(oauth_partner(credential='public_key = "x"'))
    assert "64" in messages(oauth_partner(credential='client_secret_sha256 = "abc"'))
    assert "unknown scope" in messages(oauth_partner(scopes='["openid-everything"]'))
    assert "used by another partner" in messages(
        oauth_partner() + oauth_partner().replace('id = "p-shop"', 'id = "p-two"'))


@pytest.mark.parametrize("kind", ["csv", "sqlite"])
def test_opt_out_writer(tmp_path: Path, kind: str) -> None:
    if kind == "csv":
        path = tmp_path / "profiles.csv"
        path.write_text("msisdn,age_verified,opt_out,note\n+447400900123,true,,keep me\n")
    else:
        path = tmp_path / "profiles.db"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE profiles (msisdn TEXT, age_verified TEXT, opt_out TEXT)")
            db.execute("INSERT INTO profiles VALUES ('447400900123', 'true', '')")
    book = ProfileBook(path)
    optouts = OptOuts(book)
    assert optouts.change("447400900123", "shop", True) == frozenset({"shop"})
    assert optouts.opted_out("447400900123", "shop")
    assert not optouts.opted_out("447400900123", "other")
    optouts.change("447400900123", "other", True)
    assert optouts.current("447400900123") == frozenset({"shop", "other"})
    profile = book.get("447400900123")
    assert profile is not None and profile.age_verified is True  # untouched
    optouts.change("447400900123", "*", True)
    assert optouts.opted_out("447400900123", "anyone")
    optouts.change("447400900123", "*", False)
    assert optouts.current("447400900123") == frozenset()
    # A subscriber without a row gets one.
    optouts.change("447400900999", "shop", True)
    assert ProfileBook(path).get("447400900999") is not None
    if kind == "csv":
        assert "keep me" in path.read_text()
