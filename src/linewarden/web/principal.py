"""Who is calling the admin API: the operator principal an access record names.

On the Unix socket it is the peer process's user as the kernel reports it: the admin
listener's protocol (`admin_socket.PeerCredProtocol`) reads SO_PEERCRED (unix(7)) and makes
the request's client `("uid:N", pid)` — a fact from the kernel, not a name the client
sends. Over TCP it is the admin token, named by its config key: `[admin] admin_token` is
the only credential there, and AdminGuard checked it before any route ran.
"""

from __future__ import annotations

import pwd

from starlette.requests import Request

TOKEN_PRINCIPAL = "token:admin_token"
_UID = "uid:"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (a container's): the number names it
        return f"uid{uid}"


def principal(request: Request) -> str | None:
    """`unix:USER` on the socket, `token:admin_token` over TCP; None when the caller
    cannot be named (then nothing may be revealed to it)."""
    client = request.client
    if client is None:
        return None  # a Unix socket served without the peer-credentials protocol
    host = client.host
    if host.startswith(_UID):
        uid = host[len(_UID):]
        return f"unix:{_user(int(uid))}" if uid.isdigit() else None
    return TOKEN_PRINCIPAL
