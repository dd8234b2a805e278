"""Identity header names for the peer benchmark, shared by run.py and the peers' add-ons.

A copy of PRODUCT.md's reference list and loose match (as in src/linewarden/names.py), kept
here so the mitmproxy add-on and the proxy.py plugin run in the bench venv without importing
linewarden. Loose match: lower-case the name, drop every non-letter/digit, then the result is
one of the known names or ends with one of the suffixes.
"""

from __future__ import annotations

import re

KNOWN = (
    "x-up-calling-line-id", "x-msisdn", "msisdn", "x-nokia-msisdn", "x-wap-msisdn",
    "x-h3g-msisdn", "x-up-subno", "x-imsi", "x-nokia-imsi", "x-uidh", "x-acr", "x-vf-acr",
    "x-hts-clid", "x-nx-clid", "x-wap-3gpp-msisdn", "x-wap-3gpp-imsi",
    "x-wap-network-client-msisdn", "user-identity-forward-msisdn", "x-msp-msisdn",
    "x-wte-msisdn", "x-fh-msisdn", "mscope-msisdn", "i-msisdn", "x-bam-msisdn",
    "x-up-vodacomgw-subid", "x-jinny-cid", "x-orange-id", "x-access-subnym",
    "x-internet-msisdn", "x-msisdn-alias", "x-h3g-party-id", "x-nokia-alias",
    "x-subscriber-id", "x-forwarded-msisdn", "x-imei", "x-att-deviceid",
)
SUFFIXES = (
    "msisdn", "callinglineid", "callingline", "subno", "subid", "subscriberid",
    "imsi", "imei", "clid", "uidh", "acr",
)
# The enrichment every peer performs for the partner host.
PARTNER_HOST = "partner.test"
OTHER_HOST = "other.test"
ENRICH_HEADER = "X-Up-Calling-Line-Id"
MSISDN = "447400900123"

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
EXACT = frozenset(_NON_ALNUM.sub("", n) for n in KNOWN)


def normalise(name: str) -> str:
    return _NON_ALNUM.sub("", name.lower())


def is_identity(name: str) -> bool:
    norm = normalise(name)
    return norm in EXACT or norm.endswith(SUFFIXES)


def loose_regex() -> str:
    """One regex over a lower-cased header name that is the loose match: every known name or
    suffix with any run of non-alphanumerics allowed between (and after) its letters."""
    sep = "[^a-z0-9]*"

    def spread(word: str) -> str:
        return sep.join(word) + sep

    exact = "|".join(spread(n) for n in sorted(EXACT))
    suffixes = "|".join(spread(s) for s in sorted(set(SUFFIXES)))
    return f"^{sep}({exact})$|({suffixes})$"


def spellings(name: str) -> list[str]:
    """The finite spellings a name-list proxy (Squid) can be told about: `-`, `_`, `.` and
    nothing between the words."""
    words = name.split("-")
    return list(dict.fromkeys(sep.join(words) for sep in ("-", "_", ".", "")))
