"""The leak checker's analysis: which request headers reveal who the visitor is.

Sans-IO: a list of (name, value) pairs in, a `CheckReport` out. The web page, the JSON API
and (later) the canary all read the same report, so what a subscriber sees and what the
canary alarms on can never disagree.

Each header gets at most one finding, chosen by the most specific evidence:
  1. the name says IMSI, IMEI or tracking ID (`x-imsi`, `x-uidh`, ...)  -> that kind;
  2. the value holds a phone number, IMSI or IMEI                      -> that kind;
  3. a forwarding header (X-Forwarded-For, Via, ...) names an internal -> internal_address;
     address that the operator can map back to one subscriber
  4. the name is an identity name by the loose match (names.py)        -> identity_header.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher

from linewarden.identifiers import MOBILE_COUNTRY_CODES, luhn_valid
from linewarden.names import DEFAULT_IDENTITY_NAMES, IdentityNames, normalise

__all__ = [
    "FORWARDING_HEADERS",
    "INTERNAL_NETWORKS",
    "JSON_SCHEMA_VERSION",
    "MAX_SCANNED_REQUEST_CHARS",
    "MAX_SCANNED_VALUE_CHARS",
    "MOBILE_COUNTRY_CODES",
    "CheckReport",
    "Finding",
    "FindingKind",
    "HeaderLine",
    "analyse",
    "validate_regions",
]

FindingKind = Literal[
    "phone_number", "imsi", "imei", "tracking_id", "internal_address", "identity_header"
]

# Bump when a field of `CheckReport.to_json()` changes meaning or disappears (docs/checker.md).
JSON_SCHEMA_VERSION = 1

# How much of a request is searched for numbers. The page is public and the search costs
# ~10 us per character, so a hostile client could otherwise buy seconds of CPU per request.
# nginx's default `large_client_header_buffers 4 8k` rejects any header line over 8 KiB and
# any head over 32 KiB (h11 stops at 16 KiB), so a real request never hits these bounds.
# Past them, identity *names* are still flagged; only value searching stops.
MAX_SCANNED_VALUE_CHARS = 8 * 1024
MAX_SCANNED_REQUEST_CHARS = 32 * 1024

# Headers whose values are hop addresses. An internal address there is the handset's address
# inside the operator's network (or the operator's own kit): the operator's RADIUS records map it
# to one subscriber, so it is a quasi-identifier. RFC 7239 defines Forwarded; RFC 9110 §7.6.3
# Via; the X- ones are the de-facto variants that load balancers and CDNs emit.
FORWARDING_HEADERS: frozenset[str] = frozenset(
    normalise(n)
    for n in (
        "x-forwarded-for", "via", "forwarded", "x-real-ip", "x-client-ip",
        "x-originating-ip", "x-cluster-client-ip", "true-client-ip", "client-ip",
    )
)

# Addresses that never appear on the public internet: RFC 1918 private, RFC 6598 carrier-grade
# NAT (100.64/10, where mobile handsets live behind CGNAT), loopback, link-local, and the IPv6
# equivalents (RFC 4193 unique-local, link-local). Documentation ranges (192.0.2/24 ...) are
# deliberately *not* here: they are what public addresses look like in examples and tests.
INTERNAL_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
        "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
    )
)

# Suffixes of normalised names that pin the finding's kind regardless of the value format.
_KIND_BY_NAME_SUFFIX: tuple[tuple[str, FindingKind], ...] = (
    ("imsi", "imsi"),
    ("imei", "imei"),
    ("uidh", "tracking_id"),
    ("acr", "tracking_id"),
)

# A run of digits standing alone: not glued to letters (hex IDs), and not part of a dotted
# number (IP addresses, versions, decimals). An optional `+` or `00` international prefix.
_ALONE_BEFORE = r"(?<![0-9A-Za-z])(?<![0-9]\.)"
_ALONE_AFTER = r"(?![0-9A-Za-z])(?!\.[0-9])"
_DIGIT_RUN = re.compile(_ALONE_BEFORE + r"(\+|00)?([0-9]{7,15})" + _ALONE_AFTER)
# E.164 allows 7-digit numbers (Tokelau, Ascension), but a bare 7-8 digit run under a name that
# says nothing is far more often an order number or a counter, so only identity names get them.
_MIN_BARE_DIGITS_STRICT = 9
_FIFTEEN_DIGITS = re.compile(_ALONE_BEFORE + r"([0-9]{15})" + _ALONE_AFTER)
# Some gateways hex-encode the MSISDN's ASCII digits (e.g. user-identity-forward-msisdn:
# 343437343030393030313233 is "447400900123"): only ASCII digits 0x30-0x39, 8-15 of them.
_HEX_DIGITS = re.compile(r"(?<![0-9A-Fa-f])(?:3[0-9]){8,15}(?![0-9A-Fa-f])")
# Tokens in forwarding headers that might be addresses: IPv4, bracketed or bare IPv6.
_ADDRESS_TOKEN = re.compile(r"\[([0-9A-Fa-f:.]+)\]|([0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*)")

# Plain words for each kind, shown to the visitor. `{value}` is the detected value as displayed.
_MESSAGES: dict[FindingKind, str] = {
    "phone_number": "This site can see your phone number {value}",
    "imsi": "This site can see your SIM card's subscriber number (IMSI) {value}, "
    "which your mobile network uses to identify you",
    "imei": "This site can see your phone's serial number (IMEI) {value}",
    "tracking_id": "This site can see a tracking ID your mobile network adds to your requests "
    "({value}); sites can use it to follow you even after you clear cookies",
    "internal_address": "This site can see your connection's internal network address {value}, "
    "which your mobile network can link to you",
    "identity_header": "This site received {header}, a header mobile networks use to pass on "
    "who you are: {value}",
}

# An identity name with an empty value reveals nothing itself, but its presence means something
# on the path adds (or failed to strip) identity headers.
_EMPTY_IDENTITY_MESSAGE = (
    "This site received {header}, a header mobile networks use to pass on who you are "
    "(empty this time)"
)

# Words for the verdict ("this site can see your phone number and IMEI").
_NOUNS: dict[FindingKind, str] = {
    "phone_number": "phone number",
    "imsi": "SIM subscriber number (IMSI)",
    "imei": "phone's serial number (IMEI)",
    "tracking_id": "network tracking ID",
    "internal_address": "internal network address",
    "identity_header": "identity header",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One identity-bearing header, explained in plain words."""

    kind: FindingKind
    header: str  # the header name as received
    index: int  # position of the header in the request (0-based)
    value: str  # what was detected, formatted for people (e.g. "+44 7400 900123"); may be ""
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "header": self.header,
            "index": self.index,
            "value": self.value,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class HeaderLine:
    """One received header, in order, with its finding if it reveals identity."""

    name: str
    value: str
    finding: Finding | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "flagged": self.finding is not None}


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Every header received, in order, and what they reveal."""

    headers: tuple[HeaderLine, ...]

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(h.finding for h in self.headers if h.finding is not None)

    @property
    def identity_revealed(self) -> bool:
        return any(h.finding is not None for h in self.headers)

    @property
    def revealed(self) -> tuple[FindingKind, ...]:
        """The kinds revealed, each once, in order of first appearance."""
        return tuple(dict.fromkeys(f.kind for f in self.findings))

    @property
    def headline(self) -> str:
        return "Identity revealed" if self.identity_revealed else "No identity revealed"

    @property
    def summary(self) -> str:
        """One sentence under the headline, in plain words."""
        if not self.identity_revealed:
            return (
                "None of the headers this site received carries your phone number or "
                "another identifier."
            )
        return f"This site can see your {_join(_NOUNS[kind] for kind in self.revealed)}."

    @property
    def verdict(self) -> str:
        """Headline and summary in one line: "Identity revealed: this site can see ..."."""
        return f"{self.headline}: {self.summary[0].lower()}{self.summary[1:]}"

    def to_json(self) -> dict[str, Any]:
        """The JSON document served at /api/check (schema in docs/checker.md)."""
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "identity_revealed": self.identity_revealed,
            "verdict": self.verdict,
            "revealed": list(self.revealed),
            "findings": [f.to_json() for f in self.findings],
            "headers": [h.to_json() for h in self.headers],
        }


def validate_regions(regions: Sequence[str]) -> tuple[str, ...]:
    """Upper-case the region hints and reject ones phonenumbers does not know (e.g. "UK")."""
    cleaned = tuple(dict.fromkeys(r.strip().upper() for r in regions))
    unknown = [r for r in cleaned if r not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        raise ValueError(
            f"unknown region {', '.join(unknown)}: use ISO 3166-1 alpha-2 codes such as GB, DE, US"
        )
    return cleaned


def analyse(
    headers: Sequence[tuple[str, str]],
    *,
    regions: Sequence[str] = ("GB",),
    names: IdentityNames = DEFAULT_IDENTITY_NAMES,
) -> CheckReport:
    """Explain what each header reveals. Keeps duplicates and the order received."""
    hints = validate_regions(regions)
    lines = []
    budget = MAX_SCANNED_REQUEST_CHARS
    for index, (name, value) in enumerate(headers):
        scanned = value[: min(MAX_SCANNED_VALUE_CHARS, budget)]
        budget -= len(scanned)
        found = _classify(name, value, scanned, hints, names)
        finding = None
        if found is not None:
            kind, shown = found
            template = _MESSAGES[kind] if shown else _EMPTY_IDENTITY_MESSAGE
            message = template.format(header=name, value=shown)
            finding = Finding(kind, name, index, shown, message)
        lines.append(HeaderLine(name, value, finding))
    return CheckReport(tuple(lines))


def _classify(
    name: str, value: str, scanned: str, regions: tuple[str, ...], names: IdentityNames
) -> tuple[FindingKind, str] | None:
    """The header's kind and the detected value as shown, or None if it reveals nothing.

    `scanned` is the part of `value` that may be searched (see MAX_SCANNED_REQUEST_CHARS).
    """
    norm = normalise(name)
    identity_name = names.is_identity(name)
    if identity_name and not value.strip():
        return "identity_header", ""
    if identity_name:
        for suffix, kind in _KIND_BY_NAME_SUFFIX:
            if norm.endswith(suffix):
                return kind, value.strip()
    detected = _identifier_in(scanned, regions, strict=not identity_name)
    if detected is not None:
        return detected
    if norm in FORWARDING_HEADERS:
        address = _internal_address_in(scanned)
        if address is not None:
            return "internal_address", address
    if identity_name:
        return "identity_header", value.strip()
    return None


def _identifier_in(
    value: str, regions: tuple[str, ...], *, strict: bool
) -> tuple[FindingKind, str] | None:
    """A phone number, IMSI or IMEI in the value.

    `strict` is for headers whose name says nothing: only numbers written the way numbers are
    written (international, or national with the trunk prefix) count. Under an identity name,
    a bare national number ("7400900123" under x-msisdn) is accepted too.
    """
    phone = _phone_number_in(value, regions, strict=strict)
    if phone is not None:
        return "phone_number", phone
    for match in _FIFTEEN_DIGITS.finditer(value):
        digits = match.group(1)
        # An IMEI always passes Luhn; an IMSI has no check digit and passes 1 time in 10, so
        # Luhn decides first (3GPP TS 23.003 §6.2.1: the IMEI check digit).
        if luhn_valid(digits):
            return "imei", digits
        if digits[:3] in MOBILE_COUNTRY_CODES:
            return "imsi", digits
    return None


def _phone_number_in(value: str, regions: tuple[str, ...], *, strict: bool) -> str | None:
    for number in _phone_candidates(value, regions, strict=strict):
        if phonenumbers.is_valid_number(number):
            return str(phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL))
    return None


def _phone_candidates(
    value: str, regions: tuple[str, ...], *, strict: bool
) -> Iterator[phonenumbers.PhoneNumber]:
    # 1. Written numbers: "+44 7400 900123", "07400 900123", "tel:+44...". The matcher at
    #    VALID leniency already insists on a valid number and a trunk prefix for national forms.
    for region in regions:
        for match in PhoneNumberMatcher(value, region, leniency=Leniency.VALID):
            yield match.number
    # 2. E.164 without the plus, as HE proxies send it ("447400900123"), for any country.
    shortest = _MIN_BARE_DIGITS_STRICT if strict else 0
    digit_runs = [m.group(2) for m in _DIGIT_RUN.finditer(value) if len(m.group(2)) >= shortest]
    digit_runs += [bytes.fromhex(m.group(0)).decode("ascii") for m in _HEX_DIGITS.finditer(value)]
    for digits in digit_runs:
        parsed = _parse(f"+{digits}", None)
        if parsed is not None:
            yield parsed
    # 3. Under an identity name only: any form the region hints accept ("7400900123").
    if not strict:
        for digits in [*digit_runs, value.strip()]:
            for region in regions:
                parsed = _parse(digits, region)
                if parsed is not None:
                    yield parsed


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


def _internal_address_in(value: str) -> str | None:
    for match in _ADDRESS_TOKEN.finditer(value):
        address = _ip_address(match.group(1) or match.group(2))
        if address is not None and _is_internal(address):
            return str(address)
    return None


def _ip_address(token: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # "10.0.0.1:8080" (XFF with port, Via received-by) -> strip the port; IPv6 ports come
    # bracketed, which the token regex already removed.
    candidates = [token]
    if token.count(":") == 1:
        candidates.append(token.split(":", 1)[0])
    for candidate in candidates:
        try:
            return ipaddress.ip_address(candidate)
        except ValueError:
            continue
    return None


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in INTERNAL_NETWORKS)


def _join(words: Iterator[str]) -> str:
    items = list(words)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
