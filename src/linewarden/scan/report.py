"""Per-file results, masking, and the text and JSON renderings.

Values are kept canonical (E.164, digits, token) inside the process and masked on output
unless the user asks for `--reveal`: a report is often pasted into a ticket, and the
numbers it lists are exactly what must not spread further.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import phonenumbers

from linewarden.scan.detect import IMEI, IMSI, KINDS, MSISDN, Finding

# Digits kept visible: enough to tell numbers apart in a report, not enough to call one.
# "+44 74** ***123" is the example: country code, 2 leading and 3 trailing digits.
_KEEP_HEAD = 2
_KEEP_TAIL = 3
# The text report lists at most this many distinct values per file; JSON lists all.
TEXT_VALUES_MAX = 10
# `--json` lists where each finding is (line, column) up to this many per file: enough to
# review or patch a log by hand, bounded so a dense multi-GB log cannot exhaust memory
# (about 100 bytes each); `locations_omitted` says how many more there were.
LOCATIONS_MAX = 100_000


class Location(NamedTuple):
    """Where one finding is: 1-based line, 1-based byte column (as ripgrep's --column)."""

    line: int
    column: int
    kind: str
    value: str  # canonical; masked on output
    header: str | None


@dataclass
class FileReport:
    """What one input held. Built from chunks or byte ranges, merged in file order."""

    path: str
    size: int = 0
    lines: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_header: Counter[str] = field(default_factory=Counter)
    values: dict[str, str] = field(default_factory=dict)  # canonical value -> kind
    first_line: int | None = None
    last_line: int | None = None
    redacted_to: str | None = None
    backup: str | None = None
    error: str | None = None
    keep_locations: bool = False  # only `--json` lists them
    locations: list[Location] = field(default_factory=list)
    locations_omitted: int = 0
    # Bytes since the last newline at the end of the chunks so far: a giant line cut across
    # chunks (`files.MAX_CARRY`) keeps counting its columns from its real start.
    _line_tail: int = 0

    @property
    def findings(self) -> int:
        return sum(self.by_kind.values())

    def add_chunk(self, chunk: bytes, findings: Sequence[Finding]) -> None:
        """Account for one chunk whose first line is line `self.lines + 1`."""
        base = self.lines + 1
        for f in findings:
            self.by_kind[f.kind] += 1
            if f.header:
                self.by_header[f.header] += 1
            self.values.setdefault(f.value, f.kind)
        if findings:
            if self.first_line is None:
                self.first_line = base + findings[0].line
            self.last_line = base + findings[-1].line
            if self.keep_locations:
                self._locate(chunk, findings, base)
        self.size += len(chunk)
        newlines = chunk.count(b"\n")
        self.lines += newlines
        tail = len(chunk) - chunk.rfind(b"\n") - 1
        self._line_tail = tail if newlines else self._line_tail + tail

    def _locate(self, chunk: bytes, findings: Sequence[Finding], base: int) -> None:
        room = LOCATIONS_MAX - len(self.locations)
        for f in findings[:room]:
            line_start = chunk.rfind(b"\n", 0, f.start) + 1
            column = f.start - line_start + 1
            if line_start == 0:
                column += self._line_tail
            self.locations.append(Location(base + f.line, column, f.kind, f.value, f.header))
        self.locations_omitted += max(len(findings) - room, 0)

    def merge(self, part: FileReport) -> None:
        """Append the report of the byte range that follows this one in the same file."""
        base = self.lines
        self.by_kind.update(part.by_kind)
        self.by_header.update(part.by_header)
        for value, kind in part.values.items():
            self.values.setdefault(value, kind)
        if part.first_line is not None:
            if self.first_line is None:
                self.first_line = base + part.first_line
            assert part.last_line is not None
            self.last_line = base + part.last_line
        # A range starts after a newline (`files.split_ranges`): only lines shift.
        room = max(LOCATIONS_MAX - len(self.locations), 0)
        self.locations.extend(loc._replace(line=base + loc.line) for loc in part.locations[:room])
        self.locations_omitted += part.locations_omitted + max(len(part.locations) - room, 0)
        self._line_tail = part._line_tail
        self.size += part.size
        self.lines += part.lines
        self.error = self.error or part.error

    def to_json(self, reveal: bool) -> dict[str, Any]:
        return {
            "path": self.path,
            "bytes": self.size,
            "lines": self.lines,
            "findings": self.findings,
            "by_kind": {k: self.by_kind[k] for k in KINDS if self.by_kind[k]},
            "by_header": dict(self.by_header.most_common()),
            "distinct": len(self.values),
            "values": [show(v, k, reveal) for v, k in self.values.items()],
            "first_line": self.first_line,
            "last_line": self.last_line,
            "locations": [
                {
                    "file": self.path,
                    "line": loc.line,
                    "column": loc.column,
                    "kind": loc.kind,
                    "value": show(loc.value, loc.kind, reveal),
                    "header": loc.header,
                }
                for loc in self.locations
            ],
            "locations_omitted": self.locations_omitted,
            "redacted_to": self.redacted_to,
            "backup": self.backup,
            "error": self.error,
        }


def _mask_digits(text: str, head: int, tail: int) -> str:
    """Replace digits with `*` except the first `head` and last `tail` digits."""
    total = sum(c.isdigit() for c in text)
    out = []
    seen = 0
    for c in text:
        if c.isdigit():
            seen += 1
            if head < seen <= total - tail:
                c = "*"
        out.append(c)
    return "".join(out)


def mask_msisdn(e164: str) -> str:
    try:
        num = phonenumbers.parse(e164)
        formatted: str = phonenumbers.format_number(
            num, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        formatted = e164
    cc, _, national = formatted.partition(" ")
    return f"{cc} {_mask_digits(national, _KEEP_HEAD, _KEEP_TAIL)}"


def show(value: str, kind: str, reveal: bool = False) -> str:
    """The value as a report shows it: masked unless `reveal`."""
    if kind == MSISDN:
        return value if reveal else mask_msisdn(value)
    if reveal:
        return value
    if kind == IMSI:
        # MCC+MNC name the operator, not the subscriber; keep them.
        return _mask_digits(value, 5, _KEEP_TAIL)
    if kind == IMEI:
        return _mask_digits(value, _KEEP_HEAD, _KEEP_TAIL)
    if len(value) < 8:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return f"{n} B"


def render_text(reports: Iterable[FileReport], reveal: bool = False) -> str:
    lines: list[str] = []
    files = with_findings = total = 0
    distinct: set[str] = set()
    for r in reports:
        files += 1
        if r.error:
            lines.append(f"{r.path}: error: {r.error}")
            continue
        if not r.findings:
            lines.append(f"{r.path}: clean ({r.lines:,} lines, {_size(r.size)})")
            continue
        with_findings += 1
        total += r.findings
        distinct.update(r.values)
        lines.append(
            f"{r.path}: {r.findings:,} findings in {r.lines:,} lines ({_size(r.size)}), "
            f"lines {r.first_line}-{r.last_line}"
        )
        kinds = "  ".join(f"{k} {r.by_kind[k]:,}" for k in KINDS if r.by_kind[k])
        lines.append(f"  by kind:   {kinds}")
        if r.by_header:
            heads = ", ".join(f"{h} {n:,}" for h, n in r.by_header.most_common())
            lines.append(f"  by header: {heads}")
        shown = [show(v, k, reveal) for v, k in list(r.values.items())[:TEXT_VALUES_MAX]]
        more = len(r.values) - len(shown)
        tail = f", +{more:,} more" if more else ""
        lines.append(f"  distinct:  {len(r.values):,}: " + ", ".join(shown) + tail)
        if r.redacted_to:
            kept = f" (backup {r.backup})" if r.backup else ""
            lines.append(f"  redacted:  {r.redacted_to}{kept}")
    lines.append(
        f"summary: {files:,} files, {with_findings:,} with findings, {total:,} findings, "
        f"{len(distinct):,} distinct identities"
    )
    return "\n".join(lines) + "\n"


def render_json(reports: Iterable[FileReport], reveal: bool = False) -> str:
    items = list(reports)
    distinct: set[str] = set()
    for r in items:
        distinct.update(r.values)
    doc = {
        "files": [r.to_json(reveal) for r in items],
        "summary": {
            "files": len(items),
            "files_with_findings": sum(1 for r in items if r.findings),
            "findings": sum(r.findings for r in items),
            "distinct": len(distinct),
            "errors": sum(1 for r in items if r.error),
            "masked": not reveal,
        },
    }
    return json.dumps(doc, indent=2) + "\n"
