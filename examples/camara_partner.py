"""A sample partner of linewarden's Number Verification API (standard library only).

The partner's web site asks the visitor for their phone number, sends their browser to the
operator's authorization endpoint (which recognises the device from the mobile network,
no password, `prompt=none`), exchanges the code for a single-use token, and asks the
operator "is this device on that number?" — getting yes or no, never the number.

    python examples/camara_partner.py --operator http://127.0.0.1:8080 \\
        --client-id shop --client-secret s3cret --listen 127.0.0.1:9000
    # then, from a phone on the operator's network:
    #   http://127.0.0.1:9000/start?phone=%2B447400900123

Routes:
    /start?phone=+44...[&hashed=1][&scope=...]   -> 302 to the operator's /oauth/authorize
    /callback?code=...&state=...                 -> token, then verify (or read the number)
    /last-token                                  -> the last access token (for tests: replay)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

VERIFY = "number-verification:verify"
READ = "number-verification:device-phone-number:read"


@dataclass
class PartnerApp:
    operator: str  # e.g. http://127.0.0.1:8080: the gateway's web listener
    client_id: str
    client_secret: str
    redirect_uri: str = ""  # set once listening
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # state -> request
    last_token: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, phone: str, hashed: bool, scope: str) -> str:
        state = secrets.token_urlsafe(16)
        with self.lock:
            self.pending[state] = {"phone": phone, "hashed": "1" if hashed else "",
                                   "scope": scope}
        query = urlencode({"response_type": "code", "client_id": self.client_id,
                           "redirect_uri": self.redirect_uri, "scope": f"openid {scope}",
                           "state": state, "prompt": "none"})
        return f"{self.operator}/oauth/authorize?{query}"

    def callback(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            request = self.pending.pop(params.get("state", ""), None)
        if request is None:
            return 400, {"error": "unknown or reused state"}
        if "error" in params:  # e.g. login_required: not on the mobile network
            return 403, {"error": params["error"],
                         "description": params.get("error_description", "")}
        status, token = self._post_form("/oauth/token", {
            "grant_type": "authorization_code", "code": params.get("code", ""),
            "redirect_uri": self.redirect_uri})
        if status != 200:
            return 502, {"error": "token", "status": status, "body": token}
        with self.lock:
            self.last_token = str(token["access_token"])
        if request["scope"] == READ:
            status, body = self._call("GET", "/number-verification/v2/device-phone-number",
                                      self.last_token, None)
            return status, body
        phone = request["phone"]
        claim = ({"hashedPhoneNumber": hashlib.sha256(phone.encode()).hexdigest()}
                 if request["hashed"] else {"phoneNumber": phone})
        status, body = self._call("POST", "/number-verification/v2/verify",
                                  self.last_token, claim)
        return status, body

    def _post_form(self, path: str, form: dict[str, str]) -> tuple[int, Any]:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        req = urllib.request.Request(
            self.operator + path, data=urlencode(form).encode(), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "Authorization": f"Basic {basic}"})
        return _send(req)

    def _call(self, method: str, path: str, token: str,
              body: dict[str, str] | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}", "x-correlator": secrets.token_hex(8)}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return _send(urllib.request.Request(self.operator + path, data=data, method=method,
                                            headers=headers))


# The operator is called directly, never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _send(req: urllib.request.Request) -> tuple[int, Any]:
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def make_server(app: PartnerApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/start":
                scope = params.get("scope", VERIFY)
                location = app.start(params.get("phone", ""), bool(params.get("hashed")),
                                     scope)
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if url.path == "/callback":
                status, body = app.callback(params)
            elif url.path == "/last-token":
                status, body = 200, {"access_token": app.last_token}
            else:
                status, body = 404, {"error": "not found"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    app.redirect_uri = f"http://{host}:{server.server_address[1]}/callback"
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operator", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--listen", default="127.0.0.1:9000")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    app = PartnerApp(args.operator.rstrip("/"), args.client_id, args.client_secret)
    server = make_server(app, host, int(port))
    print(f"partner app on http://{args.listen}/start?phone=%2B<number>; redirect URI "
          f"{app.redirect_uri}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
