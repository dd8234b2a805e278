"""The admin listener apart from the public pages (issue 15 item 2): `linewarden serve`
refuses an unguarded TCP admin API, makes the Unix socket 0600, replaces a stale socket and
refuses to share a live one; the CLI drives a running gateway over the socket."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from wire import curl_ok, marker

from lwtest import (
    LINEWARDEN,
    MSISDN_1,
    Gateway,
    Origin,
    admin_socket,
    free_port,
    gateway_config,
    launch_serve,
    stop_process,
)

TOKEN = "0123456789abcdef-admin-token"


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINEWARDEN), "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, check=False,
                          cwd=config.parent)


def _config(tmp_path: Path, origin: Origin, **options: str) -> str:
    return gateway_config(tmp_path, origin.port, proxy_port=free_port(), web_port=free_port(),
                          **options)  # type: ignore[arg-type]


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


ADMIN_PORT = free_port("127.0.0.3")


@pytest.mark.parametrize(("name", "admin", "extra_resolve", "needle", "bad_line"), [
    ("tcp-without-token", f'listen = "127.0.0.3:{ADMIN_PORT}"', "",
     "a TCP admin API needs a token", "listen = \"127.0.0.3"),
    ("tcp-short-token", f'listen = "127.0.0.3:{ADMIN_PORT}"\nadmin_token = "short"', "",
     "at least 16 are needed", 'admin_token = "short"'),
    ("resolve-to-admin-port", f'listen = "127.0.0.3:{ADMIN_PORT}"\nadmin_token = "{TOKEN}"',
     f'"sneaky.test" = "127.0.0.3:{ADMIN_PORT}"', "leads the proxy to the admin listener",
     '"sneaky.test"'),
    ("resolve-to-admin-host", f'listen = "127.0.0.3:{ADMIN_PORT}"\nadmin_token = "{TOKEN}"',
     '"sneaky.test" = "127.0.0.3"', "every port of that address", '"sneaky.test"'),
    ("resolve-to-wildcard-admin", f'listen = "0.0.0.0:{ADMIN_PORT}"\nadmin_token = "{TOKEN}"',
     f'"sneaky.test" = "127.0.0.1:{ADMIN_PORT}"', "leads the proxy to the admin listener",
     '"sneaky.test"'),
    ("unix-path-too-long", f'listen = "unix:/tmp/{"x" * 120}.sock"', "", "too long",
     'listen = "unix:'),
])
def test_serve_refuses_an_unsafe_admin_listener(tmp_path: Path, origin: Origin, name: str,
                                                admin: str, extra_resolve: str, needle: str,
                                                bad_line: str) -> None:
    config = tmp_path / "linewarden.toml"
    text = _config(tmp_path, origin, admin_extra=admin)
    if extra_resolve:
        text = text.replace('"down.test"', f'{extra_resolve}\n"down.test"')
    config.write_text(text)
    result = _serve(config)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert f"{config}:{_line_of(text, bad_line)}:" in result.stderr, result.stderr
    assert needle in result.stderr and "fix:" in result.stderr
    assert TOKEN not in result.stderr
    assert not (tmp_path / "state" / "admin.sock").exists()


def test_old_web_admin_token_is_refused_with_the_new_home(tmp_path: Path,
                                                          origin: Origin) -> None:
    config = tmp_path / "linewarden.toml"
    text = _config(tmp_path, origin, web_extra=f'admin_token = "{TOKEN}"')
    config.write_text(text)
    result = _serve(config)
    assert result.returncode == 1
    assert f"{config}:{_line_of(text, 'admin_token = ')}:" in result.stderr
    assert "[web] admin_token is gone" in result.stderr
    assert "[admin] admin_token" in result.stderr
    assert TOKEN not in result.stderr


def _start(directory: Path, origin: Origin, **options: str) -> Gateway:
    def write(proxy_port: int, web_port: int) -> Path:
        config = directory / "linewarden.toml"
        config.write_text(gateway_config(directory, origin.port, proxy_port=proxy_port,
                                         web_port=web_port, **options))  # type: ignore[arg-type]
        return config
    proc, proxy_port, web_port, config = launch_serve(directory, write)
    return Gateway(proc, proxy_port, web_port, directory, config)


def test_stale_socket_is_replaced_and_a_live_one_is_refused(tmp_path: Path,
                                                           origin: Origin) -> None:
    state = tmp_path / "a" / "state"
    state.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as crashed:
        crashed.bind(str(admin_socket(state)))  # bound, never unlinked: a crash's leftover
    os.chmod(admin_socket(state), 0o666)
    first = _start(tmp_path / "a", origin)
    try:
        mode = os.stat(first.admin_socket).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        assert first.admin("GET", "/admin/killswitch")["tripped"] is False
        # A second gateway on the same state_dir (other ports): refused, the first unharmed.
        second = tmp_path / "a" / "second.toml"
        second.write_text(gateway_config(tmp_path / "a", origin.port, proxy_port=free_port(),
                                         web_port=free_port()))
        result = _serve(second)
        assert result.returncode == 1
        assert "another linewarden serve is running on the admin socket" in result.stderr
        assert str(first.admin_socket) in result.stderr and "Traceback" not in result.stderr
        assert first.alive()
        assert first.admin("GET", "/admin/bindings")["count"] == 2
    finally:
        first.stop()
    assert not first.admin_socket.exists()  # a clean stop removes it


def test_a_non_socket_in_the_way_is_not_deleted(tmp_path: Path, origin: Origin) -> None:
    state = tmp_path / "state"
    state.mkdir()
    admin_socket(state).write_text("precious")
    config = tmp_path / "linewarden.toml"
    config.write_text(_config(tmp_path, origin))
    result = _serve(config)
    assert result.returncode == 1 and "exists and is not a socket" in result.stderr
    assert admin_socket(state).read_text() == "precious"


def _cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "http_proxy": "http://127.0.0.1:1", "HTTP_PROXY": "http://127.0.0.1:1"}
    return subprocess.run([str(LINEWARDEN), *args, "--config", str(gw.config_path)],
                          capture_output=True, text=True, timeout=30, env=env, check=False)


def _identity(gw: Gateway, origin: Origin, interface: str = "127.0.0.1") -> list[str]:
    m = marker()
    curl_ok(gw.proxy, f"http://partner.test/{m}", interface=interface)
    [rec] = origin.with_marker(m)
    return rec.values("X-Up-Calling-Line-Id")


def test_cli_drives_the_gateway_over_the_unix_socket(gateway_factory: Callable[..., Gateway],
                                                     origin: Origin) -> None:
    gw = gateway_factory("cli")
    assert stat.S_IMODE(os.stat(gw.admin_socket).st_mode) == 0o600
    # bindings list / show / drop
    done = _cli(gw, "bindings", "list")
    assert done.returncode == 0, done.stderr
    assert "127.0.0.1" in done.stdout and "*********123" in done.stdout
    assert MSISDN_1 not in done.stdout
    done = _cli(gw, "bindings", "show", "127.0.0.2", "--reveal", "--reason", "test")
    assert done.returncode == 0 and "447400900456" in done.stdout
    done = _cli(gw, "bindings", "drop", "127.0.0.2")
    assert done.returncode == 0 and "dropped the binding of 127.0.0.2" in done.stdout
    assert _identity(gw, origin, "127.0.0.2") == []
    assert _cli(gw, "bindings", "show", "127.0.0.2").returncode == 2
    # killswitch trip / status / clear
    done = _cli(gw, "killswitch", "trip", "--reason", "drill", "--by", "ops")
    assert done.returncode == 0 and "TRIPPED" in done.stdout, done.stderr
    assert "without the admin API" not in done.stdout  # the API took it
    assert _identity(gw, origin) == []
    done = _cli(gw, "killswitch", "status")
    assert done.returncode == 0 and "TRIPPED" in done.stdout and "drill" in done.stdout
    done = _cli(gw, "killswitch", "clear", "--reason", "drill over", "--by", "ops")
    assert done.returncode == 0 and "kill switch clear" in done.stdout
    assert _identity(gw, origin) == [MSISDN_1]
    # reload: a good file swaps, a bad one is refused with file:line, the old one stays
    text = gw.config_path.read_text()
    gw.config_path.write_text(text.replace('hosts = ["partner.test"]', 'hosts = ["other.test"]'))
    done = _cli(gw, "reload")
    assert done.returncode == 0 and re.search(r"policy reloaded: version \w+", done.stdout)
    assert _identity(gw, origin) == []
    gw.config_path.write_text(text.replace('hosts = ["partner.test"]', 'hosts = ["*"]'))
    done = _cli(gw, "reload")
    assert done.returncode == 1 and f"{gw.config_path}:" in done.stderr
    assert "Traceback" not in done.stderr
    gw.config_path.write_text(text)


def test_socket_is_removed_on_sigterm_and_replaced_after_sigkill(tmp_path: Path,
                                                                 origin: Origin) -> None:
    gw = _start(tmp_path / "k", origin)
    os.kill(gw.pid, signal.SIGKILL)
    gw.proc.wait()
    assert gw.admin_socket.exists()  # a crash leaves it behind ...
    again = _start(tmp_path / "k", origin)  # ... and the next start replaces it
    try:
        assert again.admin("GET", "/admin/killswitch")["tripped"] is False
    finally:
        stop_process(again.proc)
    assert not again.admin_socket.exists()


def test_the_socket_caller_is_known_by_its_uid(gateway_factory: Callable[..., Gateway]
                                               ) -> None:
    """SO_PEERCRED: a trip with no name says which local user asked (for access records)."""
    gw = gateway_factory("peer")
    state = gw.admin("POST", "/admin/killswitch/trip", {})
    assert state["tripped"] is True and state["by"] == f"admin API (uid:{os.getuid()})"
    gw.admin("POST", "/admin/killswitch/clear", {"reason": "drill over", "by": "ops"})


def test_a_busy_admin_port_is_one_sentence(tmp_path: Path, origin: Origin) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.3", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "linewarden.toml"
        config.write_text(_config(tmp_path, origin, admin_extra=f'listen = "127.0.0.3:{port}"\n'
                                                                f'admin_token = "{TOKEN}"'))
        result = _serve(config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.3:{port}" in result.stderr
    assert "[admin] listen" in result.stderr and "[Errno" not in result.stderr
