"""Policy file: lint refuses the O2 failure (file:line and partner id), host matching rules,
and a differential test of `HostMatcher` against a reference written differently."""

from __future__ import annotations

import ipaddress
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden.policy import HostMatcher, Partner, PolicyError, normalise_host
from linewarden.policy.load import parse_policy
from linewarden.sourcemap import ConfigError


def partner(pid: str = "p1", hosts: str = '["partner.example.com"]',
            headers: str = 'X-Sub = "pseudonym"', extra: str = "",
            purpose: str = "age_verification") -> str:
    return (f'[[partners]]\nid = "{pid}"\npurpose = "{purpose}"\nhosts = {hosts}\n{extra}'
            f"[partners.headers]\n{headers}\n\n")


def errors_of(text: str) -> list:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "partners.toml")
    return [f for f in info.value.findings if f.level == "error"]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


LINT_CASES = [
    # (name, policy text, needle on the offending line, message fragment)
    ("catch-all", partner(hosts='["*"]'), "hosts", "matches every site"),
    ("catch-all-dot", partner(hosts='["*."]'), "hosts", "matches every site"),
    ("star-prefix", partner(hosts='["*partner.example.com"]'), "hosts", "matches every site"),
    ("star-com", partner(hosts='["*.com"]'), "hosts", "public suffix"),
    ("star-co-uk", partner(hosts='["*.co.uk"]'), "hosts", "public suffix"),
    ("bare-co-uk", partner(hosts='["co.uk"]'), "hosts", "public suffix"),
    ("star-COM-upper", partner(hosts='["*.COM"]'), "hosts", "public suffix"),
    ("star-com-dot", partner(hosts='["*.com."]'), "hosts", "public suffix"),
    ("inner-star", partner(hosts='["a.*.example.com"]'), "hosts", "not a leading"),
    ("unicode-host", partner(hosts='["pärtner.example.com"]'), "hosts", "not a valid host"),
    ("host-with-path", partner(hosts='["partner.example.com/x"]'), "hosts", "not a valid host"),
    ("host-with-port", partner(hosts='["partner.example.com:443"]'), "hosts",
     "not a valid host"),
    ("host-userinfo", partner(hosts='["u@partner.example.com"]'), "hosts", "not a valid host"),
    ("unknown-claim", partner(headers='X-Sub = "imsi"'), "X-Sub", "unknown claim"),
    ("unknown-purpose", partner(purpose="marketing"), "purpose", "unknown purpose"),
    ("duplicate-id", partner() + partner(hosts='["other.example.com"]'), 'id = "p1"',
     "duplicate partner id"),
    ("host-in-two", partner() + partner("p2"), "hosts", "also claimed"),
    ("wildcard-overlap", partner(hosts='["*.example.com"]') +
     partner("p2", hosts='["a.example.com"]'), "hosts", "also claimed"),
    ("underscore-header", partner(headers='X_Sub = "pseudonym"'), "X_Sub", "not a valid token"),
    ("dot-header", partner(headers='"X.Sub" = "pseudonym"'), "X.Sub", "not a valid token"),
    ("space-header", partner(headers='"X Sub" = "pseudonym"'), "X Sub", "not a valid token"),
    ("colon-header", partner(headers='"X:Sub" = "pseudonym"'), "X:Sub", "not a valid token"),
    ("raw-msisdn-no-opt-in", partner(headers='X-Msisdn = "msisdn"'), "X-Msisdn",
     "without opt-in"),
    ("raw-msisdn-table-no-opt-in",
     partner(headers='X-Msisdn = { claim = "msisdn", format = "+e164" }'), "X-Msisdn",
     "without opt-in"),
    ("case-duplicate-headers", partner(headers='X-Sub = "pseudonym"\nx-sub = "operator"'),
     "[partners.headers]", "differ only in case"),
    ("unknown-partner-key", partner(extra="colour = 1\n"), "colour", "unknown key"),
    ("bad-path", partner(extra='paths = ["billing"]\n'), "paths", "not a plain absolute path"),
    ("dot-path", partner(extra='paths = ["/a/../b"]\n'), "paths", "not a plain absolute path"),
    ("encoded-path", partner(extra='paths = ["/a%2fb"]\n'), "paths",
     "not a plain absolute path"),
    ("bad-port", partner(extra="ports = [70000]\n"), "ports", "out of range"),
    ("bad-format", partner(headers='X-Sub = { claim = "msisdn", format = "national" }',
                           extra="allow_raw_msisdn = true\n"), "X-Sub", "format"),
]


@pytest.mark.parametrize(("name", "text", "needle", "fragment"), LINT_CASES,
                         ids=[c[0] for c in LINT_CASES])
def test_lint_error_has_file_line_and_partner(name: str, text: str, needle: str,
                                              fragment: str) -> None:
    errors = errors_of(text)
    hits = [e for e in errors if fragment in e.message]
    assert hits, [str(e) for e in errors]
    err = hits[0]
    nth = 2 if name in ("duplicate-id", "host-in-two", "wildcard-overlap") else 1
    assert err.line == line_of(text, needle, nth), str(err)
    assert err.partner in ("p1", "p2")
    rendered = str(err)
    assert rendered.startswith(f"partners.toml:{err.line}:")
    assert f"partner '{err.partner}'" in rendered


def test_unknown_top_level_key_has_line() -> None:
    text = "colour = 1\n" + partner()
    [err] = errors_of(text)
    assert err.line == 1 and "unknown key 'colour'" in err.message


def test_missing_required_keys() -> None:
    text = '[[partners]]\nid = "p1"\npurpose = "billing"\n'
    messages = " ".join(e.message for e in errors_of(text))
    assert "hosts" in messages and "headers" in messages


def test_corrupt_toml_has_line() -> None:
    text = partner() + "[[partners]\nid = 'x'\n"
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "partners.toml")
    assert info.value.line == len(partner().splitlines()) + 1
    assert str(info.value).startswith(f"partners.toml:{info.value.line}: invalid TOML")


def test_all_errors_reported_at_once() -> None:
    text = partner(hosts='["*"]', headers='X_B = "imsi"', purpose="spam")
    assert len(errors_of(text)) >= 4


@pytest.mark.parametrize("text", [
    partner(),
    partner(hosts='["*.partner.example.com", "partner.example.com"]'),
    partner(hosts='["127.0.0.9", "[::1]"]'),
    partner(headers='X-Msisdn = "msisdn"', extra="allow_raw_msisdn = true\n"),
    # the same host, separated by paths or ports, is not ambiguous
    partner(extra='paths = ["/billing"]\n') + partner("p2", extra='paths = ["/age"]\n'),
    partner(extra="ports = [80]\n") + partner("p2", extra="ports = [8080]\n"),
])
def test_valid_policies_pass(text: str) -> None:
    policy, findings = parse_policy(text, "partners.toml")
    assert not [f for f in findings if f.level == "error"]
    assert policy.partners


def test_overlapping_paths_are_refused() -> None:
    text = partner(extra='paths = ["/billing"]\n') + partner("p2", extra='paths = ["/billing/x"]\n')
    assert any("also claimed" in e.message for e in errors_of(text))


# ---------------------------------------------------------------- matching

def compiled(text: str):
    policy, _ = parse_policy(text, "partners.toml")
    return policy


NOW = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()


def match(policy, host: str, port: int = 80, path: str | None = "/") -> str | None:
    normal = normalise_host(host)
    if normal is None:
        return None
    found = policy.matcher.match(normal, port, path, NOW)
    return found.id if found else None


@pytest.mark.parametrize(("host", "expected"), [
    ("partner.example.com", "p1"),
    ("PARTNER.Example.COM", "p1"),
    ("partner.example.com.", "p1"),
    ("partner.example.com..", None),
    ("partner.example.com.evil.test", None),
    ("evilpartner.example.com", None),
    ("xpartner.example.com", None),
    ("partner.example.co", None),
    ("a.partner.example.com", None),
    ("xn--prtner-2ua.example.com", None),  # punycode look-alike: a different name
    ("pártner.example.com", None),  # non-ASCII never matches
    ("partner.example.com/", None),
    ("partner.example.com@evil.test", None),
    ("", None),
])
def test_exact_host_matching(host: str, expected: str | None) -> None:
    assert match(compiled(partner()), host) == expected


def test_wildcards_match_subdomains_not_the_apex_and_not_substrings() -> None:
    policy = compiled(partner(hosts='["*.partner.example.com"]'))
    assert match(policy, "a.partner.example.com") == "p1"
    assert match(policy, "a.b.PARTNER.example.com.") == "p1"
    assert match(policy, "partner.example.com") is None
    assert match(policy, "apartner.example.com") is None
    assert match(policy, "a.partner.example.com.evil.test") is None


def test_ip_literals_match_only_a_partner_listing_that_ip() -> None:
    policy = compiled(partner(hosts='["127.0.0.9", "[2001:db8::1]"]') +
                      partner("p2", hosts='["*.example.com"]'))
    assert match(policy, "127.0.0.9") == "p1"
    assert match(policy, "[2001:DB8:0:0::1]") == "p1"
    assert match(policy, "127.0.0.10") is None
    assert match(policy, "[2001:db8::2]") is None
    assert match(policy, "9.0.0.127") is None
    assert match(policy, "[::ffff:127.0.0.9]") is None


def test_ports_scope_a_partner() -> None:
    policy = compiled(partner(extra="ports = [8443]\n"))
    assert match(policy, "partner.example.com", 8443) == "p1"
    assert match(policy, "partner.example.com", 80) is None


def test_paths_are_segment_prefixes_and_ambiguous_paths_fail_closed() -> None:
    policy = compiled(partner(extra='paths = ["/billing"]\n'))
    assert match(policy, "partner.example.com", path="/billing") == "p1"
    assert match(policy, "partner.example.com", path="/billing/x") == "p1"
    assert match(policy, "partner.example.com", path="/billingx") is None
    assert match(policy, "partner.example.com", path="/") is None
    assert match(policy, "partner.example.com", path=None) is None  # ambiguous → no match
    unscoped = compiled(partner())
    assert match(unscoped, "partner.example.com", path=None) == "p1"


def test_expired_partner_is_inactive() -> None:
    today = datetime.fromtimestamp(NOW, UTC).date()
    yesterday = compiled(partner(extra=f"expires = {today - timedelta(days=1)}\n"))
    assert match(yesterday, "partner.example.com") is None
    through_today = compiled(partner(extra=f"expires = {today}\n"))
    assert match(through_today, "partner.example.com") == "p1"
    p = through_today.partners[0]
    assert p.active(p.expires_at - 1) and not p.active(p.expires_at)


def test_normalise_host() -> None:
    assert normalise_host("Example.COM.") == "example.com"
    assert normalise_host("[::1]") == "[::1]"
    assert normalise_host("[0:0::1]") == "[::1]"
    for bad in ("", ".", "a..b", "-a.com", "a-.com", "a_b.com", "a b.com", "[::1", "[zz]",
                "é.com", "a" * 64 + ".com", "a/b", "a@b", "a:80"):
        assert normalise_host(bad) is None, bad


# ---------------------------------------------------------------- differential: HostMatcher

def reference_owners(partners: list[Partner], host: str, port: int, path: str | None,
                     now: float) -> set[str]:
    """Straightforward reference: compare label lists, no dicts, no walking."""
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    is_ip = host.startswith("[")
    try:
        ipaddress.IPv4Address(host)
        is_ip = True
    except ValueError:
        pass
    owners = set()
    for p in partners:
        if p.expires is not None and now >= datetime.combine(
                p.expires + timedelta(days=1), datetime.min.time(), UTC).timestamp():
            continue
        if p.ports and port not in p.ports:
            continue
        if p.paths and (path is None or not any(
                path == pre or pre == "/" or path.startswith(pre.rstrip("/") + "/")
                for pre in p.paths)):
            continue
        for pattern in p.hosts:
            if pattern.startswith("*."):
                suffix = pattern[2:].split(".")
                if not is_ip and len(labels) > len(suffix) and labels[-len(suffix):] == suffix:
                    owners.add(p.id)
            elif labels == pattern.split("."):
                owners.add(p.id)
    return owners


LABELS = ["a", "b", "p", "q", "test", "example", "com", "xn--p-1ga", "0", "9"]
label = st.sampled_from(LABELS)
name = st.lists(label, min_size=1, max_size=4).map(".".join)
pattern = st.one_of(name, name.map(lambda n: "*." + n),
                    st.sampled_from(["127.0.0.9", "10.0.0.1", "[::1]"]))


@st.composite
def partners_strategy(draw) -> list[Partner]:
    count = draw(st.integers(1, 4))
    out = []
    for i in range(count):
        hosts = tuple(draw(st.lists(pattern, min_size=1, max_size=3, unique=True)))
        ports = frozenset(draw(st.sets(st.sampled_from([80, 8080]), max_size=1)))
        paths = tuple(draw(st.lists(st.sampled_from(["/b", "/b/c", "/"]), max_size=1)))
        expires = draw(st.one_of(st.none(), st.sampled_from(
            [date(2026, 5, 31), date(2026, 6, 1), date(2026, 6, 2)])))
        out.append(Partner(f"p{i}", "billing", hosts, paths, ports, expires, False, ()))
    return out


@st.composite
def host_strategy(draw, partners: list[Partner]) -> str:
    patterns = [h for p in partners for h in p.hosts]
    base = draw(st.one_of(st.sampled_from(patterns), name))
    base = base[2:] if base.startswith("*.") else base
    if base.startswith("[") or (base[0].isdigit() and base.count(".") == 3):
        return base  # IP literals are matched as they are
    kind = draw(st.sampled_from(["same", "sub", "super", "concat", "prefixed", "raw"]))
    if kind == "sub":
        base = draw(label) + "." + base
    elif kind == "super" and "." in base:
        base = base.split(".", 1)[1]
    elif kind == "concat":
        base = base + "." + draw(name)
    elif kind == "prefixed":
        base = draw(label) + base
    if draw(st.booleans()):
        base = "".join(c.upper() if draw(st.booleans()) else c for c in base)
    if draw(st.booleans()) and not base.startswith("["):
        base += "."
    return base


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_host_matcher_agrees_with_reference(data) -> None:
    partners = data.draw(partners_strategy())
    host = data.draw(host_strategy(partners))
    port = data.draw(st.sampled_from([80, 8080]))
    path = data.draw(st.sampled_from(["/", "/b", "/b/c/d", "/bc", None]))
    now = data.draw(st.sampled_from([NOW, NOW + 86400, NOW - 86400]))
    normal = normalise_host(host)
    assert normal is not None
    owners = reference_owners(partners, host, port, path, now)
    found = HostMatcher(partners).match(normal, port, path, now)
    if not owners:
        assert found is None
    else:
        assert found is not None and found.id in owners
