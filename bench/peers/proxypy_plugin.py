"""proxy.py plugin for bench/peers: the header-enrichment job.

    PYTHONPATH=bench/peers LW_PEER_ORIGIN=127.0.0.1:PORT \
        proxy --plugins proxypy_plugin.EnrichPlugin ...

Strips every header whose name loosely matches an identity name, adds X-Up-Calling-Line-Id
for partner.test only, and sends partner.test / other.test to the local origin (Host kept).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from idnames import ENRICH_HEADER, MSISDN, OTHER_HOST, PARTNER_HOST, is_identity
from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin

_host, _, _port = os.environ["LW_PEER_ORIGIN"].rpartition(":")
ORIGIN = (_host.encode(), int(_port))
RESOLVE = {PARTNER_HOST.encode(), OTHER_HOST.encode()}
PARTNER = PARTNER_HOST.encode()


class EnrichPlugin(HttpProxyBasePlugin):
    def before_upstream_connection(self, request: HttpParser) -> HttpParser | None:
        host = (request.host or b"").lower()
        if request.headers:
            # proxy.py keys its header dict by the lower-cased name.
            for key in [k for k in request.headers if is_identity(k.decode("latin-1"))]:
                del request.headers[key]
        if host == PARTNER:
            request.add_header(ENRICH_HEADER.encode(), MSISDN.encode())
        if host in RESOLVE:
            request.host, request.port = ORIGIN
        return request
