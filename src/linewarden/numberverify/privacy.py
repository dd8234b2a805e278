"""/me: the subscriber's own privacy page, the one the 2012 O2 customers asked for.

Reached over the mobile network, it recognises the subscriber by the binding of the
client address (as /oauth/authorize does), shows the ledger's "who received my identity"
report in plain words, and lets them stop disclosures to one partner or to all. Without a
binding it explains why it shows nothing: it never guesses, so it never shows somebody
else's record. Plain HTML forms, no JavaScript.

CSRF: each form carries a token, an HMAC over (issue time, subscriber key, client address)
with a key derived from the ledger key (so every instance accepts every other's tokens),
valid for CSRF_TTL; a POST also fails if the browser says it came from another site
(Sec-Fetch-Site). A forged cross-site POST could otherwise switch disclosures back on.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..bindings import OPT_OUT_ALL, Binding
from ..claims import CLAIM_WORDS, subscriber_key
from ..identifiers import mask_msisdn
from ..ledger.reports import SubscriberReport, subscriber_report
from .api import MAX_BODY, NumberVerification
from .optout import OptOutError

if TYPE_CHECKING:
    from ..ledger.api import AuditSource

# How long a rendered form stays usable: long enough to read the page, short enough that
# a leaked token is soon worthless.
CSRF_TTL = 3600.0
# Ledger rows shown per page; the report is grouped per partner and host, so this is
# rarely reached.
MAX_ROWS = 500

PURPOSE_WORDS = {
    "age_verification": "checking your age",
    "billing": "charging purchases to your phone bill",
    "own_services": "your mobile operator's own services",
    "fraud_prevention": "preventing fraud",
}
WORDS = {**CLAIM_WORDS, "number_verified": "a yes/no answer to \"is this your number?\""}
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
# Readable on a 360 px phone (issue 19): one column of cards, no table to scroll sideways,
# long host names wrapped anywhere, buttons large enough to tap (WCAG 2.5.8: 24 px).
STYLE = ("*{box-sizing:border-box}body{font-family:sans-serif;max-width:52rem;margin:1rem auto;"
         "padding:0 1rem;line-height:1.45;overflow-wrap:anywhere}h1{font-size:1.6rem}"
         "h2{font-size:1.25rem;margin-top:1.5rem}.note{background:#eef;padding:.5rem}"
         ".stopped{color:#a00}form{display:inline}"
         "button{font:inherit;min-height:2.25rem;padding:.3rem .7rem;margin:.2rem 0}"
         ".entries,.partners{list-style:none;padding:0;margin:0}"
         ".entry,.partners li{border:1px solid #bbb;border-radius:.4rem;padding:.6rem .8rem;"
         "margin:.6rem 0}.entry h3{font-size:1.1rem;margin:0 0 .2rem}"
         ".entry p{margin:.2rem 0}.site{font-family:monospace;color:#333}.when{color:#444}")


@dataclass
class PrivacyPage:
    nv: NumberVerification
    audit: AuditSource | None  # None: no ledger to read, the page says so

    @property
    def _csrf_key(self) -> bytes:
        return hmac.new(self.nv.ledger_key, b"linewarden /me csrf", hashlib.sha256).digest()

    def csrf_token(self, binding: Binding, now: float) -> str:
        issued = str(int(now))
        return f"{issued}.{self._sign(issued, binding)}"

    def csrf_ok(self, token: str, binding: Binding, now: float) -> bool:
        issued, _, sig = token.partition(".")
        if not issued.isdigit() or not 0 <= now - int(issued) <= CSRF_TTL:
            return False
        return hmac.compare_digest(sig, self._sign(issued, binding))

    def _sign(self, issued: str, binding: Binding) -> str:
        message = f"{issued}|{subscriber_key(self.nv.ledger_key, binding.msisdn)}|{binding.ip}"
        return hmac.new(self._csrf_key, message.encode(), hashlib.sha256).hexdigest()

    def _report(self, msisdn: str) -> SubscriberReport:
        assert self.audit is not None
        store = self.audit.new_store().open()
        try:
            return subscriber_report(store, subscriber_key(self.audit.ledger_key, msisdn))
        finally:
            store.close()

    # ---- pages

    async def page(self, request: Request) -> Response:
        binding = await self.nv.binding(request)
        if binding is None:
            return _html(_not_recognised(request), 200)
        report: SubscriberReport | None = None
        if self.audit is not None:
            try:
                report = await run_in_threadpool(self._report, binding.msisdn)
            except Exception:
                report = None
        opted = (self.nv.optouts.current(binding.msisdn) if self.nv.optouts is not None
                 else frozenset(binding.attributes.get("opt_out", "").split()))
        token = self.csrf_token(binding, self.nv.clock())
        done = request.query_params.get("done", "")
        return _html(self._recognised(binding, report, opted, token, done), 200)

    async def opt_out(self, request: Request) -> Response:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return _html(_message("Refused", "This form can only be sent from this page."),
                         403)
        binding = await self.nv.binding(request)
        if binding is None:
            return _html(_not_recognised(request), 403)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return _html(_message("Refused", "The form is too large."), 413)
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        if not self.csrf_ok(form.get("csrf", ""), binding, self.nv.clock()):
            return _html(_message("This form has expired",
                                  "Please go back to <a href=\"/me\">your privacy page</a> "
                                  "and try again."), 403)
        partner_id, action = form.get("partner", ""), form.get("action", "")
        known = {p.id for p in self.nv.policy().partners}
        if (partner_id != OPT_OUT_ALL and partner_id not in known) or \
                action not in ("stop", "allow"):
            return _html(_message("Refused", "Unknown partner or action."), 400)
        if self.nv.optouts is None:
            return _html(_message("Not available", "This network keeps no subscriber "
                                  "profiles, so opting out cannot be recorded here. "
                                  "Please contact customer care."), 503)
        optouts = self.nv.optouts
        try:
            await run_in_threadpool(optouts.change, binding.msisdn, partner_id,
                                    action == "stop")
        except (OptOutError, OSError):
            return _html(_message("Not saved", "Your choice could not be saved just now. "
                                  "Nothing was changed; please try again."), 503)
        return RedirectResponse(f"/me?done={'stopped' if action == 'stop' else 'allowed'}",
                                status_code=303, headers=HEADERS)

    def _recognised(self, binding: Binding, report: SubscriberReport | None,
                    opted: frozenset[str], token: str, done: str) -> str:
        parts = [f"<h1>Your privacy</h1><p>This page recognises your mobile connection "
                 f"(number ending {escape(mask_msisdn(binding.msisdn)[-3:])}). "
                 "It shows which websites and services received information about you "
                 "from this network, and lets you stop it.</p>"]
        if done:
            parts.append('<p class="note" id="done">Your choice is saved. It applies to '
                         "your next request on every part of the network within a few "
                         "seconds.</p>")
        parts.append("<h2>Who received your identity</h2>")
        if report is None:
            parts.append("<p>The record of disclosures cannot be read just now.</p>")
        elif not report.entries:
            parts.append('<p id="nothing">No website or service has received your '
                         "identity from this network.</p>")
        else:
            names = {p.id: p.name for p in self.nv.policy().partners}
            now = self.nv.clock()
            cards = "".join(
                f'<li class="entry"><h3>{escape(names.get(e.partner_id, e.partner_id))}</h3>'
                f'<p class="site">{escape(e.host)}</p>'
                f"<p>For {escape(PURPOSE_WORDS.get(e.purpose, e.purpose))}, it received "
                f"{escape('; '.join(WORDS.get(c, c) for c in e.claims))}.</p>"
                f'<p class="when">{escape(_when(e.first_us, e.last_us, e.count, now))}</p>'
                "</li>"
                for e in report.entries[:MAX_ROWS])
            parts.append(f'<ul class="entries" id="report">{cards}</ul>')
        if report is not None:
            parts.append(_accesses_html(report))
        parts.append("<h2>Stop sharing</h2>")
        everyone = OPT_OUT_ALL in opted
        if everyone:
            parts.append('<p class="stopped" id="all-stopped">You have stopped sharing '
                         "with every partner.</p>"
                         + _form(token, OPT_OUT_ALL, "allow", "Allow partners again"))
        else:
            items = []
            for p in self.nv.policy().partners:
                stopped = p.id in opted
                state = ('<span class="stopped">stopped</span>' if stopped
                         else "allowed")
                button = _form(token, p.id, "allow" if stopped else "stop",
                               "Allow again" if stopped else "Stop sharing")
                items.append(f'<li id="partner-{escape(p.id)}">{escape(p.name)} '
                             f"({escape(PURPOSE_WORDS.get(p.purpose, p.purpose))}): "
                             f"{state} {button}</li>")
            parts.append(f"<ul class=\"partners\">{''.join(items)}</ul>"
                         + _form(token, OPT_OUT_ALL, "stop", "Stop sharing with everyone"))
        return _document("Your privacy", "".join(parts))


def _day(time_us: int) -> str:
    """`5 Dec 2026, 19:40 UTC`: a date a subscriber reads at a glance."""
    moment = datetime.fromtimestamp(time_us / 1_000_000, tz=UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def _when(first_us: int, last_us: int, count: int, now: float) -> str:
    """`3 times, first on 5 Dec 2026, 09:12 UTC, last today at 19:40 UTC`: how often and
    when, as a person says it; UTC named, since the page cannot know the phone's zone."""
    first, last = _moment(first_us, now), _moment(last_us, now)
    if count == 1:
        return f"Once, {first}."
    return f"{count} times, first {first}, last {last}."


def _moment(time_us: int, now: float) -> str:
    moment = datetime.fromtimestamp(time_us / 1_000_000, tz=UTC)
    today = datetime.fromtimestamp(now, tz=UTC).date()
    if moment.date() == today:
        return f"today at {moment:%H:%M} UTC"
    if (today - moment.date()).days == 1:
        return f"yesterday at {moment:%H:%M} UTC"
    return f"on {_day(time_us)}"


def _accesses_html(report: SubscriberReport) -> str:
    """Operator staff who revealed the number (ledger access records), in plain words;
    the staff member is not named to the subscriber, the reason is."""
    head = "<h2>Who at your operator viewed your number</h2>"
    if not report.accesses:
        return head + ('<p id="no-accesses">Nobody at your operator has looked up your '
                       "number in our systems.</p>")
    items = "".join(f"<li>Your number was viewed by operator staff on {_day(a.time_us)}, "
                    f"reason: {escape(a.reason)}</li>" for a in report.accesses[:MAX_ROWS])
    return head + f'<ul id="accesses">{items}</ul>'


def _form(token: str, partner: str, action: str, label: str) -> str:
    return ('<form method="post" action="/me/opt-out">'
            f'<input type="hidden" name="csrf" value="{escape(token)}">'
            f'<input type="hidden" name="partner" value="{escape(partner)}">'
            f'<input type="hidden" name="action" value="{escape(action)}">'
            f'<button type="submit">{escape(label)}</button></form>')


def _not_recognised(request: Request) -> str:
    return _document("We cannot recognise you", (
        '<h1>We cannot recognise you</h1><p id="unrecognised">This page shows your record '
        "only when you open it over this operator's mobile data connection, because that "
        "connection is how we know it is you. Your request did not come from one (are you "
        "on Wi-Fi, or using a VPN?), so there is nothing we can safely show you.</p>"
        "<p>Switch to mobile data and reload this page.</p>"))


def _message(title: str, body: str) -> str:
    return _document(title, f"<h1>{escape(title)}</h1><p>{body}</p>")


def _document(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")


def _html(text: str, status: int) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def privacy_routes(page: PrivacyPage) -> list[BaseRoute]:
    return [Route("/me", page.page, methods=["GET"]),
            Route("/me/opt-out", page.opt_out, methods=["POST"])]
