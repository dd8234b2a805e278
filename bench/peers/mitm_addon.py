"""mitmproxy add-on for bench/peers: the header-enrichment job.

    LW_PEER_ORIGIN=127.0.0.1:PORT mitmdump -s bench/peers/mitm_addon.py ...

Strips every header whose name loosely matches an identity name, adds X-Up-Calling-Line-Id
for partner.test only, and sends partner.test / other.test to the local origin (Host kept).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from idnames import ENRICH_HEADER, MSISDN, OTHER_HOST, PARTNER_HOST, is_identity

_host, _, _port = os.environ["LW_PEER_ORIGIN"].rpartition(":")
ORIGIN = (_host, int(_port))
RESOLVE = {PARTNER_HOST, OTHER_HOST}


class Enrich:
    def request(self, flow) -> None:  # type: ignore[no-untyped-def]
        req = flow.request
        host = req.pretty_host.lower()
        headers = req.headers
        for name in {k for k in headers if is_identity(k)}:
            del headers[name]
        if host == PARTNER_HOST:
            headers[ENRICH_HEADER] = MSISDN
        if host in RESOLVE:
            host_header = req.host_header
            req.host, req.port = ORIGIN
            req.host_header = host_header


addons = [Enrich()]
