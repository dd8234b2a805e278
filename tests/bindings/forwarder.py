"""A TCP forwarder the test controls: what a virtual IP, HAProxy or a Sentinel-aware client
does in a failover. `switch(port)` sends new connections to another backend and cuts every
open one (a client then reconnects, as it would to a moved VIP)."""

from __future__ import annotations

import contextlib
import socket
import threading


class Forwarder:
    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def switch(self, backend_port: int) -> None:
        with self._lock:
            self.backend_port = backend_port
            doomed, self._open = self._open, []
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        self.switch(self.backend_port)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:  # no connection to the old backend survives a switch
                try:
                    backend = socket.create_connection(("127.0.0.1", self.backend_port),
                                                       timeout=2)
                except OSError:
                    client.close()
                    continue
                backend.settimeout(None)
                self._open += [client, backend]
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
