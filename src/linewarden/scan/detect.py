"""Finding identity in log bytes: identity headers by name, phone numbers, IMSI and IMEI.

One pass over a chunk of whole lines. Byte regexes and `bytes.find` do the searching
(C speed); only their candidates reach Python and, after shape checks, `phonenumbers`:

- Numbers: a *run* is a maximal stretch of digits and number punctuation. A number counts
  only in `+`, `00`, national trunk-prefix (`0` in GB) or bare country-code
  (`447400900123`) form for the configured regions, so most runs in a log (dates, times,
  byte counts, ports, epoch stamps, order ids) cannot hold one. The *marker* regex finds
  the places where an accepted form can begin with enough digits after it; only the runs
  around a marker reach Python (in a real log, a few in a hundred). Bare national numbers
  without the trunk prefix (`7400900123`) are not reported: in logs they are
  indistinguishable from order ids, and `phonenumbers` would accept them.
- Headers: a regex built from `linewarden.names` finds `name: value` / `name=value` /
  `"name":"value"` where the name ends like an identity header; every such value is a
  finding whatever it holds (an opaque `x-uidh` token leaks identity as well as a number).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata

from linewarden.identifiers import (
    E164_MAX_DIGITS,
    E164_MIN_DIGITS,
    MOBILE_COUNTRY_CODES,
    luhn_valid,
)
from linewarden.names import DEFAULT_IDENTITY_NAMES, IdentityNames, normalise

MSISDN = "msisdn"
IMSI = "imsi"
IMEI = "imei"
# The value of an identity header that is not a number we can classify (x-uidh, x-acr, ...).
IDENTITY = "identity"
KINDS: tuple[str, ...] = (MSISDN, IMSI, IMEI, IDENTITY)

DEFAULT_REGIONS: tuple[str, ...] = ("GB",)

# Nothing shorter than the shortest E.164 number is worth a parse.
_MIN_DIGITS = E164_MIN_DIGITS
_MAX_DIGITS = E164_MAX_DIGITS
# A formatted number is at most a handful of groups ("+44 (0) 7400 900 123" is five).
_MAX_GROUPS = 6
# Header values longer than this are not an identity token but a mis-parse of the line.
_MAX_HEADER_VALUE = 256
# Bounds on the memos: logs repeat the same subscribers, and the bounds keep a scan of a
# file full of distinct ids at constant memory. The first memo maps a candidate exactly as
# written to its verdict (a repeat costs one lookup); the second maps a parse key (the
# digits in one form) to its E.164, so that the same number written another way is not
# parsed again; header values (by raw value and name) share the second bound. An entry is
# about 200 bytes (tracemalloc), so all three full are about 75 MiB per worker; the dense
# 20 MB benchmark sample fills them to 25 MiB. The single 2**16 memo these replace was
# smaller than that sample's distinct numbers, so it was cleared over and over.
_MEMO_MAX = 1 << 18
_PARSE_MEMO_MAX = 1 << 16
# Identity header names seen in a log are few; the bound only guards against a hostile log.
_NAME_MEMO_MAX = 4096

# The prefilter: bytes are mapped to a "shape" where digits and number punctuation
# (`+ - ( )` and space) become `0` and everything else `x`; `bytes.find` of a run of
# `_RUN_MIN` zeros (CPython's fast search, hundreds of MB/s) finds the only places a number
# can be. Dots are deliberately not number punctuation: they make IPv4 addresses, versions
# and durations, and dotted phone formats (06.12.34.56.78) are rare in logs.
_RUN_MIN = 8  # the shortest accepted number, "+" and 7 digits
_SHAPE = bytes(0x30 if (48 <= c <= 57 or c in b" ()+-") else 0x78 for c in range(256))
# Digits as `0`, `-` kept, everything else `x`: 15-digit groups (IMSI, IMEI) and dashed
# IMEIs can start with any digit, so they are found by `bytes.find` here, not by the marker.
_DIGITS = bytes(0x30 if 48 <= c <= 57 else (0x2D if c == 0x2D else 0x78) for c in range(256))
_FIFTEEN = b"0" * 15
_DASHED = b"00-000000-000000-0"
# "then at least n more digits, number punctuation between", possessive (no backtracking).
_MORE_DIGITS = rb"(?:[ ()+\-]*+\d){%d}"
_GROUP = re.compile(rb"\S+")
_CARD = re.compile(rb"\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?")
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NOT_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)
_IMEI_DASHED = re.compile(rb"\d{2}-\d{6}-\d{6}-\d")

# IMEI reporting-body identifiers: the first two digits of every allocated TAC
# (GSMA TS.06). Amex cards (34/37) and most other 15-digit Luhn-valid ids fall outside.
_IMEI_RBI_TEXT = "01 10 30 33 35 44 45 49 50 51 52 53 54 86 91 98 99"
_IMEI_RBI = frozenset(_IMEI_RBI_TEXT.split())

# Prefixes that log formats put before a header's own name: nginx `$http_x_msisdn`, CGI
# `HTTP_X_MSISDN`, JSON `request.headers.x-msisdn`. Stripped (normalised) before the exact
# name match, so `http_x_orange_id` is recognised like `x-orange-id`.
_NAME_PREFIXES: tuple[str, ...] = (
    "requestheaders", "requestheader", "reqheaders", "reqheader", "headers", "header",
    "request", "http",
)
_NAME_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz_-.$")
_EMPTY_VALUES = frozenset({"", "-", "null", "none", "nil", "unknown", "undefined", "n/a"})
_VALUE_NUMBER = re.compile(rb"\+?\d[\d \-.()]*\d")
# A redaction token (see redact.DEFAULT_TOKEN): a rescan must not report it.
_TOKEN_VALUE = re.compile(rb"\[[A-Za-z0-9_:.=-]*\]")
_VALUE_TOKEN = re.compile(rb"[^\s\"'&;,}\])<>|]+")


# A finding before its line number is known: (kind, start, end, value, header).
_Span = tuple[str, int, int, str, str | None]
# A trie of bytes: byte -> subtrie, with key -1 where a word ends.
_Trie = dict[int, "_Trie"]


class Finding(NamedTuple):
    """One identity found in a chunk: where (byte span, 0-based line in the chunk) and what.

    `value` is canonical, so the same subscriber counts once however it was written:
    E.164 with `+` for numbers, plain digits for IMSI/IMEI, the raw token otherwise.
    A named tuple, not a frozen dataclass: as immutable, and built five times faster
    (a dense log has thousands per MB).
    """

    kind: str
    start: int
    end: int
    line: int
    value: str
    header: str | None = None


def is_imei(digits: str) -> bool:
    return len(digits) == 15 and digits[:2] in _IMEI_RBI and luhn_valid(digits)


def is_imsi(digits: str) -> bool:
    return len(digits) == 15 and digits[:3] in MOBILE_COUNTRY_CODES


def _loose(norm: str) -> bytes:
    """A byte regex matching `norm` with an optional `-`, `_` or `.` between its characters."""
    return rb"[-_.]?".join(re.escape(c.encode()) for c in norm)


def header_display_name(raw: bytes) -> str:
    """A stable display name for counting: lower-case, `-` separated, log prefixes removed."""
    name = raw.decode("latin-1").lower().lstrip("$").replace("_", "-").replace(".", "-")
    for prefix in ("request-headers-", "req-headers-", "headers-", "header-", "http-"):
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
            break
    return name


class Detector:
    """Finds identity in chunks of whole lines. Build once; `scan` is pure and re-entrant."""

    def __init__(
        self, regions: Sequence[str] = DEFAULT_REGIONS, names: IdentityNames | None = None
    ) -> None:
        self.regions = tuple(r.upper() for r in regions)
        self.names = names or DEFAULT_IDENTITY_NAMES
        self._country_codes: frozenset[str] = frozenset()
        self._national: list[tuple[str, str]] = []  # (trunk prefix, region)
        self._international = ["00"]
        self._setup_regions()
        self._header_re = self._compile_header_re()
        self._marker_re = self._compile_marker_re()
        self._memo: dict[bytes, tuple[str, str] | None] = {}  # `_classify`, by written text
        self._parsed: dict[str, str | None] = {}  # `_validate`, by parse key
        self._values: dict[tuple[bytes, str], tuple[str, str]] = {}  # header values
        self._names: dict[bytes, str | None] = {}  # raw header name -> display name or None

    # -- configuration ------------------------------------------------------------------

    def _setup_regions(self) -> None:
        codes: set[str] = set()
        for region in self.regions:
            meta = PhoneMetadata.metadata_for_region(region)
            if meta is None:
                raise ValueError(f"unknown region {region!r}; use an ISO 3166 code such as GB")
            codes.add(str(meta.country_code))
            if meta.national_prefix and meta.national_prefix != str(meta.country_code):
                self._national.append((meta.national_prefix, region))
            prefix = meta.international_prefix
            if prefix and prefix.isdigit() and prefix not in self._international:
                self._international.append(prefix)
        self._country_codes = frozenset(codes)
        national = tuple(prefix for prefix, _ in self._national)
        prefixes = sorted({*national, *self._international, *codes})
        self._start_prefixes = tuple(p.encode() for p in prefixes)

    def header_tails(self) -> list[str]:
        """The name endings the header regex anchors on: every suffix, plus exact names not
        covered by a suffix. The full name is recovered by walking back from the tail and
        checked with `is_identity_name`."""
        suffixes = self.names.suffixes
        tails = set(suffixes)
        tails.update(n for n in self.names.exact if not n.endswith(suffixes))
        return sorted(tails)

    def _compile_header_re(self) -> re.Pattern[bytes]:
        # `tail ["']? [ \t]* [:=]`, matched on the *reversed* lower-cased chunk: the pattern
        # then starts with the separator, a one-byte class the regex engine skips to in C,
        # and the tails (reversed, as a trie) are tried only there. Forwards it started with
        # any tail letter and ran at half the speed (bench/results/scan.md).
        reversed_tails = _trie([t[::-1].encode() for t in self.header_tails()])
        # The class after the tail walks back over the rest of the name (`_NAME_CHARS`).
        return re.compile(rb"[:=][ \t]*[\"']?(" + reversed_tails + rb")[0-9a-z_\-.$]*")

    def _compile_marker_re(self) -> re.Pattern[bytes]:
        # Where a number in an accepted form can begin (see `_may_start`): `+` or `(` with 7
        # digits after, `%2B` with 6, or a start prefix (trunk `0`, `00`, a country code) not
        # preceded by a digit with enough digits after. Every branch starts with a literal
        # byte, so the engine skips in C to the next `+ ( %` or prefix digit.
        branches = [
            rb"\+" + _MORE_DIGITS % (_MIN_DIGITS),
            rb"\(" + _MORE_DIGITS % (_MIN_DIGITS),
            rb"%2[Bb]" + _MORE_DIGITS % (_MIN_DIGITS - 1),
        ]
        for prefix in self._start_prefixes:
            first = re.escape(prefix[:1])
            more = max(_MIN_DIGITS - len(prefix), 0)
            branches.append(
                first + rb"(?<![0-9]" + first + rb")" + re.escape(prefix[1:]) + _MORE_DIGITS % more
            )
        return re.compile(b"|".join(branches))

    # -- the scan -----------------------------------------------------------------------

    def scan(self, chunk: bytes) -> list[Finding]:
        """All findings in `chunk`, in order, with 0-based line numbers inside the chunk."""
        spans = self._header_spans(chunk)
        spans.extend(self._number_spans(chunk, spans))
        spans.sort(key=lambda s: s[1])
        findings: list[Finding] = []
        line = 0
        last = 0
        for kind, start, end, value, header in spans:
            line += chunk.count(b"\n", last, start)
            last = start
            findings.append(Finding(kind, start, end, line, value, header))
        return findings

    def header_matches(self, lowered: bytes) -> list[tuple[int, int, int]]:
        """(name start, tail end, value start) of every `tail ["']? [ \t]* [:=] [ \t]*` in
        `lowered`, in order; the name is the tail with the name characters before it.
        Matches cannot overlap (a name holds no separator)."""
        size = len(lowered)
        out = []
        for m in self._header_re.finditer(lowered[::-1]):
            value_start = size - m.start()
            while value_start < size and lowered[value_start] in b" \t":
                value_start += 1
            out.append((size - m.end(), size - m.start(1), value_start))
        out.reverse()
        return out

    def _header_spans(self, chunk: bytes) -> list[_Span]:
        out: list[_Span] = []
        lowered = chunk.lower()
        for name_start, tail_end, value_start in self.header_matches(lowered):
            if name_start and _TOKEN_VALUE.match(chunk, name_start - 1):
                continue  # inside a redaction token such as "[MSISDN:3f2a...]"
            raw_name = chunk[name_start:tail_end]
            header = self._header_name(raw_name)
            if header is None:
                continue
            value_span = _header_value(chunk, value_start)
            if value_span is None:
                continue
            vs, ve = value_span
            kind, value = self._classify_header_value(chunk[vs:ve], header)
            out.append((kind, vs, ve, value, header))
        return out

    def _header_name(self, raw_name: bytes) -> str | None:
        """The display name of an identity header's raw name, None if not one (memoised)."""
        try:
            return self._names[raw_name]
        except KeyError:
            pass
        name = header_display_name(raw_name) if self.is_identity_name(raw_name) else None
        if len(self._names) >= _NAME_MEMO_MAX:
            self._names.clear()
        self._names[raw_name] = name
        return name

    def is_identity_name(self, raw_name: bytes) -> bool:
        norm = normalise(raw_name)
        if not norm:
            return False
        if self.names.is_identity(norm):
            return True
        for prefix in _NAME_PREFIXES:
            if norm.startswith(prefix) and self.names.is_identity(norm[len(prefix):]):
                return True
        return False

    def _classify_header_value(self, raw: bytes, header: str) -> tuple[str, str]:
        key = (raw, header)
        try:
            return self._values[key]
        except KeyError:
            pass
        result = self._classify_header_value_new(raw, header)
        if len(self._values) >= _PARSE_MEMO_MAX:
            self._values.clear()
        self._values[key] = result
        return result

    def _classify_header_value_new(self, raw: bytes, header: str) -> tuple[str, str]:
        if raw.startswith((b"%2b", b"%2B")):
            raw = b"+" + raw[3:]
        digits = raw.translate(None, _NOT_DIGITS).decode()
        # Only digits and number punctuation: classify it; anything else is an opaque token.
        if len(digits) >= _MIN_DIGITS and not raw.translate(None, b"0123456789+ -()."):
            norm_header = normalise(header)
            if len(digits) == 15 and norm_header.endswith("imsi"):
                return IMSI, digits
            if len(digits) == 15 and norm_header.endswith("imei"):
                return IMEI, digits
            # Under an identity header a bare number is E.164 without the plus, any country.
            e164 = self._validate(raw) or self._validate(b"+" + digits.encode())
            if e164:
                return MSISDN, e164
            if is_imei(digits):
                return IMEI, digits
            if is_imsi(digits):
                return IMSI, digits
        return IDENTITY, raw.decode("latin-1")

    def candidate_runs(self, chunk: bytes) -> Iterator[tuple[int, int]]:
        """The runs (see `_runs`) that hold a marker, a 15-digit group or a dashed IMEI: the
        only runs in which `_numbers_in` can find anything, in order."""
        digits = chunk.translate(_DIGITS)
        at = [m.end() - 1 for m in self._marker_re.finditer(chunk)]  # a digit inside the run
        # A find lands on the first digit of a digit sequence (the search starts at an `x`),
        # so a 15-digit group is one whose 16th byte is not a digit.
        for needle, exact in ((_FIFTEEN, True), (_DASHED, False)):
            pos = digits.find(needle)
            while pos >= 0:
                if not exact or digits[pos + 15:pos + 16] != b"0":
                    at.append(pos)
                pos = digits.find(b"x", pos)
                if pos < 0:
                    break
                pos = digits.find(needle, pos)
        if not at:
            return
        at.sort()
        shape = chunk.translate(_SHAPE)
        size = len(chunk)
        run_end = 0
        for pos in at:
            if pos < run_end:
                continue  # the run around this one was taken already
            run_start = shape.rfind(b"x", 0, pos) + 1
            run_end = shape.find(b"x", pos)
            if run_end < 0:
                run_end = size
            if run_end - run_start >= _RUN_MIN:
                span = _trim_run(chunk, run_start, run_end)
                if span is not None:
                    yield span

    def _number_spans(
        self, chunk: bytes, taken: list[_Span], runs: Iterable[tuple[int, int]] | None = None
    ) -> list[_Span]:
        """Numbers in `runs` (default: `candidate_runs`) outside the `taken` header values."""
        out: list[_Span] = []
        # Header values were classified already; never report a span twice.
        taken_ranges = sorted((s[1], s[2]) for s in taken)
        ti = 0
        for start, end in self.candidate_runs(chunk) if runs is None else runs:
            while ti < len(taken_ranges) and taken_ranges[ti][1] <= start:
                ti += 1
            if ti < len(taken_ranges) and taken_ranges[ti][0] < end:
                continue
            if not _free_standing(chunk, start, end):
                continue
            out.extend(self._numbers_in(chunk, start, end))
        return out

    def _numbers_in(self, chunk: bytes, start: int, end: int) -> Iterable[_Span]:
        """Numbers inside one candidate run: the longest window of whitespace-separated
        groups that is one number, from each group that can start one.

        ("07400 900123 200 512" is a number followed by a status and a byte count.)
    """
        text = chunk[start:end]
        if len(text.translate(None, _NOT_DIGITS)) < _MIN_DIGITS:
            return
        if b" " not in text:
            if self._may_start(text):
                hit = self._classify(text)
                if hit is not None:
                    yield (hit[0], start, end, hit[1], None)
            return
        if _CARD.fullmatch(text):
            return
        groups = [g.span() for g in _GROUP.finditer(text)]
        i = 0
        while i < len(groups):
            gs = groups[i][0]
            if self._may_start(text[gs:groups[i][1]]):
                for j in range(min(len(groups), i + _MAX_GROUPS) - 1, i - 1, -1):
                    we = groups[j][1]
                    hit = self._classify(text[gs:we])
                    if hit is not None:
                        yield (hit[0], start + gs, start + we, hit[1], None)
                        i = j
                        break
            i += 1

    def _may_start(self, group: bytes) -> bool:
        """Cheap test: can a number in an accepted form begin with this group?"""
        return (
            group[0] in b"+(%"
            or group.startswith(self._start_prefixes)
            or (len(group) == 15 and group.isdigit())
            or _IMEI_DASHED.fullmatch(group) is not None
        )

    def _classify(self, text: bytes) -> tuple[str, str] | None:
        """(kind, canonical value) if `text`, a window of whole groups, is one identity."""
        try:
            return self._memo[text]
        except KeyError:
            pass
        result = self._classify_new(text)
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[text] = result
        return result

    def _classify_new(self, text: bytes) -> tuple[str, str] | None:
        digits = text.translate(None, _NOT_DIGITS)
        n = len(digits)
        if n < _MIN_DIGITS or n > _MAX_DIGITS + 3:
            return None
        if _CARD.fullmatch(text):
            return None  # a payment card's digit groups, or a window of them
        e164 = self._validate(text)
        if e164 is not None:
            return MSISDN, e164
        if n == 15 and text.isdigit():
            d = digits.decode()
            if is_imei(d):
                return IMEI, d
            if is_imsi(d):
                return IMSI, d
        elif n == 15 and _IMEI_DASHED.fullmatch(text) and is_imei(digits.decode()):
            return IMEI, digits.decode()
        return None

    def _validate(self, text: bytes) -> str | None:
        """E.164 (`+44...`) if `text` is a valid number in an accepted form, else None."""
        if text.startswith((b"%2b", b"%2B")):
            text = b"+" + text[3:]
        elif text.startswith(b"(+"):
            text = b"+" + text[2:]
        plus = text.startswith(b"+")
        digits = text.translate(None, _NOT_DIGITS).decode()
        key = "+" + digits if plus else self._form_key(digits)
        if key is None:
            return None
        if key in self._parsed:
            return self._parsed[key]
        result = self._parse(key)
        if len(self._parsed) >= _PARSE_MEMO_MAX:
            self._parsed.clear()
        self._parsed[key] = result
        return result

    def _form_key(self, digits: str) -> str | None:
        """Which form a digit string without `+` is in, as a parse key; None if no form."""
        for prefix in self._international:
            if digits.startswith(prefix):
                rest = digits[len(prefix):]
                if rest[:1] != "0":
                    return "+" + rest
        for prefix, region in self._national:
            if digits.startswith(prefix) and not digits.startswith("00"):
                return f"{region}:{digits}"
        for cc in self._country_codes:
            if digits.startswith(cc) and len(digits) >= len(cc) + 6:
                return "+" + digits
        return None

    @staticmethod
    def _parse(key: str) -> str | None:
        region: str | None = None
        number = key
        if not key.startswith("+"):
            region, number = key.split(":", 1)
        n_digits = len(number) - (1 if region is None else 0)
        if n_digits < _MIN_DIGITS or n_digits > _MAX_DIGITS + 1:
            return None
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(parsed):
            return None
        e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        # phonenumbers drops or keeps digits silently in a few cases (extensions, a
        # national prefix written after the country code); accept only a number whose
        # digits are all the run's digits, allowing the "+44 (0)" trunk zero.
        national = e164[1 + len(str(parsed.country_code)):]
        written = number.lstrip("+")
        if region is None:
            written = written[len(str(parsed.country_code)):]
            return e164 if written in (national, "0" + national) else None
        return e164 if written.endswith(national) and len(written) - len(national) <= 2 else None


def _trim_run(chunk: bytes, start: int, end: int) -> tuple[int, int] | None:
    """A run (a maximal stretch of at least `_RUN_MIN` digits and number punctuation),
    trimmed to start at a digit, `+` or `(` and end at a digit; None if too short then."""
    while end > start and not 48 <= chunk[end - 1] <= 57:
        end -= 1
    while start < end and chunk[start] in b" -)":
        start += 1
    # "word+447..." is a query string's space, not an international prefix.
    if start < end and chunk[start] == 0x2B and start and chunk[start - 1] in _ALNUM:
        start += 1
    # "%2B" is a URL-encoded "+": the run then starts at the "2B" we cut off.
    if start >= 3 and chunk[start - 3:start] in (b"%2B", b"%2b") and chunk[start] != 0x2B:
        start -= 3
    if end - start >= _RUN_MIN - 1:
        return start, end
    return None


def _trie(words: Iterable[bytes]) -> bytes:
    """A regex matching exactly the `_loose` form of any of `words`, factored as a trie so
    that the engine tries one branch per distinct first byte."""
    root: _Trie = {}
    end = -1  # key marking "a word ends here"
    for word in words:
        node = root
        for byte in word:
            node = node.setdefault(byte, {})
        node[end] = {}

    def branches(node: _Trie) -> bytes:
        alts = []
        for byte in sorted(k for k in node if k != end):
            child = node[byte]
            alt = re.escape(bytes((byte,)))
            if any(k != end for k in child):
                rest = rb"[-_.]?" + branches(child)
                alt += b"(?:" + rest + b")?" if end in child else rest
            alts.append(alt)
        return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"

    return branches(root)


def _free_standing(chunk: bytes, start: int, end: int) -> bool:
    """The run is a token of its own: not the tail of a word, hex id or hyphenated id."""
    if start > 0:
        prev = chunk[start - 1]
        if prev in _ALNUM:
            return False
        if prev == 0x2D and start > 1 and chunk[start - 2] in _ALNUM:  # "id-123..." / UUID
            return False
    return not (end < len(chunk) and chunk[end] in _ALNUM)


def _header_value(chunk: bytes, pos: int) -> tuple[int, int] | None:
    """The span of a header value starting at `pos` (after the separator), or None if empty."""
    if pos >= len(chunk):
        return None
    quote = chunk[pos]
    if quote in (0x22, 0x27):  # '"' or "'"
        close = chunk.find(bytes((quote,)), pos + 1, pos + 2 + _MAX_HEADER_VALUE)
        newline = chunk.find(b"\n", pos + 1, close if close != -1 else pos + 1)
        if close == -1 or newline != -1:
            return None
        start, end = pos + 1, close
    else:
        m = _VALUE_NUMBER.match(chunk, pos) or _VALUE_TOKEN.match(chunk, pos)
        if m is None:
            return None
        start, end = m.span()
        # A number followed by more of the token is not a number: take the whole token.
        if m.re is _VALUE_NUMBER and end < len(chunk) and chunk[end] in _ALNUM:
            t = _VALUE_TOKEN.match(chunk, pos)
            if t is None:
                return None
            start, end = t.span()
    while end > start and chunk[end - 1] in b" \t\r":
        end -= 1
    if _TOKEN_VALUE.match(chunk, start):
        return None  # already redacted: "[MSISDN]", "[MSISDN:3f2a...]"
    value = chunk[start:end]
    if end - start > _MAX_HEADER_VALUE or value.decode("latin-1").lower() in _EMPTY_VALUES:
        return None
    return start, end
