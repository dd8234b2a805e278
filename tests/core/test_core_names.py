"""Identity names: the loose match, and stripping every reference name in many spellings,
checked against a reference stripper written differently (regex, no translate tables)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden.claims import Secrets
from linewarden.decide import RequestHead, Rules, Settings, decide
from linewarden.names import (
    DEFAULT_IDENTITY_NAMES,
    IDENTITY_SUFFIXES,
    KNOWN_IDENTITY_HEADERS,
    NAME_CACHE_MAX,
    IdentityNames,
    has_alias_chars,
    is_token,
    normalise,
)
from linewarden.policy import Policy
from linewarden.policy.load import parse_policy

SETTINGS = Settings(secrets=Secrets(b"pseudonym-secret", b"ledger-key", "234-10"))
EMPTY_RULES = Rules(Policy((), "v0"), SETTINGS)


def spellings(name: str) -> list[str]:
    words = name.split("-")
    return [
        name, name.upper(), name.title(), "-".join(w.capitalize() for w in words),
        name.replace("-", "_"), name.upper().replace("-", "_"), name.replace("-", "."),
        name.replace("-", ""), name.replace("-", "--"), name.replace("-", "~"),
        name.replace("-", "_", 1), "".join(c.upper() if i % 2 else c for i, c in enumerate(name)),
    ]


ALL_SPELLINGS = sorted({s for n in KNOWN_IDENTITY_HEADERS for s in spellings(n)})


def test_reference_list_is_complete() -> None:
    product_md = """x-up-calling-line-id, x-msisdn, msisdn,
  x-nokia-msisdn, x-wap-msisdn, x-h3g-msisdn, x-up-subno, x-imsi, x-nokia-imsi, x-uidh, x-acr,
  x-vf-acr, x-hts-clid, x-nx-clid, x-wap-3gpp-msisdn, x-wap-3gpp-imsi,
  x-wap-network-client-msisdn, user-identity-forward-msisdn, x-msp-msisdn, x-wte-msisdn,
  x-fh-msisdn, mscope-msisdn, i-msisdn, x-bam-msisdn, x-up-vodacomgw-subid, x-jinny-cid,
  x-orange-id, x-access-subnym, x-internet-msisdn, x-msisdn-alias, x-h3g-party-id,
  x-nokia-alias, x-subscriber-id, x-forwarded-msisdn, x-imei, x-att-deviceid"""
    expected = {n.strip() for n in product_md.replace("\n", " ").split(",")}
    assert expected == set(KNOWN_IDENTITY_HEADERS)
    assert set(IDENTITY_SUFFIXES) >= {"msisdn", "callinglineid", "subno", "imsi", "imei",
                                      "clid", "uidh", "acr", "subid"}


@pytest.mark.parametrize("name", ALL_SPELLINGS)
def test_every_spelling_is_identity(name: str) -> None:
    assert DEFAULT_IDENTITY_NAMES.is_identity(name)
    assert DEFAULT_IDENTITY_NAMES.is_identity(name.encode())


@pytest.mark.parametrize("name", KNOWN_IDENTITY_HEADERS)
def test_decide_strips_every_known_name_in_every_spelling(name: str) -> None:
    forged = [(s.encode(), b"447700900999") for s in spellings(name)]
    head = RequestHead(b"GET", b"http://example.net/", "1.1",
                       [(b"Host", b"example.net"), *forged, (b"Accept", b"*/*")])
    decision = decide(head, None, EMPTY_RULES, switch_tripped=False, now=0.0)
    assert decision.forwarded
    assert all(b"447700900999" not in v for _, v in decision.headers)
    assert (b"Accept", b"*/*") in decision.headers
    assert sum(decision.stripped.values()) == len(forged)


@pytest.mark.parametrize("name", [
    "X-Foo-MSISDN", "My-Calling-Line", "X-CallingLineID", "Sub-No", "X-Real-IMSI",
    "Device-IMEI", "X-Net-CLID", "X-Old-UIDH", "Anon-ACR", "Billing-SubId", "X-SubscriberID",
])
def test_suffix_matches(name: str) -> None:
    assert DEFAULT_IDENTITY_NAMES.is_identity(name)


@pytest.mark.parametrize("name", [
    "Accept", "Content-Type", "User-Agent", "X-Request-Id", "Cookie", "Authorization",
    "X-Msisdn-Count-Not", "Referer", "X-Forwarded-For", "If-None-Match",
])
def test_ordinary_names_are_not_identity(name: str) -> None:
    assert not DEFAULT_IDENTITY_NAMES.is_identity(name)


def test_normalise_and_tokens() -> None:
    assert normalise("X_Up.Calling-LINE~Id") == "xupcallinglineid"
    assert normalise(b"X-MSISDN\xff") == "xmsisdn"
    assert is_token("X-Sub") and not is_token("X Sub") and not is_token("")
    assert has_alias_chars(b"X_A") and has_alias_chars(b"X.A") and not has_alias_chars(b"X-A")


def test_extra_names_and_suffixes() -> None:
    names = IdentityNames(["X-Custom-Line"], ["custref"])
    assert names.is_identity("x_custom.line") and names.is_identity("X-Billing-CustRef")
    assert not DEFAULT_IDENTITY_NAMES.is_identity("X-Custom-Line")


def test_partner_header_names_become_identity() -> None:
    policy, _ = parse_policy('[[partners]]\nid = "p"\npurpose = "billing"\n'
                             'hosts = ["p.example.com"]\n[partners.headers]\n'
                             'X-Partner-Token = "pseudonym"\n')
    rules = Rules(policy, SETTINGS)
    assert rules.names.is_identity("x_partner.token")
    assert not EMPTY_RULES.names.is_identity("X-Partner-Token")


def test_cache_is_bounded() -> None:
    names = IdentityNames()
    for i in range(NAME_CACHE_MAX + 100):
        names.is_identity(f"x-h{i}")
    assert len(names._cache) <= NAME_CACHE_MAX
    assert names.is_identity("x-msisdn")  # correct past the cache bound


# ---------------------------------------------------------------- differential: stripping

REF_HOP = {"connection", "proxy-connection", "keep-alive", "te", "trailer",
           "transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate"}


def reference_keep(headers: list[tuple[str, str]], extra_exact: set[str]) -> list[tuple[str, str]]:
    """A reference stripper: regexes and plain sets, no byte tables."""
    def squash(n: str) -> str:
        return re.sub(r"[^a-z0-9]", "", n.lower())

    exact = {squash(n) for n in KNOWN_IDENTITY_HEADERS} | {squash(n) for n in extra_exact}
    nominated = {t.strip().lower() for n, v in headers
                 if n.lower() in ("connection", "proxy-connection") for t in v.split(",")}
    kept = []
    for n, v in headers:
        low = n.lower()
        if low in REF_HOP or low in ("host", "content-length", "via") or low in nominated:
            continue
        if not re.fullmatch(r"[A-Za-z0-9-]+", n):
            continue
        s = squash(n)
        if s in exact or any(s.endswith(suffix) for suffix in IDENTITY_SUFFIXES):
            continue
        kept.append((n, v))
    return kept


BENIGN = ["Accept", "X-Request-Id", "Cookie", "X-Trace", "Cache-Control", "X-Acme", "Sub",
          "X-Imsi-Free", "Clid-Info", "If-Match"]
HOPS = ["Keep-Alive", "TE", "Trailer", "Proxy-Authorization", "Proxy-Connection"]
token_chars = st.sampled_from(list("abcXYZ019-_.~!*"))
random_name = st.text(token_chars, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("host", "content-length", "transfer-encoding", "upgrade",
                                "connection", "via"))
header_name = st.one_of(
    st.sampled_from(ALL_SPELLINGS), st.sampled_from(BENIGN), st.sampled_from(HOPS),
    random_name,
    st.tuples(st.sampled_from(["X-", "My_", "a.", ""]),
              st.sampled_from(["MSISDN", "imsi", "Sub_No", "calling.line.id", "ACR"]))
    .map("".join),
)


@settings(max_examples=500, deadline=None)
@given(names=st.lists(header_name, max_size=12),
       nominate=st.lists(st.sampled_from(BENIGN), max_size=2))
def test_stripping_agrees_with_reference(names: list[str], nominate: list[str]) -> None:
    headers = [(n, f"v{i}") for i, n in enumerate(names)]
    if nominate:
        headers.append(("Connection", ", ".join(nominate)))
    head = RequestHead(b"GET", b"http://example.net/", "1.1",
                       [(b"Host", b"example.net"),
                        *((n.encode(), v.encode()) for n, v in headers)])
    decision = decide(head, None, EMPTY_RULES, switch_tripped=False, now=0.0)
    assert decision.forwarded
    got = [(n.decode(), v.decode()) for n, v in decision.headers
           if n not in (b"Host", b"Via")]
    assert got == reference_keep(headers, set())
    assert decision.headers[0] == (b"Host", b"example.net")
    assert decision.headers[-1] == (b"Via", b"1.1 linewarden")
