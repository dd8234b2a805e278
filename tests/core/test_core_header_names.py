"""Issue 15 item 3: partner header names the gateway owns are refused, by the policy lint
(file:line, partner, fix) and again by `Rules` (the data plane's start-up check), in every
spelling; a differential property against a reference predicate written differently."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden.claims import Secrets
from linewarden.decide import RequestHead, Rules, Settings, decide
from linewarden.http import error_response, reserved_field
from linewarden.policy import ClaimSpec, Partner, Policy, PolicyError, UnsafePolicyError
from linewarden.policy.load import parse_policy

SETTINGS = Settings(secrets=Secrets(b"pseudonym-secret", b"ledger-key", "234-10"))


def toml_key(name: str) -> str:
    """Any name as a TOML basic string: escape quotes, backslashes and control characters."""
    return '"' + "".join(f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or c == "\x7f"
                         else c for c in name) + '"'


def policy_text(header: str, claim: str = "pseudonym") -> str:
    return ('[[partners]]\nid = "acme-pay"\npurpose = "age_verification"\n'
            'hosts = ["pay.example.com"]\n[partners.headers]\n'
            f'X-Fine = "age_over_18"\n{toml_key(header)} = "{claim}"\n')


REFUSED = [
    "content-length", "CONTENT-LENGTH", "Content-Length", "cOnTeNt-LeNgTh",
    "Transfer-Encoding", "TRANSFER-ENCODING", "Connection", "keep-alive", "TE", "te",
    "Trailer", "Upgrade", "Expect", "Host", "HOST", "host", "Cookie", "Authorization",
    "Via", "VIA", "Forwarded", "x-forwarded-for", "X-Forwarded-For", "x-forwarded-host",
    "X-FORWARDED-PROTO", "Proxy-Authorization", "Proxy-Connection", "proxy-foo",
    "Proxy-Foo", "Content-Type", "content-encoding", "Cache-Control", "Max-Forwards",
]


@pytest.mark.parametrize("name", REFUSED)
def test_lint_refuses_reserved_names_with_line_partner_and_fix(name: str) -> None:
    text = policy_text(name)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "partners.toml")
    [finding] = info.value.findings
    assert finding.level == "error" and finding.partner == "acme-pay"
    assert finding.line == 7  # the header's own line
    assert f"header name '{name}' is reserved" in finding.message
    assert "partner 'acme-pay'" in finding.fix and "X-Acme-Pay-Pseudonym" in finding.fix
    assert str(finding).startswith("partners.toml:7: partner 'acme-pay': error:")


@pytest.mark.parametrize("name", ["X-Sub", "X-Up-Calling-Line-Id", "X-Content", "Hosts",
                                  "X-Via", "Forwarded-Msisdn", "X-Forwarded", "Contentlength",
                                  "X-Proxy-Id", "Tea", "X-Cookie-Id"])
def test_lint_accepts_names_that_only_look_alike(name: str) -> None:
    policy, findings = parse_policy(policy_text(name), "partners.toml")
    assert findings == [] and policy.partners[0].claims[1].header == name


def unsafe_policy(header: str) -> Policy:
    """A policy that never went through the lint (an embedding, a fault hook)."""
    partner = Partner("acme-pay", "billing", ("pay.example.com",), (), frozenset(), None,
                      False, (ClaimSpec(header, "pseudonym"),), line=12)
    return Policy((partner,), "v1", "partners.toml")


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "HOST",
                                  "x-forwarded-host", "Proxy-Foo", "X-Bad\r\nHost"])
def test_rules_refuse_an_unlinted_policy_at_construction(name: str) -> None:
    with pytest.raises(UnsafePolicyError) as info:
        Rules(unsafe_policy(name), SETTINGS)
    message = str(info.value)
    assert "partners.toml:12: partner 'acme-pay': error:" in message
    assert "fix:" in message
    assert isinstance(info.value, ValueError)  # `serve` reports it and does not start


def test_every_name_the_gateway_writes_is_reserved() -> None:
    """The names decide() and error_response() put on the wire themselves: a partner header
    under any of them would be a second, conflicting copy."""
    policy, _ = parse_policy(policy_text("X-Sub"), "partners.toml")
    rules = Rules(policy, SETTINGS)
    heads = [
        RequestHead(b"GET", b"http://a.test/", "1.1", [(b"Host", b"a.test")]),
        RequestHead(b"POST", b"http://a.test/", "1.1",
                    [(b"Host", b"a.test"), (b"Content-Length", b"3")]),
        RequestHead(b"POST", b"/", "1.1",
                    [(b"Host", b"a.test"), (b"Transfer-Encoding", b"chunked")]),
        RequestHead(b"GET", b"/", "1.1", [(b"Host", b"a.test"), (b"Connection", b"Upgrade"),
                                          (b"Upgrade", b"websocket")]),
    ]
    written: set[bytes] = set()
    for h in heads:
        d = decide(h, None, rules, switch_tripped=False, now=0.0)
        assert d.forwarded
        written |= {name for name, _ in d.headers}
    raw = error_response(403, "no")
    written |= {line.split(b":")[0] for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]}
    assert written >= {b"Host", b"Via", b"Content-Length", b"Transfer-Encoding",
                       b"Connection", b"Upgrade", b"Content-Type", b"Cache-Control"}
    for name in written:
        assert reserved_field(name.decode()) is not None, name


# ---------------------------------------------------------------- the differential property

# Written from the list, as one anchored case-insensitive pattern over ASCII.
_REFUSED_NAME = re.compile(
    r"connection|keep-alive|te|trailer|transfer-encoding|upgrade|expect|max-forwards"
    r"|host|cookie|authorization|via|forwarded|cache-control"
    r"|content-.*|proxy-.*|x-forwarded-.*", re.IGNORECASE | re.ASCII | re.DOTALL)
# An RFC 9110 token minus '_' and '.' (the alias characters the lint also refuses).
_PLAIN_TOKEN = re.compile(r"[!#$%&'*+\-^`|~0-9A-Za-z]+", re.ASCII)


def reference_refuses(name: str) -> bool:
    return _PLAIN_TOKEN.fullmatch(name) is None or _REFUSED_NAME.fullmatch(name) is not None


def _respell(name: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if flip else c
                   for c, flip in zip(name, flips + [False] * len(name), strict=False))


_SEEDS = ["Content-Length", "Host", "TE", "Te-", "Tea", "Via", "Vias", "Proxy-", "Proxy",
          "X-Forwarded-", "X-Forwarded", "Content-", "Content", "Forwarded", "Cookie",
          "Authorization", "Trailer", "Upgrade", "Expect", "X-Sub", "Connection",
          "Keep-Alive", "Max-Forwards", "Cache-Control", "Transfer-Encoding", "X-Msisdn"]


@st.composite
def header_names(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["seed", "seed+tail", "token", "text"]))
    if kind == "text":
        return draw(st.text(max_size=12))
    if kind == "token":
        return draw(st.text(alphabet="abcdefghxyzABCXYZ019-_.!~", min_size=1, max_size=14))
    name = draw(st.sampled_from(_SEEDS))
    if kind == "seed+tail":
        name += draw(st.text(alphabet="abcXYZ09-_ \t:K\u212a", max_size=5))
    return _respell(name, draw(st.lists(st.booleans(), max_size=20)))


@settings(max_examples=300, deadline=None)
@given(name=header_names())
def test_lint_and_rules_refuse_exactly_what_the_reference_refuses(name: str) -> None:
    expected = reference_refuses(name)
    try:
        parse_policy(policy_text(name), "partners.toml")
        linted = False
    except PolicyError as exc:
        linted = True
        # A name the source map cannot locate (control characters, "") points at its table.
        assert all(f.line in (5, 7) and f.partner == "acme-pay" for f in exc.findings), exc
    assert linted == expected, name
    try:
        Rules(unsafe_policy(name), SETTINGS)
        refused = False
    except UnsafePolicyError:
        refused = True
    assert refused == expected, name
