"""The admin listener's socket, opened here rather than by uvicorn.

uvicorn's own `uds=` makes a Unix socket mode 0666 (anyone on the host could list every
subscriber); here it is bound under umask 077 and chmod 0600, so only the gateway's user
(and root) can connect: on the socket, the file mode is the guard. A TCP admin socket is
bound here too, so a busy port fails before anything else starts.

`PeerCredProtocol` tells the admin app who called over the socket: the kernel's SO_PEERCRED
uid becomes the request's client ("uid:N"), for access records and kill-switch logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import AdminAddress
from ..listen import ListenError, bind_tcp

SOCKET_MODE = 0o600
DIRECTORY_MODE = 0o700
# Connections the kernel queues before accept(): the CLI and one Prometheus, not a crowd.
BACKLOG = 64
# Probing an existing socket: a live gateway answers connect() at once.
PROBE_TIMEOUT = 1.0
# struct ucred {pid_t pid; uid_t uid; gid_t gid;} (socket(7), SO_PEERCRED).
_UCRED = struct.Struct("3i")


class AdminSocketError(ListenError):
    """The admin socket cannot be opened; the message says what to do."""


@dataclass
class AdminSocket:
    """A listening admin socket, and what it takes to remove its file at shutdown."""

    address: AdminAddress
    sock: socket.socket
    inode: int = 0  # the socket file's inode at bind time (Unix only)

    def remove(self) -> None:
        """Unlink our socket file, unless another process has replaced it since."""
        if self.address.path is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.address.path).st_ino == self.inode:
                os.unlink(self.address.path)


def open_admin_socket(address: AdminAddress) -> AdminSocket:
    """A listening socket for `address`: a 0600 Unix socket, or TCP."""
    if address.path is None:
        return AdminSocket(address, _tcp(address))
    sock = _unix(address.path)
    return AdminSocket(address, sock, os.stat(address.path).st_ino)


def _tcp(address: AdminAddress) -> socket.socket:
    return bind_tcp(address.host, address.port, "[admin] listen")


def _unix(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The mode is set at bind() from the umask: never a moment with a wider one. The umask
    # is process-wide, but only narrows what another thread might create meanwhile.
    old = os.umask(0o077)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise AdminSocketError(exc.errno, f"cannot create the admin socket {path}: "
                               f"{exc.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)  # explicit, whatever the umask did
    sock.listen(BACKLOG)
    return sock


def _clear_stale(path: Path) -> None:
    """A socket file left by a crashed gateway is removed; a live one is someone else's."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AdminSocketError(errno.EEXIST, f"{path} exists and is not a socket; move it "
                               "away, or set [admin] listen = \"unix:OTHER_PATH\"")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nobody listens: a crashed process's leftover
        return
    except OSError as exc:
        raise AdminSocketError(exc.errno, f"cannot check the existing admin socket {path}: "
                               f"{exc.strerror}") from None
    finally:
        probe.close()
    raise AdminSocketError(errno.EADDRINUSE,
                           f"another linewarden serve is running on the admin socket {path}; "
                           "stop it first, or give this instance its own state_dir or "
                           "[admin] listen = \"unix:OTHER_PATH\"")


class PeerCredProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; on a Unix socket the client is ("uid:N", pid)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        try:
            pid, uid, _gid = _UCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        except OSError:
            return
        self.client = (f"uid:{uid}", pid)
