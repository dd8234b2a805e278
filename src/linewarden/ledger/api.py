"""The ledger's reports over the admin API (mounted behind the admin auth by the web app).

    GET  /admin/audit/subscriber?key=HEX[&since=T][&until=T]
    POST /admin/audit/subscriber   {"msisdn": "+447400900123", "since": "7d"}
    GET  /admin/audit/incident?since=T&until=T[&host=PATTERN]
    GET  /admin/audit/stats[?since=T][&until=T]
    GET  /admin/audit/verify

JSON by default, CSV with `format=csv`. A phone number is accepted only in a POST body:
URLs end up in access logs, and no raw number may reach a log.
Reports run in a worker thread with their own short-lived connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..claims import subscriber_key
from . import journal_dir, open_store, open_with_tail, trusted_keys_from_config
from .reports import (
    Report,
    ReportError,
    incident_report,
    normalise_msisdn,
    parse_time,
    stats_report,
    subscriber_report,
    to_csv,
    to_json,
    verify_ledger,
)
from .store import Store

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..config import Config

PREFIX = "/admin/audit"
_HEX_KEY_LEN = 64


@dataclass
class AuditSource:
    """Where the reports read from: a store factory, the ledger key, the trusted keys."""

    new_store: Callable[[], Store]
    ledger_key: bytes
    trusted_keys: Callable[[], dict[str, Ed25519PublicKey]]
    journal: Path | None = None  # journal-first ledger: reports add its unindexed tail

    @classmethod
    def from_config(cls, config: Config) -> AuditSource:
        url, base = config.ledger.url, config.base
        return cls(lambda: open_store(url, base=base), config.ledger_key(),
                   lambda: trusted_keys_from_config(config), journal_dir(config))


def audit_routes(source: Config | AuditSource) -> list[Route]:
    src = source if isinstance(source, AuditSource) else AuditSource.from_config(source)

    def run(make: Callable[[Store], Report]) -> Report:
        store = open_with_tail(src.new_store(), src.journal)
        try:
            return make(store)
        finally:
            store.close()

    async def respond(request: Request, make: Callable[[Store], Report]) -> Response:
        try:
            report = await run_in_threadpool(run, make)
        except ReportError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:
            return JSONResponse({"error": f"ledger unavailable: {type(exc).__name__}"},
                                status_code=503)
        if request.query_params.get("format") == "csv":
            return PlainTextResponse(to_csv(report), media_type="text/csv")
        return JSONResponse(to_json(report))

    def window(values: dict[str, Any]) -> tuple[float | None, float | None]:
        since, until = values.get("since"), values.get("until")
        return (parse_time(str(since)) if since else None,
                parse_time(str(until)) if until else None)

    async def subscriber(request: Request) -> Response:
        values: dict[str, Any] = dict(request.query_params)
        if request.method == "POST":
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return JSONResponse({"error": "the body must be JSON"}, status_code=400)
            if not isinstance(body, dict):
                return JSONResponse({"error": "the body must be a JSON object"},
                                    status_code=400)
            values.update(body)
        elif "msisdn" in values:
            return JSONResponse({"error": 'send the number in a POST body ({"msisdn": '
                                          '"+<number>"}), not in the URL: URLs are logged'},
                                status_code=400)
        try:
            if values.get("msisdn"):
                key = subscriber_key(src.ledger_key, normalise_msisdn(str(values["msisdn"])))
            else:
                key = str(values.get("key", "")).lower()
                if len(key) != _HEX_KEY_LEN or not all(c in "0123456789abcdef" for c in key):
                    raise ReportError("give 'msisdn' (POST body) or 'key' (64 hex digits)")
            since, until = window(values)
        except ReportError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return await respond(request, lambda s: subscriber_report(s, key, since, until))

    async def incident(request: Request) -> Response:
        q = request.query_params
        try:
            if not q.get("since") or not q.get("until"):
                raise ReportError("'since' and 'until' are required")
            since, until = parse_time(q["since"]), parse_time(q["until"])
        except ReportError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        host = q.get("host") or None
        return await respond(request, lambda s: incident_report(s, since, until, host))

    async def stats(request: Request) -> Response:
        try:
            since, until = window(dict(request.query_params))
        except ReportError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return await respond(request, lambda s: stats_report(s, since, until))

    async def verify(request: Request) -> Response:
        trusted = await run_in_threadpool(src.trusted_keys)
        return await respond(request, lambda s: verify_ledger(s, trusted, src.journal))

    return [
        Route(f"{PREFIX}/subscriber", subscriber, methods=["GET", "POST"]),
        Route(f"{PREFIX}/incident", incident, methods=["GET"]),
        Route(f"{PREFIX}/stats", stats, methods=["GET"]),
        Route(f"{PREFIX}/verify", verify, methods=["GET"]),
    ]
