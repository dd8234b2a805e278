"""The one client of a running gateway's admin API, for every CLI command.

It connects to `[admin] listen` as the config says: the Unix socket (http.client over
AF_UNIX; the socket's 0600 mode is the guard) or TCP with `Authorization: Bearer <token>`.
http.client never consults `http_proxy` from the environment, so the admin API is never
reached through a proxy. Every failure is one `AdminError` with a sentence a person can
act on.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from .config import DEMO_NAME, AdminAddress, Config

# The admin API is on this host or next to it: a few seconds is plenty.
ADMIN_TIMEOUT = 5.0
# Admin answers are small JSON documents (a listing is capped at 1000 bindings).
MAX_ANSWER = 8 * 1024 * 1024


class AdminError(Exception):
    """The call failed. `status` is the HTTP status, or None when nothing answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AdminClient:
    """`request()` one admin endpoint of the gateway that `config` describes."""

    def __init__(self, config: Config, *, worker: int = 0,
                 timeout: float = ADMIN_TIMEOUT) -> None:
        self.config = config
        self.address: AdminAddress = config.admin_address(worker)
        self.timeout = timeout

    def request(self, method: str, path: str,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON answer of a 2xx; AdminError for anything else."""
        status, raw = self.raw(method, path, body)
        if status >= 400:
            raise AdminError(f"{self._where(path)}: {status} {_error_text(raw)}", status)
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            raise AdminError(f"{self._where(path)}: the answer is not JSON", status) from None
        return doc if isinstance(doc, dict) else {"value": doc}

    def raw(self, method: str, path: str,
            body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        """(status, body) of one call; AdminError(status=None) if nothing answered."""
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(MAX_ANSWER)
        except OSError as exc:
            raise AdminError(self._unreachable(exc)) from None
        except http.client.HTTPException as exc:
            raise AdminError(f"{self._where(path)}: broken answer ({exc!r})") from None
        finally:
            conn.close()

    def _token(self) -> str:
        try:
            return self.config.admin_token()
        except ValueError as exc:
            raise AdminError(f"[admin] admin_token_file: {exc}") from None

    def _connection(self) -> http.client.HTTPConnection:
        if self.address.path is not None:
            return _UnixConnection(str(self.address.path), self.timeout)
        return http.client.HTTPConnection(self.address.host, self.address.port,
                                          timeout=self.timeout)

    def _where(self, path: str) -> str:
        if self.address.path is not None:
            return f"{path} on {self.address.path}"
        return f"{self.address}{path}"

    def _unreachable(self, exc: OSError) -> str:
        running = (f"is `linewarden serve --config {self.config.path}` running?"
                   if self.config.path != DEMO_NAME else
                   "is `linewarden serve` (the embedded demo) running in this directory?")
        if self.address.path is None:
            return (f"cannot reach the admin API at {self.address} ([admin] listen): "
                    f"{exc.strerror or exc}; {running}")
        path = self.address.path
        if isinstance(exc, FileNotFoundError):
            return f"no admin socket at {path}: {running}"
        if isinstance(exc, ConnectionRefusedError):
            return f"nothing listens on the admin socket {path} (left by a stopped gateway): " \
                   f"{running}"
        if isinstance(exc, PermissionError):
            return (f"permission denied on the admin socket {path} (mode 0600): run this as "
                    "the user that runs `linewarden serve`")
        return f"cannot use the admin socket {path}: {exc.strerror or exc}; {running}"


def _error_text(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace").strip()
    message = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(message, str):
        return message
    return raw[:200].decode("utf-8", "replace").strip()
