"""The leak checker over HTTP: `GET /` (a page for people) and `GET /api/check` (JSON).

Both show the visitor the headers *their own* request carried, so the responses are
personal data: nothing here stores or logs a header, every response says `no-store`, and the
JSON carries no CORS header, so another site's script cannot read a visitor's number through
their browser. The page needs no JavaScript (feature phones and Opera Mini are exactly the
browsers that sit behind header-enrichment proxies) and the CSP forbids scripts outright, as a
second line behind escaping every value.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from linewarden.checker import CheckReport, HeaderLine, analyse, validate_regions
from linewarden.names import DEFAULT_IDENTITY_NAMES, IdentityNames

__all__ = ["PRIVATE_RESPONSE_HEADERS", "checker_routes", "make_checker_app", "render_page"]

# Sent on every checker response. no-store: the page is the visitor's identity, so neither a
# shared cache (the operator's own proxy!) nor the browser may keep it (RFC 9111 §5.2.2.5).
PRIVATE_RESPONSE_HEADERS: dict[str, str] = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",  # HTTP/1.0 caches in old WAP gateways ignore Cache-Control
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:46rem;padding:1rem;line-height:1.45;color:#1b1b1b;background:#fff}
h1{font-size:1.5rem;margin:0 0 .5rem}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
.verdict{border-radius:.5rem;padding:1rem;margin:0 0 1rem;border:2px solid}
.verdict p{margin:.25rem 0 0}
.clean{background:#e8f5e9;border-color:#2e7d32}
.leak{background:#fdecea;border-color:#c62828}
ul.findings{padding-left:1.2rem}
ul.findings li{margin:.4rem 0}
ol.headers{list-style:none;padding:0;margin:0}
ol.headers li{border-bottom:1px solid #ddd;padding:.5rem 0;overflow-wrap:anywhere}
.name{font-weight:600;font-family:ui-monospace,Menlo,Consolas,monospace}
.value{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap}
.flagged{background:#fff4e5;border-left:4px solid #c62828;padding-left:.5rem}
.why{display:block;color:#b71c1c;font-weight:600}
footer{margin-top:2rem;font-size:.85rem;color:#555}
"""


def checker_routes(
    regions: Sequence[str] = ("GB",), names: IdentityNames = DEFAULT_IDENTITY_NAMES
) -> list[Route]:
    """`/` and `/api/check`, to mount on the gateway's web app or run alone."""
    hints = validate_regions(regions)  # fail at start-up, not on the first visitor

    def report_for(request: Request) -> CheckReport:
        # The raw list keeps duplicates and the order received; latin-1 maps every byte
        # (RFC 9110 §5.5 obs-text) so no value is lost or rejected.
        raw = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw]
        return analyse(raw, regions=hints, names=names)

    # Plain `def` endpoints: Starlette runs them in its thread pool, so a slow analysis (a
    # hostile request full of digits) never stalls the event loop serving other visitors.
    def page(request: Request) -> Response:
        return HTMLResponse(render_page(report_for(request)), headers=PRIVATE_RESPONSE_HEADERS)

    def api(request: Request) -> Response:
        return JSONResponse(report_for(request).to_json(), headers=PRIVATE_RESPONSE_HEADERS)

    return [
        Route("/", page, methods=["GET"], name="checker_page"),
        Route("/api/check", api, methods=["GET"], name="checker_api"),
    ]


def make_checker_app(
    regions: Sequence[str] = ("GB",), names: IdentityNames = DEFAULT_IDENTITY_NAMES
) -> Starlette:
    """The checker alone, as `linewarden checker` serves it."""
    return Starlette(routes=checker_routes(regions, names))


def render_page(report: CheckReport) -> str:
    """The HTML page. Every received byte goes through `escape` before it reaches markup."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{escape(report.headline)} · linewarden leak checker</title>
<style>{_CSS}</style>
</head>
<body>
<main>
{_verdict_html(report)}
<h2>Every header this site received ({len(report.headers)})</h2>
<ol class="headers">
{"".join(_header_html(line) for line in report.headers)}
</ol>
</main>
<footer>This page shows what your own request carried. It is not stored or logged.
The same check as JSON: <a href="/api/check">/api/check</a>.</footer>
</body>
</html>
"""


def _verdict_html(report: CheckReport) -> str:
    if not report.identity_revealed:
        return (
            '<section class="verdict clean" id="verdict">'
            f"<h1>{escape(report.headline)}</h1><p>{escape(report.summary)}</p></section>"
        )
    items = "".join(
        f"<li>{escape(f.message)} <small>(header <span class=name>{escape(f.header)}</span>)"
        "</small></li>"
        for f in report.findings
    )
    return (
        '<section class="verdict leak" id="verdict">'
        f"<h1>{escape(report.headline)}</h1><p>{escape(report.summary)}</p>"
        f'<ul class="findings">{items}</ul></section>'
    )


def _header_html(line: HeaderLine) -> str:
    name = f'<span class="name">{escape(line.name)}</span>'
    value = f'<span class="value">{escape(line.value)}</span>'
    if line.finding is None:
        return f"<li>{name}: {value}</li>\n"
    why = f'<span class="why">⚠ {escape(line.finding.message)}</span>'
    return f'<li class="flagged">{name}: {value}{why}</li>\n'
