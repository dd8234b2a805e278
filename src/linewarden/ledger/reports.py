"""The questions the ledger answers, as data, then as text, JSON or CSV.

- `subscriber_report`: "which sites received my number?" — per partner and host.
- `incident_report`: "what did this window expose?" — distinct subscribers per host,
  partner and claim, and a paragraph for the breach notification.
- `stats_report`: disclosures per partner per day.
- `verify_ledger`: the chains and checkpoints, every break in each instance.
- `purge_ledger`: retention that keeps the chain verifiable.
- `access_report`: every reveal of a number by operator staff in a window (access.py);
  the subscriber report lists the subscriber's own beside its disclosures.

Each report function takes an open `Store` and is synchronous (the CLI calls it directly,
the admin API from a worker thread). Times in and out are UTC; windows are
[since, until): since inclusive, until exclusive.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers

from ..claims import CLAIM_WORDS, CLAIMS
from .access import AccessEntry, subscriber_accesses, window_accesses
from .chain import (
    Checkpoint,
    InstanceSummary,
    Problem,
    Signer,
    trusted_checkpoints,
    verify_instance,
)
from .journal import instances as journal_instances
from .journal import verify_journal
from .store import Store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# Largest time the reports accept as "until": year 9999, so an open window needs no NULLs.
FOREVER_US = 253_402_300_799_000_000
_DAY_US = 86_400 * 1_000_000
# Hosts named one by one in the incident summary paragraph; the rest are counted.
SUMMARY_HOSTS = 10


class ReportError(ValueError):
    """Bad report input (a number, a time, a pattern), explained in one sentence."""


# ---------------------------------------------------------------- input

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """`90d`, `24h`, `30m`, `45s`, `2w` -> seconds."""
    m = _RELATIVE.fullmatch(text.strip().lower())
    if not m:
        raise ReportError(f"'{text}' is not a duration like 24h, 7d or 90d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_time(text: str, now: float | None = None) -> float:
    """ISO 8601 (no zone means UTC), `now`, or a duration meaning that long ago."""
    now = time.time() if now is None else now
    value = text.strip()
    if value.lower() == "now":
        return now
    if _RELATIVE.fullmatch(value.lower()):
        return now - parse_duration(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(f"'{text}' is not a time: use ISO 8601 (2012-01-10T00:00Z) or "
                          "a duration ago (24h, 7d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def normalise_msisdn(text: str, region: str | None = None) -> str:
    """A subscriber's number as E.164 digits (no '+'), or ReportError. Accepts
    `+447400900123`, `447400900123` and spaced forms; with `region` (ISO 3166, as `scan
    --region`) also that country's national forms (`07400900123` for GB). The number must
    be valid."""
    compact = re.sub(r"[\s\-().]", "", text)
    if region is not None and not compact.startswith("+"):
        national = _parse_national(compact, region)
        if national is not None:
            return national
    digits = compact.removeprefix("+")
    if not digits.isdigit():
        raise ReportError("the subscriber number must be in international format, "
                          "e.g. +447400900123" + ("" if region else _REGION_HINT))
    try:
        number = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise ReportError("that is not a valid phone number in international format "
                          "(country code first, e.g. +447400900123)"
                          + (_REGION_HINT if region is None else
                             f", nor a valid national number of {region.upper()}"))
    return digits


_REGION_HINT = ", or a national number with --region (e.g. --region GB 07400900123)"


def _parse_national(compact: str, region: str) -> str | None:
    """`compact` read as a number dialled in `region` (trunk prefix, or the country code
    without '+'), as E.164 digits; None if that is no valid number there."""
    from phonenumbers import PhoneMetadata

    if PhoneMetadata.metadata_for_region(region.upper()) is None:
        raise ReportError(f"unknown region '{region}': use an ISO 3166 code such as GB")
    try:
        number = phonenumbers.parse(compact, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def host_like(pattern: str) -> str:
    """A host glob (`*.example.com`, `shop?.test`) as an SQL LIKE pattern (escape `\\`)."""
    out = []
    for ch in pattern.strip().lower().rstrip("."):
        if ch in "\\%_":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    if not out:
        raise ReportError("the host pattern is empty")
    return "".join(out)


def iso(time_us: int | float) -> str:
    """UTC ISO 8601 with a Z, to the second."""
    moment = datetime.fromtimestamp(time_us / 1_000_000, tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _us(seconds: float | None, default: int) -> int:
    return default if seconds is None else round(seconds * 1_000_000)


# ---------------------------------------------------------------- subscriber

@dataclass
class SubscriberEntry:
    partner_id: str
    purpose: str
    host: str
    first_us: int
    last_us: int
    count: int
    claims: list[str]


@dataclass
class SubscriberReport:
    subscriber_key: str
    since_us: int
    until_us: int
    entries: list[SubscriberEntry]
    # Operator staff who revealed this subscriber's number (access.py), newest first.
    accesses: list[AccessEntry] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(e.count for e in self.entries)


# Answered from the index (subscriber_key, partner_id, purpose, host, claims, time_us)
# alone (schema v2): one range scan of this subscriber's entries, already in GROUP BY
# order, no table page read. The time window is checked on the index entries.
SUBSCRIBER_SQL_FROM = (
    "SELECT partner_id, purpose, host, claims, MIN(time_us), MAX(time_us), COUNT(*) "
    "FROM {source} WHERE subscriber_key = ? AND time_us >= ? AND time_us < ? "
    "GROUP BY partner_id, purpose, host, claims")
SUBSCRIBER_SQL = SUBSCRIBER_SQL_FROM.format(source="disclosures")


def subscriber_report(store: Store, subscriber_key: str, since: float | None = None,
                      until: float | None = None) -> SubscriberReport:
    """Per partner and host: first and last disclosure, how many, which claims.

    An index-only scan of the covering subscriber index: cost grows with this
    subscriber's rows (about 1 µs each), not the ledger's."""
    since_us, until_us = _us(since, 0), _us(until, FOREVER_US)
    rows = store.query(SUBSCRIBER_SQL_FROM.format(source=store.source),
                       (bytes.fromhex(subscriber_key), since_us, until_us))
    merged: dict[tuple[str, str, str], SubscriberEntry] = {}
    for partner_id, purpose, host, claims, first, last, count in rows:
        key = (str(partner_id), str(purpose), str(host))
        entry = merged.get(key)
        if entry is None:
            entry = merged[key] = SubscriberEntry(*key, int(first), int(last), 0, [])
        entry.first_us = min(entry.first_us, int(first))
        entry.last_us = max(entry.last_us, int(last))
        entry.count += int(count)
        for claim in str(claims).split(","):
            if claim and claim not in entry.claims:
                entry.claims.append(claim)
    entries = sorted(merged.values(), key=lambda e: (-e.last_us, e.partner_id, e.host))
    for e in entries:
        e.claims.sort()
    accesses = subscriber_accesses(store, subscriber_key, since_us, until_us)
    return SubscriberReport(subscriber_key, since_us, until_us, entries, accesses)


# ---------------------------------------------------------------- incident

@dataclass
class HostExposure:
    host: str
    partner_id: str
    purpose: str
    disclosures: int
    subscribers: int
    first_us: int
    last_us: int
    claims: list[str] = field(default_factory=list)


@dataclass
class ClaimExposure:
    claim: str
    disclosures: int
    subscribers: int


@dataclass
class IncidentReport:
    since_us: int
    until_us: int
    host_pattern: str | None
    disclosures: int
    subscribers: int
    partners: int
    hosts: list[HostExposure]
    claims: list[ClaimExposure]
    policy_versions: list[str]
    summary: str = ""


def incident_report(store: Store, since: float, until: float,
                    host_pattern: str | None = None) -> IncidentReport:
    since_us, until_us = _us(since, 0), _us(until, FOREVER_US)
    if until_us <= since_us:
        raise ReportError("--until must be later than --since")
    where = "time_us >= ? AND time_us < ?"
    params: list[Any] = [since_us, until_us]
    src = store.source
    if host_pattern:
        where += " AND host LIKE ? ESCAPE '\\'"
        params.append(host_like(host_pattern))

    (total, distinct), = store.query(
        f"SELECT COUNT(*), COUNT(DISTINCT subscriber_key) FROM {src} WHERE {where}",
        params)
    hosts = [HostExposure(str(h), str(p), str(pu), int(n), int(s), int(a), int(b))
             for h, p, pu, n, s, a, b in store.query(
                 "SELECT host, partner_id, purpose, COUNT(*), COUNT(DISTINCT subscriber_key), "
                 f"MIN(time_us), MAX(time_us) FROM {src} WHERE {where} "
                 "GROUP BY host, partner_id, purpose", params)]
    by_key = {(e.host, e.partner_id, e.purpose): e for e in hosts}
    claim_names: set[str] = set()
    for h, p, pu, joined in store.query(
            f"SELECT DISTINCT host, partner_id, purpose, claims FROM {src} WHERE {where}",
            params):
        entry = by_key[(str(h), str(p), str(pu))]
        for claim in str(joined).split(","):
            if claim:
                claim_names.add(claim)
                if claim not in entry.claims:
                    entry.claims.append(claim)
    claims: list[ClaimExposure] = []
    for claim in sorted(claim_names):
        # Claims are stored comma-joined; ',claim,' inside ',a,b,' matches whole names.
        (n, s), = store.query(
            f"SELECT COUNT(*), COUNT(DISTINCT subscriber_key) FROM {src} "
            f"WHERE {where} AND (',' || claims || ',') LIKE ? ESCAPE '\\'",
            [*params, "%," + host_like(claim) + ",%"])
        claims.append(ClaimExposure(claim, int(n), int(s)))
    versions = sorted(str(v) for v, in store.query(
        f"SELECT DISTINCT policy_version FROM {src} WHERE {where}", params))
    for e in hosts:
        e.claims.sort()
    hosts.sort(key=lambda e: (-e.subscribers, -e.disclosures, e.host, e.partner_id))
    report = IncidentReport(since_us, until_us, host_pattern, int(total), int(distinct),
                            len({e.partner_id for e in hosts}), hosts, claims, versions)
    report.summary = incident_summary(report)
    return report


def _n(value: int, one: str, many: str | None = None) -> str:
    return f"{value:,} {one if value == 1 else (many or one + 's')}"


def incident_summary(r: IncidentReport) -> str:
    """One paragraph a data-protection officer can paste into a breach notification."""
    window = f"Between {iso(r.since_us)} and {iso(r.until_us)} (UTC)"
    scope = f" for destination hosts matching '{r.host_pattern}'" if r.host_pattern else ""
    if r.disclosures == 0:
        return (f"{window}, the linewarden disclosure ledger recorded no disclosure of "
                f"subscriber identity{scope}.")
    host_names = sorted({e.host for e in r.hosts})
    parts = [f"{window}, the linewarden disclosure ledger recorded "
             f"{_n(r.disclosures, 'disclosure')} of subscriber identity{scope}, concerning "
             f"{_n(r.subscribers, 'distinct subscriber')}, to "
             f"{_n(len(host_names), 'destination host')} of {_n(r.partners, 'partner')}."]
    claim_text = "; ".join(
        f"{CLAIM_WORDS.get(c.claim, c.claim)} ('{c.claim}') for "
        f"{_n(c.subscribers, 'subscriber')}" for c in r.claims)
    parts.append(f"Information disclosed: {claim_text}.")
    raw = [e for e in r.hosts if any(c in CLAIMS and CLAIMS[c].raw_number for c in e.claims)]
    if raw:
        parts.append(f"Raw phone numbers went to {_n(len({e.host for e in raw}), 'host')}: "
                     + ", ".join(sorted({e.host for e in raw})[:SUMMARY_HOSTS])
                     + (" and others" if len({e.host for e in raw}) > SUMMARY_HOSTS else "")
                     + ".")
    named = "; ".join(f"{e.host} (partner {e.partner_id}, {e.purpose}): "
                      f"{_n(e.subscribers, 'subscriber')}" for e in r.hosts[:SUMMARY_HOSTS])
    more = len(r.hosts) - SUMMARY_HOSTS
    parts.append(f"Recipients by number of subscribers: {named}"
                 + (f"; and {more:,} more." if more > 0 else "."))
    parts.append("Each disclosure was made under a partner entry of the policy in force "
                 f"(policy {'version' if len(r.policy_versions) == 1 else 'versions'} "
                 f"{', '.join(r.policy_versions)}); the ledger holds keyed hashes of the "
                 "numbers, not the numbers themselves.")
    return " ".join(parts)


# ---------------------------------------------------------------- stats

@dataclass
class StatsRow:
    day: str
    partner_id: str
    disclosures: int


def stats_report(store: Store, since: float | None = None,
                 until: float | None = None) -> list[StatsRow]:
    rows = store.query(
        f"SELECT time_us / {_DAY_US} AS day, partner_id, COUNT(*) FROM {store.source} "
        "WHERE time_us >= ? AND time_us < ? GROUP BY day, partner_id ORDER BY day, "
        "partner_id", (_us(since, 0), _us(until, FOREVER_US)))
    return [StatsRow(iso(int(day) * _DAY_US)[:10], str(p), int(n)) for day, p, n in rows]


# ---------------------------------------------------------------- verify and purge

@dataclass
class VerifyReport:
    instances: list[InstanceSummary]
    problems: list[Problem]
    latest_checkpoints: dict[str, dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_ledger(store: Store, trusted: dict[str, Ed25519PublicKey],
                  journal: Path | None = None) -> VerifyReport:
    """Every instance's chain, in one snapshot; every break in each. With `journal` (the
    journal-first ledger's directory), each instance's journal too: its own chain, and
    that it continues the store's at the store's head."""
    summaries: list[InstanceSummary] = []
    problems: list[Problem] = []
    latest: dict[str, dict[str, Any]] = {}
    with store.snapshot():
        for instance_id in store.instances():
            summary, good = verify_chain(store, instance_id, trusted)
            summaries.append(summary)
            problems += summary.problems
            if good:
                cp = good[-1]
                latest[instance_id] = {"kind": cp.kind, "seq": cp.seq,
                                       "row_hash": cp.row_hash.hex(), "time": iso(cp.time_us),
                                       "key_id": cp.key_id, "signature": cp.signature.hex()}
        for instance_id, directory in (journal_instances(journal) if journal else {}).items():
            found = verify_journal(instance_id, directory, store.head(instance_id))
            known = next((s for s in summaries if s.instance_id == instance_id), None)
            if known is None:
                known = InstanceSummary(instance_id)
                summaries.append(known)
            known.problems += found
            problems += found
    return VerifyReport(summaries, problems, latest)


def verify_chain(store: Store, instance_id: str, trusted: dict[str, Ed25519PublicKey]
                 ) -> tuple[InstanceSummary, list[Checkpoint]]:
    """One instance: its checkpoints' signatures, then its rows walked from the head. A
    checkpoint that fails its signature is reported and not relied on."""
    good, bad = trusted_checkpoints(store.checkpoints(instance_id), trusted)
    summary = verify_instance(instance_id, store.iter_rows(instance_id, newest_first=True),
                              good, store.head(instance_id))
    summary.problems = sorted([*bad, *summary.problems], key=lambda p: p.seq)
    return summary, good


@dataclass
class PurgeReport:
    cutoff_us: int
    deleted: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def purge_ledger(store: Store, older_than_s: float, signer: Signer,
                 now: float | None = None) -> PurgeReport:
    if older_than_s <= 0:
        raise ReportError("--older-than must be positive")
    cutoff_us = round(((time.time() if now is None else now) - older_than_s) * 1_000_000)
    return PurgeReport(cutoff_us, store.purge(cutoff_us, signer))


# ---------------------------------------------------------------- access records

@dataclass
class AccessReport:
    since_us: int
    until_us: int
    accesses: list[AccessEntry]


def access_report(store: Store, since: float | None = None,
                  until: float | None = None) -> AccessReport:
    """Every reveal of a number by operator staff in [since, until), oldest first."""
    since_us, until_us = _us(since, 0), _us(until, FOREVER_US)
    if until_us <= since_us:
        raise ReportError("--until must be later than --since")
    return AccessReport(since_us, until_us, window_accesses(store, since_us, until_us))


# ---------------------------------------------------------------- output

Report = (SubscriberReport | IncidentReport | list[StatsRow] | VerifyReport | PurgeReport
          | AccessReport)


def to_json(report: Report) -> Any:
    """Plain JSON-able data; times as ISO 8601 strings beside the microseconds."""
    if isinstance(report, list):
        return {"days": [asdict(r) for r in report]}
    if isinstance(report, VerifyReport):
        return {"ok": report.ok,
                "problems": [{**asdict(p), "message": str(p)} for p in report.problems],
                "instances": [{**{k: v for k, v in asdict(s).items() if k != "problems"},
                               "problems": len(s.problems)} for s in report.instances],
                "latest_checkpoints": report.latest_checkpoints}
    data = asdict(report)
    if isinstance(report, PurgeReport):
        data["total"] = report.total
    if isinstance(report, SubscriberReport):
        data["total"] = report.total
    return _add_iso(data)


def _add_iso(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k] = _add_iso(v)
            if k.endswith("_us") and isinstance(v, int):
                out[k[:-3]] = iso(v)
        return out
    if isinstance(value, list):
        return [_add_iso(v) for v in value]
    return value


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def to_csv(report: Report) -> str:
    if isinstance(report, SubscriberReport):
        return _csv(["partner_id", "purpose", "host", "claims", "first", "last", "count"],
                    ([e.partner_id, e.purpose, e.host, " ".join(e.claims), iso(e.first_us),
                      iso(e.last_us), e.count] for e in report.entries))
    if isinstance(report, IncidentReport):
        return _csv(["host", "partner_id", "purpose", "claims", "subscribers", "disclosures",
                     "first", "last"],
                    ([e.host, e.partner_id, e.purpose, " ".join(e.claims), e.subscribers,
                      e.disclosures, iso(e.first_us), iso(e.last_us)] for e in report.hosts))
    if isinstance(report, list):
        return _csv(["day", "partner_id", "disclosures"],
                    ([r.day, r.partner_id, r.disclosures] for r in report))
    if isinstance(report, AccessReport):
        return _csv(["time", "principal", "action", "reason", "subscriber_key",
                     "instance_id"],
                    ([iso(a.time_us), a.principal, a.action, a.reason, a.subscriber_key,
                      a.instance_id] for a in report.accesses))
    if isinstance(report, VerifyReport):  # one line per break (all of them)
        return _csv(["instance_id", "kind", "seq", "count", "row_id", "detail"],
                    ([p.instance_id, p.kind, p.seq, p.count,
                      "" if p.row_id is None else p.row_id, p.detail]
                     for p in report.problems))
    return _csv(["instance_id", "deleted"], sorted(report.deleted.items()))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _accesses_text(accesses: Sequence[AccessEntry]) -> list[str]:
    """The subscriber report's second part: reveals of the number by operator staff."""
    if not accesses:
        return ["", "No operator staff revealed this number in this period."]
    rows = [[iso(a.time_us), a.principal, a.action, a.reason] for a in accesses]
    return ["", "Viewed by operator staff (access records)",
            _table(["When", "Who", "Action", "Reason"], rows)]


# `audit verify` prints this many breaks in full, then a count; `--json` and `--csv` list all.
VERIFY_TEXT_PROBLEMS = 20


def _verify_text(report: VerifyReport, limit: int = VERIFY_TEXT_PROBLEMS) -> str:
    lines = [f"{s.instance_id}: {s.rows:,} rows (seq {s.first_seq}..{s.last_seq}), "
             f"{s.checkpoints_checked} signed checkpoints matched, "
             + (_n(len(s.problems), "break") if s.problems else "ok")
             for s in report.instances]
    if not report.instances:
        lines.append("The ledger is empty.")
    lines += [f"  {p}" for p in report.problems[:limit]]
    if len(report.problems) > limit:
        lines.append(f"  ... and {len(report.problems) - limit:,} more (--json or --csv "
                     "lists them all)")
    lines.append("OK: the chain is intact." if report.ok else
                 f"FAILED: {_n(len(report.problems), 'break')} found.")
    return "\n".join(lines) + "\n"


def to_text(report: Report, *, subscriber_label: str = "") -> str:
    """Human-readable; the subscriber report is laid out to print and hand over."""
    if isinstance(report, SubscriberReport):
        window = (f"{iso(report.since_us) if report.since_us else 'the start of the ledger'}"
                  f" to {iso(report.until_us) if report.until_us < FOREVER_US else 'now'}")
        head = ["Who received this subscriber's identity",
                f"Subscriber: {subscriber_label or report.subscriber_key}",
                f"Period: {window} (UTC)", f"Generated: {iso(time.time() * 1_000_000)}", ""]
        viewed = _accesses_text(report.accesses)
        if not report.entries:
            return "\n".join([*head, "No disclosures recorded in this period.", *viewed]) \
                + "\n"
        rows = [[e.partner_id, e.purpose, e.host, ", ".join(e.claims), iso(e.first_us),
                 iso(e.last_us), f"{e.count:,}"] for e in report.entries]
        partners = len({e.partner_id for e in report.entries})
        hosts = len({e.host for e in report.entries})
        claims = sorted({c for e in report.entries for c in e.claims})
        explained = [f"  {c}: {CLAIM_WORDS.get(c, c)}" for c in claims]
        return "\n".join([*head, _table(["Partner", "Purpose", "Host", "Claims sent",
                                         "First", "Last", "Times"], rows), "",
                          f"{_n(report.total, 'disclosure')} to {_n(hosts, 'host')} of "
                          f"{_n(partners, 'partner')}.", "Claims:", *explained, *viewed]) \
            + "\n"
    if isinstance(report, AccessReport):
        window = (f"{iso(report.since_us) if report.since_us else 'the start of the ledger'}"
                  f" to {iso(report.until_us) if report.until_us < FOREVER_US else 'now'}")
        if not report.accesses:
            return f"No number was revealed to operator staff from {window} (UTC).\n"
        rows = [[iso(a.time_us), a.principal, a.action, a.subscriber_key[:16], a.reason]
                for a in report.accesses]
        return (f"Numbers revealed to operator staff, {window} (UTC)\n\n"
                + _table(["When", "Who", "Action", "Subscriber key", "Reason"], rows)
                + f"\n\n{_n(len(report.accesses), 'access record')} of "
                f"{_n(len({a.subscriber_key for a in report.accesses}), 'subscriber')}.\n")
    if isinstance(report, IncidentReport):
        rows = [[e.host, e.partner_id, e.purpose, ", ".join(e.claims), f"{e.subscribers:,}",
                 f"{e.disclosures:,}"] for e in report.hosts]
        claim_rows = [[c.claim, f"{c.subscribers:,}", f"{c.disclosures:,}"]
                      for c in report.claims]
        out = [report.summary, ""]
        if rows:
            out += [_table(["Host", "Partner", "Purpose", "Claims", "Subscribers",
                            "Disclosures"], rows), "",
                    _table(["Claim", "Subscribers", "Disclosures"], claim_rows)]
        return "\n".join(out) + "\n"
    if isinstance(report, list):
        if not report:
            return "No disclosures recorded.\n"
        return _table(["Day", "Partner", "Disclosures"],
                      [[r.day, r.partner_id, f"{r.disclosures:,}"] for r in report]) + "\n"
    if isinstance(report, VerifyReport):
        return _verify_text(report)
    lines = [f"{iid}: {n:,} rows deleted" for iid, n in sorted(report.deleted.items())]
    lines.append(f"Purged {_n(report.total, 'row')} older than {iso(report.cutoff_us)}; "
                 "the chain stays verifiable from the signed purge checkpoints.")
    return "\n".join(lines) + "\n"
