"""Listening TCP sockets, bound before the server that uses them starts.

Binding first turns a busy or wrong address into one sentence naming the address and the
fix, instead of a library's traceback after a banner that claimed the server was up.
"""

from __future__ import annotations

import errno
import socket

# Connections the kernel queues before accept(); the web pages' servers use this backlog
# (uvicorn's default is 2048; Linux caps it at net.core.somaxconn anyway).
BACKLOG = 2048


class ListenError(OSError):
    """An address cannot be listened on; `str()` is one sentence with a `fix:`."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)  # one argument: str() is the sentence, no "[Errno N]"
        self.errno = code


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def bind_error(exc: OSError, host: str, port: int, setting: str) -> ListenError:
    """`exc` from bind/listen on host:port as one sentence; `setting` is where the address
    comes from (`--listen`, `[web] listen`, ...)."""
    where = f"{_url_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = "the address is already in use by another process"
        fix = f"stop that process (e.g. `ss -ltnp 'sport = :{port}'` names it), or set " \
              f"{setting} to a free address"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
        fix = f"set {setting} to a port above 1023, or grant CAP_NET_BIND_SERVICE"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "no interface of this host has that address"
        fix = f"set {setting} to an address of this host (e.g. 127.0.0.1)"
    else:
        why = exc.strerror or str(exc)
        fix = f"check {setting}"
    return ListenError(exc.errno, f"cannot listen on {where}: {why}; fix: {fix}")


def bind_tcp(host: str, port: int, setting: str) -> socket.socket:
    """A listening TCP socket on host:port, or ListenError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(errno.EADDRNOTAVAIL, f"cannot listen on {_url_host(host)}:{port}: "
                          f"{exc.strerror}; fix: set {setting} to an IP address") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn and asyncio do: a restart does not wait out TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, host, port, setting) from None
    return sock
