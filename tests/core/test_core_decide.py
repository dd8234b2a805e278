"""The sans-IO decision core: destinations, fail-closed enrichment, claims, and the property
test of issue #2: identity reaches a host only if the policy's matcher says that partner owns
it (and the binding is live, and the kill switch is not tripped)."""

from __future__ import annotations

import base64
import hmac

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_core_policy import reference_owners

from linewarden.bindings import Binding
from linewarden.claims import Secrets, pseudonym, subscriber_key
from linewarden.decide import RequestHead, Rules, Settings, decide
from linewarden.names import DEFAULT_IDENTITY_NAMES
from linewarden.policy import PolicyError
from linewarden.policy.load import parse_policy

MSISDN = "447400900123"
SECRETS = Secrets(b"pseudonym-secret", b"ledger-key", "234-10")
SETTINGS = Settings(secrets=SECRETS, connect_ports=frozenset({443, 8443}))
NOW = 1_780_000_000.0
BINDING = Binding("10.0.0.1", MSISDN, {"age_over_18": "true"})

POLICY = """
[[partners]]
id = "billing"
purpose = "billing"
hosts = ["pay.example.com"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"
X-Plus = { claim = "msisdn", format = "+e164" }

[[partners]]
id = "age"
purpose = "age_verification"
hosts = ["*.age.example.com", "127.0.0.9"]
paths = ["/check"]
[partners.headers]
X-Sub = "pseudonym"
X-Adult = "age_over_18"
X-Op = "operator"
"""


@pytest.fixture(scope="module")
def rules() -> Rules:
    policy, _ = parse_policy(POLICY, "partners.toml")
    return Rules(policy, SETTINGS)


def head(target: str, *headers: tuple[str, str], method: str = "GET",
         version: str = "1.1") -> RequestHead:
    hs = [(n.encode(), v.encode()) for n, v in headers]
    if target.startswith("http://") and not any(n.lower() == "host" for n, _ in headers):
        hs.insert(0, (b"Host", target.split("/")[2].encode()))
    return RequestHead(method.encode(), target.encode(), version, hs)


def run(rules: Rules, h: RequestHead, binding: Binding | None = BINDING,
        tripped: bool = False, now: float = NOW):
    return decide(h, binding, rules, switch_tripped=tripped, now=now)


def test_partner_gets_its_claims_and_a_record(rules: Rules) -> None:
    d = run(rules, head("http://pay.example.com/x?y=1"))
    assert d.forwarded and d.target == b"/x?y=1"
    assert d.identity == [(b"X-Up-Calling-Line-Id", MSISDN.encode()),
                          (b"X-Plus", b"+" + MSISDN.encode())]
    assert d.record is not None
    assert d.record.partner_id == "billing" and d.record.claims == ("msisdn",)
    assert d.record.subscriber_key == subscriber_key(b"ledger-key", MSISDN)
    assert MSISDN not in repr(d.record)  # never the number in the ledger row
    assert (b"Host", b"pay.example.com") in d.headers


def test_pseudonym_age_and_operator(rules: Rules) -> None:
    d = run(rules, head("http://a.age.example.com/check/1"))
    key = hmac.digest(b"pseudonym-secret", b"linewarden/pseudonym/v1/age", "sha256")
    expected = base64.urlsafe_b64encode(hmac.digest(key, MSISDN.encode(), "sha256")).rstrip(b"=")
    assert dict(d.identity) == {b"X-Sub": expected, b"X-Adult": b"true", b"X-Op": b"234-10"}
    no_age = run(rules, head("http://a.age.example.com/check"), Binding("10.0.0.1", MSISDN))
    assert b"X-Adult" not in dict(no_age.identity)  # unknown fact: no header, not "false"


@pytest.mark.parametrize("path", [
    "/check/../admin", "/check/%2e%2e/admin", "/check%2fx", "/check//x", "/check/./x",
    "/check\\x", "/Check", "/checkx", "/",
])
def test_path_scoped_partner_fails_closed_on_ambiguous_paths(rules: Rules, path: str) -> None:
    d = run(rules, head(f"http://a.age.example.com{path}"))
    assert d.forwarded and d.identity == [] and d.record is None


def test_ip_literal_matches_only_listed_ip(rules: Rules) -> None:
    assert run(rules, head("http://127.0.0.9/check")).identity
    assert not run(rules, head("http://127.0.0.10/check")).identity
    assert not run(rules, head("http://[::1]/check")).identity


@pytest.mark.parametrize("target", [
    "http://pay.example.com@evil.test/", "http://u:p@pay.example.com/",
    "https://pay.example.com/", "ftp://pay.example.com/", "http:///x", "http://pay_example.com/",
    "http://pay.example.com:99999/",
])
def test_bad_targets_are_400(rules: Rules, target: str) -> None:
    d = run(rules, head(target, ("Host", "pay.example.com")))
    assert d.status == 400 and not d.identity


def test_transparent_mode_uses_host(rules: Rules) -> None:
    d = run(rules, head("/x", ("Host", "PAY.example.com.")))
    assert d.destination is not None and d.destination.mode == "transparent"
    assert d.identity
    d = run(rules, head("/x", ("Host", "pay.example.com:8080")))
    assert d.destination is not None and d.destination.port == 8080
    assert run(rules, head("/x", ("Host", "pay.example.com/evil"))).status == 400
    assert run(rules, head("/x", ("Host", "a@pay.example.com"))).status == 400


def test_absolute_form_ignores_host_header(rules: Rules) -> None:
    d = run(rules, head("http://evil.test/", ("Host", "pay.example.com")))
    assert d.destination is not None and d.destination.host == "evil.test"
    assert not d.identity
    assert (b"Host", b"evil.test") in d.headers


@pytest.mark.parametrize(("binding", "tripped", "reason"), [
    (None, False, "no_binding"),
    (Binding("10.0.0.1", MSISDN, expires_at=NOW - 1), False, "stale_binding"),
    (BINDING, True, "killswitch"),
])
def test_fail_closed(rules: Rules, binding: Binding | None, tripped: bool, reason: str) -> None:
    d = run(rules, head("http://pay.example.com/"), binding, tripped)
    assert d.forwarded and d.identity == [] and d.record is None
    assert d.withheld == reason


def test_expired_partner_gets_nothing() -> None:
    policy, _ = parse_policy(POLICY.replace('hosts = ["pay.example.com"]',
                                            'hosts = ["pay.example.com"]\nexpires = 2020-01-01'))
    d = run(Rules(policy, SETTINGS), head("http://pay.example.com/"))
    assert d.identity == [] and d.partner is None


def test_connect(rules: Rules) -> None:
    d = run(rules, head("pay.example.com:443", ("Host", "pay.example.com:443"), method="CONNECT"))
    assert d.destination is not None and d.destination.mode == "connect"
    assert d.identity == [] and d.record is None
    for target, status in [("pay.example.com:25", 403), ("pay.example.com", 400),
                           ("a@b:443", 400), ("pay.example.com:0", 400)]:
        assert run(rules, head(target, ("Host", target), method="CONNECT")).status == status


@pytest.mark.parametrize("headers", [
    [("Content-Length", "1"), ("Transfer-Encoding", "chunked")],
    [("Content-Length", "1"), ("Content-Length", "1")],
    [("Content-Length", "-1")],
    [("Content-Length", "0x1")],
    [("Transfer-Encoding", "chunked, gzip")],
    [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
    [("Host", "pay.example.com"), ("Host", "pay.example.com")],
    [("X-A", "a\r\nX-MSISDN: 1")],
    [("X-A", "a\nb")],
    [("X-A", "a\0b")],
])
def test_ambiguous_framing_is_400(rules: Rules, headers: list[tuple[str, str]]) -> None:
    d = run(rules, head("http://pay.example.com/", ("Host", "pay.example.com"), *headers,
                        method="POST"))
    assert d.status == 400 and not d.identity


def test_http10_and_missing_host(rules: Rules) -> None:
    assert run(rules, head("/x", version="1.1")).status == 400
    assert run(rules, head("http://pay.example.com/", ("Transfer-Encoding", "chunked"),
                           version="1.0", method="POST")).status == 400
    d = run(rules, RequestHead(b"GET", b"http://pay.example.com/", "1.0", []))
    assert d.forwarded and d.identity


def test_loop_is_refused(rules: Rules) -> None:
    assert run(rules, head("http://pay.example.com/", ("Via", "1.0 a, 1.1 linewarden"))
               ).status == 508


def test_upgrade_only_websocket(rules: Rules) -> None:
    ws = run(rules, head("http://pay.example.com/", ("Connection", "Upgrade"),
                         ("Upgrade", "websocket")))
    assert ws.upgrade and (b"Upgrade", b"websocket") in ws.headers
    h2c = run(rules, head("http://pay.example.com/", ("Connection", "Upgrade, HTTP2-Settings"),
                          ("Upgrade", "h2c"), ("HTTP2-Settings", "AAA")))
    assert not h2c.upgrade
    assert not [n for n, _ in h2c.headers if n.lower() in (b"upgrade", b"http2-settings")]


def test_framing_is_rebuilt(rules: Rules) -> None:
    d = run(rules, head("http://pay.example.com/", ("Content-Length", "007"), method="POST"))
    assert d.body == "length" and (b"Content-Length", b"7") in d.headers
    d = run(rules, head("http://pay.example.com/", ("Transfer-Encoding", "Chunked"),
                        method="POST"))
    assert d.body == "chunked" and (b"Transfer-Encoding", b"chunked") in d.headers


def test_reject_alias_setting() -> None:
    policy, _ = parse_policy(POLICY)
    strict = Rules(policy, Settings(secrets=SECRETS, reject_alias_headers=True))
    assert run(strict, head("http://evil.test/", ("X_Foo", "1"))).status == 400
    assert run(strict, head("http://evil.test/", ("X-MSISDN", "1"))).forwarded


def test_render_refuses_msisdn_without_opt_in(rules: Rules) -> None:
    """Defence in depth: even a Partner that bypassed lint never gets the raw number."""
    from dataclasses import replace

    from linewarden.claims import render

    billing = rules.policy.get("billing")
    assert billing is not None
    sneaky = replace(billing, allow_raw_msisdn=False)
    assert render(billing.claims[0], sneaky, BINDING, SECRETS) is None


# ---------------------------------------------------------------- the property test

FORGED = "447700900999"
ROOTS = ["p0.example", "p1.example", "p2.example", "p3.example"]
HEADER_POOL = ["X-Up-Calling-Line-Id", "X-Sub", "X-Op", "X-Token", "X-Pn"]
CLAIM_POOL = ["msisdn", "pseudonym", "operator"]


@st.composite
def policies(draw) -> tuple[str, list[str]]:
    """Random valid policies as TOML text: each partner owns hosts under its own root."""
    count = draw(st.integers(1, 4))
    parts, patterns = [], []
    for i in range(count):
        root = ROOTS[i]
        choices = [root, f"*.{root}", f"www.{root}", f"a.b.{root}", f"api.{root}"]
        hosts = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True))
        patterns += hosts
        headers = draw(st.lists(st.sampled_from(HEADER_POOL), min_size=1, max_size=3,
                                unique=True))
        claims = [draw(st.sampled_from(CLAIM_POOL)) for _ in headers]
        opt_in = "msisdn" in claims or draw(st.booleans())
        ports = draw(st.sampled_from(["", "ports = [80]\n", "ports = [8080]\n"]))
        expires = draw(st.sampled_from(["", "expires = 2020-01-01\n", "expires = 2099-01-01\n"]))
        body = "".join(f'{h} = "{c}"\n' for h, c in zip(headers, claims, strict=True))
        parts.append(f'[[partners]]\nid = "partner-{i}"\npurpose = "billing"\n'
                     f"hosts = {hosts!r}\n{ports}{expires}"
                     f"allow_raw_msisdn = {'true' if opt_in else 'false'}\n"
                     f"[partners.headers]\n{body}\n".replace("'", '"'))
    return "".join(parts), patterns


@st.composite
def destinations(draw, patterns: list[str]) -> str:
    base = draw(st.one_of(st.sampled_from(patterns), st.sampled_from(ROOTS),
                          st.just("evil.test")))
    base = base.removeprefix("*.")
    kind = draw(st.sampled_from(["same", "sub", "parent", "suffixed", "glued"]))
    if kind == "sub":
        base = draw(st.sampled_from(["x", "www", "a.b"])) + "." + base
    elif kind == "parent":
        base = base.split(".", 1)[1] if base.count(".") > 1 else base
    elif kind == "suffixed":
        base = base + "." + draw(st.sampled_from(["evil.test", "p1.example"]))
    elif kind == "glued":
        base = "evil" + base
    if draw(st.booleans()):
        base = base.upper()
    if draw(st.booleans()):
        base += "."
    return base


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_identity_reaches_a_host_only_if_its_partner_owns_it(data) -> None:
    text, patterns = data.draw(policies())
    try:
        policy, _ = parse_policy(text, "random.toml")
    except PolicyError:
        assume(False)
        raise
    rules = Rules(policy, SETTINGS)
    host = data.draw(destinations(patterns))
    port = data.draw(st.sampled_from([80, 8080]))
    transparent = data.draw(st.booleans())
    msisdn = data.draw(st.sampled_from([MSISDN, "447400900456"]))
    binding = data.draw(st.sampled_from([
        None, Binding("10.0.0.1", msisdn), Binding("10.0.0.1", msisdn, expires_at=NOW + 60),
        Binding("10.0.0.1", msisdn, expires_at=NOW - 60)]))
    tripped = data.draw(st.booleans())
    forged = data.draw(st.lists(st.sampled_from(
        [*HEADER_POOL, "x_msisdn", "X.Up.Calling.Line.Id", "MSISDN", "x-sub", "X-IMSI"]),
        max_size=4))
    authority = host if port == 80 else f"{host}:{port}"
    target = "/p" if transparent else f"http://{authority}/p"
    sent = [(n, f"{FORGED}{i}") for i, n in enumerate(forged)]
    h = head(target, ("Host", authority), *sent)

    d = decide(h, binding, rules, switch_tripped=tripped, now=NOW)

    assert d.forwarded
    owners = reference_owners(list(policy.partners), host, port, "/p", NOW)
    live = binding is not None and binding.live(NOW)
    if d.identity:
        assert d.partner is not None and d.partner.id in owners
        assert live and not tripped
        assert d.record is not None and d.record.partner_id == d.partner.id
        assert [n.decode() for n, _ in d.identity] == [c.header for c in d.partner.claims]
    else:
        assert not (owners and live and not tripped)
        assert d.record is None
    # Never a client-sent identity header, whoever the destination is.
    names = rules.names
    out_values = [v for _, v in [*d.headers, *d.identity]]
    for n, v in sent:
        if names.is_identity(n):
            assert v.encode() not in out_values
    assert not [n for n, _ in d.headers if names.is_identity(n)]
    assert not [n for n, _ in d.headers if DEFAULT_IDENTITY_NAMES.is_identity(n)]
    # Stable: the same inputs decide the same way.
    again = decide(h, binding, rules, switch_tripped=tripped, now=NOW)
    assert again.identity == d.identity


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), min_size=2,
                    max_size=6, unique=True),
       msisdn=st.from_regex(r"44740090[0-9]{4}", fullmatch=True))
def test_pseudonyms_differ_across_partners_and_are_stable(ids: list[str], msisdn: str) -> None:
    values = [pseudonym(SECRETS, pid, msisdn) for pid in ids]
    assert len(set(values)) == len(values)
    assert values == [pseudonym(Secrets(b"pseudonym-secret", b"x"), pid, msisdn) for pid in ids]
    assert all(msisdn not in v for v in values)
    other = Secrets(b"another-operator-secret", b"ledger-key")
    assert pseudonym(other, ids[0], msisdn) != values[0]


def test_rules_ask_for_a_nonce_only_when_a_partner_gets_an_assertion(rules: Rules) -> None:
    # The data plane draws a nonce per request only when this says so (decide uses it for
    # an assertion's jti and nothing else).
    assert rules.needs_nonce is False
    signed, _ = parse_policy(POLICY + """
[[partners]]
id = "shop"
purpose = "age_verification"
hosts = ["shop.example.com"]
[partners.headers]
X-Assertion = { claim = "assertion" }
""", "partners.toml")
    assert Rules(signed, SETTINGS).needs_nonce is True
