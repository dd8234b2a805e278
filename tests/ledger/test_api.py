"""The same reports through the admin API routes."""

from __future__ import annotations

import warnings
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from linewarden.claims import subscriber_key
from linewarden.config import load_config
from linewarden.ledger.api import audit_routes

from .test_cli import ALICE, browse, config_path, filled  # noqa: F401 (fixtures)

with warnings.catch_warnings():
    # Starlette 1.x nags about httpx in favour of httpx2; httpx is what the project pins.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


def client(config: Path) -> TestClient:
    return TestClient(Starlette(routes=audit_routes(load_config(str(config)))))


def test_subscriber_by_post_and_by_key(filled: Path) -> None:  # noqa: F811
    c = client(filled)
    by_number = c.post("/admin/audit/subscriber", json={"msisdn": "+" + ALICE})
    assert by_number.status_code == 200
    assert {e["host"] for e in by_number.json()["entries"]} == {"pay.billing.test",
                                                                "www.age.test"}
    key = subscriber_key(b"cli-test-key", ALICE)
    by_key = c.get("/admin/audit/subscriber", params={"key": key, "since": "1d"})
    assert by_key.json()["entries"] == by_number.json()["entries"]
    as_csv = c.get("/admin/audit/subscriber", params={"key": key, "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.startswith("partner_id,purpose,host")


def test_a_number_in_the_url_is_refused(filled: Path) -> None:  # noqa: F811
    r = client(filled).get("/admin/audit/subscriber", params={"msisdn": ALICE})
    assert r.status_code == 400 and "POST" in r.json()["error"]
    assert ALICE not in r.text
    bad = client(filled).post("/admin/audit/subscriber", json={"msisdn": "12"})
    assert bad.status_code == 400


def test_incident_stats_verify(filled: Path) -> None:  # noqa: F811
    c = client(filled)
    incident = c.get("/admin/audit/incident", params={"since": "1d", "until": "now"})
    assert incident.status_code == 200 and incident.json()["subscribers"] == 2
    assert c.get("/admin/audit/incident", params={"since": "1d"}).status_code == 400
    assert sum(d["disclosures"] for d in c.get("/admin/audit/stats").json()["days"]) == 6
    verify = c.get("/admin/audit/verify").json()
    assert verify["ok"] is True and verify["latest_checkpoints"]["gw-test"]["kind"] == "close"


def test_unavailable_ledger_is_503(config_path: Path) -> None:  # noqa: F811
    config_path.write_text(config_path.read_text().replace(
        "sqlite:///state/ledger.db", "postgresql://nobody@127.0.0.1:1/none"))
    r = client(config_path).get("/admin/audit/stats")
    assert r.status_code == 503
