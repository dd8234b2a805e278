"""Properties over generated inputs, and differential checks against references written
differently from the code under test (h11's test_against_stdlib_http, in spirit)."""

from __future__ import annotations

import ipaddress
from html import escape

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from linewarden.checker import MOBILE_COUNTRY_CODES, analyse
from linewarden.names import KNOWN_IDENTITY_HEADERS
from linewarden.web.checker import render_page

# Header text as it reaches the checker: uvicorn decodes bytes as latin-1, so any code point
# below 256 can appear (minus CR/LF, which end a header line).
header_text = st.text(st.characters(max_codepoint=255, blacklist_characters="\r\n"), max_size=80)
header_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,30}", fullmatch=True)


@given(st.lists(st.tuples(header_names, header_text), max_size=12))
def test_every_header_is_reported_in_order(headers: list[tuple[str, str]]) -> None:
    report = analyse(headers)
    assert [(h.name, h.value) for h in report.headers] == headers
    assert report.identity_revealed == bool(report.findings)
    for finding in report.findings:
        assert report.headers[finding.index].finding is finding
        assert finding.header == headers[finding.index][0]


def _alias(name: str, draw_sep: str, upper: bool) -> str:
    # What CGI/PHP/nginx fold together: X-MSISDN, X_MSISDN, x.msisdn.
    aliased = name.replace("-", draw_sep)
    return aliased.upper() if upper else aliased


@given(st.sampled_from(KNOWN_IDENTITY_HEADERS), st.sampled_from(["-", "_", "."]), st.booleans(),
       header_text)
def test_known_identity_names_are_flagged_whatever_the_value(
    name: str, sep: str, upper: bool, value: str
) -> None:
    report = analyse([(_alias(name, sep, upper), value)])
    assert report.identity_revealed


def _luhn_check_digit(body: str) -> str:
    # Reference written the "double every second digit from the right" way, as GSMA TS.06 does.
    digits = [int(c) for c in body]
    for i in range(len(digits) - 1, -1, -2):
        digits[i] = sum(divmod(digits[i] * 2, 10))
    return str((10 - sum(digits) % 10) % 10)


@given(st.from_regex(r"[0-9]{14}", fullmatch=True))
def test_every_luhn_valid_15_digit_value_is_flagged(body: str) -> None:
    imei = body + _luhn_check_digit(body)
    (finding,) = analyse([("x-device-info", imei)]).findings
    assert finding.kind in ("imei", "phone_number")  # a 15-digit E.164 number wins if valid


@given(st.sampled_from(sorted(MOBILE_COUNTRY_CODES)), st.from_regex(r"[0-9]{12}", fullmatch=True))
def test_every_15_digit_value_with_an_mcc_is_flagged(mcc: str, rest: str) -> None:
    assert analyse([("x-client-ref", mcc + rest)]).identity_revealed


def _mobile_examples() -> list[tuple[str, str]]:
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        number = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        if number is not None:
            found.append((region, phonenumbers.format_number(number, PhoneNumberFormat.E164)))
    return found


@pytest.mark.parametrize(("region", "e164"), _mobile_examples())
def test_every_countrys_mobile_number_is_flagged(region: str, e164: str) -> None:
    # With the plus anywhere; without it (the HE way) under any identity name.
    assert analyse([("x-note", f"call {e164} now")]).findings[0].kind == "phone_number"
    assert analyse([("x-msisdn", e164[1:])]).findings[0].kind == "phone_number"
    if len(e164) - 1 >= 9:  # bare 7-8 digit runs are only trusted under identity names
        assert analyse([("x-client-tag", e164[1:])]).findings[0].kind == "phone_number"


# Reference for "internal": integer ranges, written independently of ipaddress.ip_network.
_V4_INTERNAL = [
    (0x0A000000, 8), (0xAC100000, 12), (0xC0A80000, 16), (0x64400000, 10), (0x7F000000, 8),
    (0xA9FE0000, 16),
]
_V6_INTERNAL = [(1, 128), (0xFC << 120, 7), (0xFE80 << 112, 10)]


def _reference_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    value, bits, table = int(address), address.max_prefixlen, _V4_INTERNAL
    if address.version == 6 and value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d is IPv4 underneath
        value, bits = value & 0xFFFFFFFF, 32
    elif address.version == 6:
        table = _V6_INTERNAL
    return any(value >> (bits - plen) == base >> (bits - plen) for base, plen in table)


@settings(max_examples=300)
@given(st.ip_addresses(), st.ip_addresses(v=4))
@example(ipaddress.ip_address("::ffff:10.1.2.3"), ipaddress.ip_address("8.8.8.8"))
@example(ipaddress.ip_address("100.127.255.255"), ipaddress.ip_address("100.128.0.0"))
def test_internal_addresses_match_the_reference(
    first: ipaddress.IPv4Address | ipaddress.IPv6Address, public_hop: ipaddress.IPv4Address
) -> None:
    expected = _reference_internal(first) or _reference_internal(public_hop)
    xff = f"{first}, {public_hop}"
    if isinstance(first, ipaddress.IPv6Address):
        forwarded = f'for="[{first}]:4711", for={public_hop}'
    else:
        forwarded = f"for={first}:4711, for={public_hop}"
    for name, value in (("x-forwarded-for", xff), ("forwarded", forwarded)):
        report = analyse([(name, value)])
        kinds = [f.kind for f in report.findings]
        assert kinds == (["internal_address"] if expected else []), value


@given(header_names, header_text)
def test_page_escapes_every_value(name: str, value: str) -> None:
    html = render_page(analyse([(name, value)]))
    shown = f'<span class="name">{escape(name)}</span>: <span class="value">{escape(value)}</span>'
    assert shown in html
