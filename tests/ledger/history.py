"""A generated disclosure history and reports computed from it the plain way (no SQL),
to check the ledger's reports against. Used by the tests and bench/ledger.py."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from linewarden.claims import subscriber_key
from linewarden.decide import DisclosureRecord

LEDGER_KEY = b"test-ledger-key"
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86_400.0

# (partner, purpose, hosts, claims)
PARTNERS = [
    ("billing-co", "billing", ["pay.billing.test", "api.billing.test"], ("msisdn", "operator")),
    ("age-check", "age_verification", ["verify.age.test"], ("age_over_18", "pseudonym")),
    ("selfcare", "self_care", ["my.operator.test", "m.operator.test", "app.operator.test"],
     ("msisdn",)),
    ("games", "billing", [f"shop{i}.games.test" for i in range(10)], ("pseudonym",)),
    ("news", "personalisation", ["news.test"], ("operator", "pseudonym")),
]


def msisdns(count: int, seed: int = 1) -> list[str]:
    """Valid UK mobile numbers 447400 000000.. (phonenumbers accepts 7400 numbers)."""
    rng = random.Random(seed)
    picked = rng.sample(range(100_000, 999_999), count)
    return [f"447400{n:06d}" for n in picked]


@dataclass
class History:
    numbers: list[str]
    records: list[DisclosureRecord]
    number_of: dict[str, str]  # subscriber_key -> msisdn


def generate(rows: int, subscribers: int, *, days: float = 30.0, seed: int = 7,
             key: bytes = LEDGER_KEY) -> History:
    rng = random.Random(seed)
    numbers = msisdns(subscribers, seed)
    keys = [subscriber_key(key, n) for n in numbers]
    # Some subscribers browse a lot, most a little (a long tail, like real traffic).
    weights = [1.0 / (i + 1) ** 0.6 for i in range(subscribers)]
    chosen = rng.choices(range(subscribers), weights=weights, k=rows)
    times = sorted(START + rng.random() * days * DAY for _ in range(rows))
    records = []
    for t, s in zip(times, chosen, strict=True):
        partner, purpose, hosts, claims = PARTNERS[rng.randrange(len(PARTNERS))]
        host = hosts[rng.randrange(len(hosts))]
        records.append(DisclosureRecord(t, partner, purpose, host, claims,
                                        "policy-v1" if t < START + days * DAY / 2
                                        else "policy-v2", keys[s]))
    return History(numbers, records, dict(zip(keys, numbers, strict=True)))


def expected_subscriber(history: History, key: str, since: float = 0.0,
                        until: float = float("inf")) -> dict[tuple[str, str, str], dict]:
    out: dict[tuple[str, str, str], dict] = {}
    for r in history.records:
        if r.subscriber_key != key or not since <= r.time < until:
            continue
        e = out.setdefault((r.partner_id, r.purpose, r.host),
                           {"first": r.time, "last": r.time, "count": 0, "claims": set()})
        e["first"] = min(e["first"], r.time)
        e["last"] = max(e["last"], r.time)
        e["count"] += 1
        e["claims"].update(r.claims)
    return out


def expected_incident(history: History, since: float, until: float,
                      host_suffix: str | None = None) -> dict:
    sel = [r for r in history.records if since <= r.time < until
           and (host_suffix is None or r.host.endswith(host_suffix))]
    hosts: dict[tuple[str, str, str], dict] = defaultdict(
        lambda: {"n": 0, "subs": set(), "claims": set()})
    claims: dict[str, dict] = defaultdict(lambda: {"n": 0, "subs": set()})
    for r in sel:
        h = hosts[(r.host, r.partner_id, r.purpose)]
        h["n"] += 1
        h["subs"].add(r.subscriber_key)
        h["claims"].update(r.claims)
        for c in r.claims:
            claims[c]["n"] += 1
            claims[c]["subs"].add(r.subscriber_key)
    return {
        "disclosures": len(sel),
        "subscribers": len({r.subscriber_key for r in sel}),
        "hosts": {k: (v["n"], len(v["subs"]), sorted(v["claims"])) for k, v in hosts.items()},
        "claims": {k: (v["n"], len(v["subs"])) for k, v in claims.items()},
    }
