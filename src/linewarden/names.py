"""Identity header names: the reference list, normalisation and the loose match.

Back ends match identity headers loosely (CGI/WSGI/PHP/nginx turn `X_MSISDN`, `X.MSISDN`
and `X-MSISDN` into the same variable), so the gateway must strip by the *normalised* name:
lower-cased with every non-letter/digit removed, matched exactly or by suffix.
"""

from __future__ import annotations

from collections.abc import Iterable

# Names seen carrying MSISDN, IMSI, IMEI or tracking IDs
# (Mulliner 2010; the O2 leak of January 2012 used x-up-calling-line-id).
KNOWN_IDENTITY_HEADERS: tuple[str, ...] = (
    "x-up-calling-line-id", "x-msisdn", "msisdn", "x-nokia-msisdn", "x-wap-msisdn",
    "x-h3g-msisdn", "x-up-subno", "x-imsi", "x-nokia-imsi", "x-uidh", "x-acr", "x-vf-acr",
    "x-hts-clid", "x-nx-clid", "x-wap-3gpp-msisdn", "x-wap-3gpp-imsi",
    "x-wap-network-client-msisdn", "user-identity-forward-msisdn", "x-msp-msisdn",
    "x-wte-msisdn", "x-fh-msisdn", "mscope-msisdn", "i-msisdn", "x-bam-msisdn",
    "x-up-vodacomgw-subid", "x-jinny-cid", "x-orange-id", "x-access-subnym",
    "x-internet-msisdn", "x-msisdn-alias", "x-h3g-party-id", "x-nokia-alias",
    "x-subscriber-id", "x-forwarded-msisdn", "x-imei", "x-att-deviceid",
)

# Suffixes of normalised names that consumers treat as identity: a name ending in one of
# these (`x-foo-msisdn`, `x-vf-acr`) is stripped and flagged like the names above.
IDENTITY_SUFFIXES: tuple[str, ...] = (
    "msisdn", "callinglineid", "callingline", "subno", "subid", "subscriberid",
    "imsi", "imei", "clid", "uidh", "acr",
)

# Characters that may appear in a header name we forward. RFC 9110 §5.6.2 allows more
# (tchar includes `_ . ~ ! # $ % & ' * + ^ | \``), but `_` and `.` are exactly what CGI,
# PHP and nginx fold into `-`, so a name using them is an alias waiting to be exploited.
_SAFE_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

_SAFE_NAME_BYTES = bytes(sorted(_SAFE_NAME_CHARS))

# RFC 9110 §5.6.2 tchar: anything else in a field name is not a valid token.
TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# translate() deletes before it maps, so upper-case letters must survive the delete step.
_DROP = bytes(c for c in range(256) if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122))
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def normalise(name: bytes | str) -> str:
    """Lower-case and drop every byte that is not an ASCII letter or digit."""
    raw = name.encode("latin-1", "replace") if isinstance(name, str) else name
    return raw.translate(_LOWER, _DROP).decode("ascii")


def is_token(name: bytes | str) -> bool:
    raw = name.encode("latin-1", "replace") if isinstance(name, str) else name
    return bool(raw) and all(c in TCHAR for c in raw)


def has_alias_chars(name: bytes) -> bool:
    """True if the name uses anything but letters, digits and `-` (e.g. `_`, `.`, `~`)."""
    return bool(name.translate(None, _SAFE_NAME_BYTES))  # C-speed: runs for every header


# Bound the memo so a client sending endless distinct names cannot grow it without limit.
# (A module constant: a class attribute of a compiled class reads as a descriptor.)
NAME_CACHE_MAX = 4096


class IdentityNames:
    """The compiled loose matcher: known names plus operator and partner additions."""

    __slots__ = ("_cache", "_exact", "_suffixes")

    def __init__(self, extra_names: Iterable[str] = (), extra_suffixes: Iterable[str] = ()):
        self._exact = frozenset(normalise(n) for n in (*KNOWN_IDENTITY_HEADERS, *extra_names))
        self._suffixes = tuple(
            sorted({normalise(s) for s in (*IDENTITY_SUFFIXES, *extra_suffixes)} - {""})
        )
        self._cache: dict[bytes, bool] = {}

    def is_identity(self, name: bytes | str) -> bool:
        key = name.encode("latin-1", "replace") if isinstance(name, str) else name
        hit = self._cache.get(key)
        if hit is None:
            norm = normalise(key)
            hit = norm in self._exact or norm.endswith(self._suffixes)
            if len(self._cache) < NAME_CACHE_MAX:
                self._cache[key] = hit
        return hit

    @property
    def exact(self) -> frozenset[str]:
        return self._exact

    @property
    def suffixes(self) -> tuple[str, ...]:
        return self._suffixes


DEFAULT_IDENTITY_NAMES = IdentityNames()
