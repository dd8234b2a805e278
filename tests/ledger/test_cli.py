"""`linewarden audit ...` against a ledger filled through the real decision core."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from linewarden.bindings import Binding
from linewarden.cli_support import CliState
from linewarden.config import Config, load_config
from linewarden.decide import RequestHead, Rules, decide
from linewarden.ledger import ledger_from_config
from linewarden.ledger.cli import audit
from linewarden.wiring import settings

CONFIG = """
state_dir = "state"

[proxy]
instance_id = "gw-test"

[ledger]
url = "sqlite:///state/ledger.db"
key = "cli-test-key"

[[partners]]
id = "billing-co"
purpose = "billing"
hosts = ["pay.billing.test"]
allow_raw_msisdn = true
[partners.headers]
X-Up-Calling-Line-Id = "msisdn"

[[partners]]
id = "age-check"
purpose = "age_verification"
hosts = ["*.age.test"]
[partners.headers]
X-Subscriber-Pseudonym = "pseudonym"
"""

ALICE = "447400900123"
BOB = "447400900456"
NOW = time.time()


@click.group()
@click.option("--config", "config_path")
@click.pass_context
def root(ctx: click.Context, config_path: str | None) -> None:
    ctx.obj = CliState(config_path)


root.add_command(audit)


def head(url: str) -> RequestHead:
    host = url.split("/")[2]
    return RequestHead(b"GET", url.encode(), "1.1", [(b"Host", host.encode())])


def browse(config: Config) -> dict[str, int]:
    """Traffic through the decision core into the ledger: partner hosts and others."""
    rules = Rules(config.policy, settings(config))
    bindings = {"10.0.0.1": Binding("10.0.0.1", ALICE), "10.0.0.2": Binding("10.0.0.2", BOB)}
    visits = [("10.0.0.1", "http://pay.billing.test/buy", 3),
              ("10.0.0.1", "http://www.age.test/check", 2),
              ("10.0.0.1", "http://news.example/", 5),  # not a partner: no record
              ("10.0.0.2", "http://pay.billing.test/buy", 1),
              ("10.0.0.2", "http://unknown.test/", 4),
              ("10.0.0.9", "http://pay.billing.test/buy", 2)]  # no binding: no record
    ledger = ledger_from_config(config)
    kept: dict[str, int] = {}

    async def main() -> None:
        await ledger.start()
        for ip, url, times in visits:
            for i in range(times):
                d = decide(head(url), bindings.get(ip), rules, switch_tripped=False,
                           now=NOW - 3600 + i)
                if d.record is not None:
                    assert await ledger.record(d.record)
                    kept[d.record.host] = kept.get(d.record.host, 0) + 1
                else:
                    assert d.identity == [] or d.withheld
        await ledger.close()

    asyncio.run(main())
    return kept


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "linewarden.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def filled(config_path: Path) -> Path:
    kept = browse(load_config(str(config_path)))
    assert kept == {"pay.billing.test": 4, "www.age.test": 2}  # partner traffic only
    return config_path


def invoke(config: Path, *args: str) -> click.testing.Result:
    return CliRunner().invoke(root, ["audit", *args, "--config", str(config)])


def test_subscriber_report_text_json_csv(filled: Path) -> None:
    text = invoke(filled, "subscriber", "+" + ALICE)
    assert text.exit_code == 0, text.output
    assert "pay.billing.test" in text.output and "www.age.test" in text.output
    assert "news.example" not in text.output
    assert "5 disclosures to 2 hosts of 2 partners" in text.output
    data = json.loads(invoke(filled, "subscriber", ALICE, "--json").output)
    assert {(e["host"], e["count"], tuple(e["claims"])) for e in data["entries"]} == {
        ("pay.billing.test", 3, ("msisdn",)), ("www.age.test", 2, ("pseudonym",))}
    assert ALICE not in json.dumps(data)  # the JSON names the key, not the number
    rows = list(csv.DictReader(io.StringIO(invoke(filled, "subscriber", ALICE,
                                                  "--csv").output)))
    assert sorted(r["host"] for r in rows) == ["pay.billing.test", "www.age.test"]
    # Windows: everything was recorded about an hour ago.
    assert json.loads(invoke(filled, "subscriber", ALICE, "--since", "30m",
                             "--json").output)["entries"] == []
    assert len(json.loads(invoke(filled, "subscriber", ALICE, "--since", "2h", "--until",
                                 "now", "--json").output)["entries"]) == 2


def test_subscriber_number_validation(filled: Path) -> None:
    for bad in ("12345", "+4477009001234567", "not-a-number", "+447700900123"):
        result = invoke(filled, "subscriber", bad)
        assert result.exit_code == 2 and "international format" in result.output, bad


def test_subscriber_in_national_form_with_region(filled: Path) -> None:
    """Issue 21: `audit subscriber --region GB 07400900123`, as `scan --region` reads it."""
    international = json.loads(invoke(filled, "subscriber", "+" + ALICE, "--json").output)
    assert international["entries"]
    for args in (("--region", "GB", "07400900123"), ("--region", "gb", "07400 900123"),
                 ("--region", "GB", ALICE), ("--region", "FR", "+" + ALICE)):
        result = invoke(filled, "subscriber", *args, "--json")
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.output)["entries"] == international["entries"], args
    text = invoke(filled, "subscriber", "--region", "GB", "07400900123").output
    assert "Subscriber: +447400900123" in text
    refused = invoke(filled, "subscriber", "07400900123")  # national, but no region
    assert refused.exit_code == 2 and "--region GB 07400900123" in refused.output
    unknown = invoke(filled, "subscriber", "--region", "XX", "07400900123")
    assert unknown.exit_code == 2 and "unknown region 'XX'" in unknown.output
    invalid = invoke(filled, "subscriber", "--region", "GB", "0740090")
    assert invalid.exit_code == 2 and "nor a valid national number of GB" in invalid.output
    assert "0740090" not in invalid.output  # no number echoed back


def test_incident_and_stats(filled: Path) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 7200))
    result = invoke(filled, "incident", "--since", since, "--until", "now", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["disclosures"] == 6 and data["subscribers"] == 2
    assert {c["claim"]: c["subscribers"] for c in data["claims"]} == {"msisdn": 2,
                                                                      "pseudonym": 1}
    assert "concerning 2 distinct subscribers" in data["summary"]
    only = json.loads(invoke(filled, "incident", "--since", "1d", "--until", "now", "--host",
                             "*.age.test", "--json").output)
    assert only["disclosures"] == 2 and [h["host"] for h in only["hosts"]] == ["www.age.test"]
    text = invoke(filled, "incident", "--since", "1d", "--until", "now").output
    assert text.startswith("Between ") and "Raw phone numbers went to 1 host" in text
    stats = json.loads(invoke(filled, "stats", "--json").output)["days"]
    assert {r["partner_id"]: r["disclosures"] for r in stats} == {"billing-co": 4,
                                                                  "age-check": 2}
    assert invoke(filled, "incident", "--since", "yesterday", "--until", "now").exit_code == 2


def test_incident_until_defaults_to_now(filled: Path) -> None:
    explicit = json.loads(invoke(filled, "incident", "--since", "1d", "--until", "now",
                                 "--json").output)
    default = invoke(filled, "incident", "--since", "1d", "--json")
    assert default.exit_code == 0, default.output
    assert json.loads(default.output)["disclosures"] == explicit["disclosures"] == 6


def test_verify_passes_then_names_the_edited_row(filled: Path) -> None:
    ok = invoke(filled, "verify")
    assert ok.exit_code == 0 and "OK: the chain is intact" in ok.output
    db = sqlite3.connect(filled.parent / "state" / "ledger.db")
    db.execute("UPDATE disclosures SET host = 'elsewhere.test' WHERE seq = 2")
    db.commit()
    db.close()
    bad = invoke(filled, "verify")
    assert bad.exit_code == 1
    assert "altered: instance 'gw-test', seq 2" in bad.output
    data = json.loads(invoke(filled, "verify", "--json").output)
    assert data["ok"] is False and data["problems"][0]["kind"] == "altered"


def test_purge(filled: Path) -> None:
    result = invoke(filled, "purge", "--older-than", "30m")
    assert result.exit_code == 0, result.output
    assert "Purged 6 rows" in result.output
    assert invoke(filled, "verify").exit_code == 0
    assert invoke(filled, "purge", "--older-than", "soon").exit_code == 2


def test_missing_ledger_is_one_clear_line(config_path: Path) -> None:
    result = invoke(config_path, "stats")
    assert result.exit_code == 1 and "no ledger at" in result.output
    assert "Traceback" not in result.output


def test_public_key_is_trusted_by_verify(filled: Path) -> None:
    result = invoke(filled, "public-key")
    assert result.exit_code == 0 and "key_id=" in result.output
    from linewarden.ledger.chain import key_id, parse_public_key

    text, kid = result.output.split()
    assert key_id(parse_public_key(text)) == kid.removeprefix("key_id=")
