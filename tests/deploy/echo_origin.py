"""An origin for the namespace tests: answers every request with its raw head as the body,
and appends the head to a log file (one JSON line each), on the address given."""

from __future__ import annotations

import json
import socket
import sys
import threading


def serve(conn: socket.socket, log: str, here: str) -> None:
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0]
        with open(log, "a") as out:
            out.write(json.dumps({"at": here, "head": head.decode("latin-1")}) + "\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
                     % (len(head), head))


def main() -> None:
    host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve, args=(conn, log, f"{host}:{port}"), daemon=True).start()


if __name__ == "__main__":
    main()
