"""`linewarden serve` with its proxy or public port taken (issue 21 item 5): one sentence
naming the address, the setting and the fix, exit 1, no traceback, no banner."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from lwtest import LINEWARDEN, Origin, free_port, gateway_config


@pytest.mark.parametrize("taken", ["[proxy] listen", "[web] listen"])
def test_a_busy_port_is_one_sentence_and_exit_1(tmp_path: Path, origin: Origin,
                                                taken: str) -> None:
    directory = tmp_path
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        proxy_port = busy if taken == "[proxy] listen" else free_port()
        web_port = busy if taken == "[web] listen" else free_port()
        config = directory / "linewarden.toml"
        config.write_text(gateway_config(directory, origin.port, proxy_port=proxy_port,
                                         web_port=web_port))
        done = subprocess.run([str(LINEWARDEN), "serve", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "[Errno" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "cannot listen" in line]
    assert errors == [
        f"linewarden: cannot start: cannot listen on 127.0.0.1:{busy}: the address is already "
        f"in use by another process; fix: stop that process (e.g. `ss -ltnp 'sport = :{busy}'` "
        f"names it), or set {taken} to a free address"]
    assert "proxy    http://" not in done.stdout  # no banner claiming it runs
