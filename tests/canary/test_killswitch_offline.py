"""`linewarden killswitch trip` always works (issue 15 item 8): when the admin API cannot be
reached it writes the shared state itself and says so.

* no gateway at all: the state file is written; a gateway started afterwards starts tripped;
* a running gateway whose admin socket was removed: it watches the state file and trips;
* the same with Redis, from a CLI on another state_dir (another host): only the shared
  store connects them, and the running instance trips through it;
* nothing writable: exit 1, and it says nothing was tripped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from canary_support import (
    IDENTITY_HEADER,
    PARTNER_HOST,
    SUBSCRIBER_MSISDN,
    gateway_config,
    start_gateway,
    start_redis,
    wait_for,
)

from lwtest import LINEWARDEN, free_port

HEADER = IDENTITY_HEADER.lower()


def _trip(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINEWARDEN), "killswitch", "trip", "--config", str(config),
                           "--by", "ops", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def test_trip_with_no_gateway_writes_the_state_and_the_next_start_is_tripped(
        tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    config = directory / "linewarden.toml"
    config.write_text(gateway_config(directory, free_port(), free_port()))
    done = _trip(config, "--reason", "incident 9 at 447400900123")
    assert done.returncode == 0, done.stderr
    assert "no admin socket at" in done.stderr  # why the API was not used
    state_file = directory / "state" / "killswitch.json"
    assert "kill switch TRIPPED without the admin API" in done.stdout
    assert f"wrote {state_file}" in done.stdout and "starts tripped" in done.stdout
    state = json.loads(state_file.read_text())
    assert state["tripped"] is True and state["by"] == "ops"
    assert SUBSCRIBER_MSISDN not in state_file.read_text()  # the reason is masked
    assert "[number]" in state["reason"]

    gw = start_gateway(directory)  # same state_dir
    try:
        assert "KILL SWITCH TRIPPED" in (directory / "stdout.log").read_text()
        assert HEADER not in gw.received(PARTNER_HOST)
        status = gw.admin("GET", "/admin/killswitch")
        assert status["tripped"] is True and "incident 9" in status["reason"]
        gw.admin("POST", "/admin/killswitch/clear", {"reason": "drill over", "by": "ops"})
        assert gw.received(PARTNER_HOST).get(HEADER) == SUBSCRIBER_MSISDN
    finally:
        gw.stop()


def test_running_gateway_without_its_socket_trips_through_the_state_file(
        tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw")
    try:
        assert gw.received(PARTNER_HOST).get(HEADER) == SUBSCRIBER_MSISDN
        os.unlink(gw.admin_socket)  # e.g. removed by a tmp cleaner
        started = time.monotonic()
        done = _trip(gw.config, "--reason", "socket gone")
        assert done.returncode == 0, done.stderr
        assert "wrote" in done.stdout and "trip within a second (they watch it)" in done.stdout
        waited = wait_for(lambda: HEADER not in gw.received(PARTNER_HOST), 5.0, step=0.02)
        print(f"\noffline trip via the state file: withheld {waited * 1000:.0f} ms after the "
              f"CLI exited ({(time.monotonic() - started) * 1000:.0f} ms incl. the CLI)")
        assert '"changed_on": "cli@' in gw.stderr() and '"action": "trip"' in gw.stderr()
    finally:
        gw.stop()


def test_running_gateway_trips_through_redis_from_a_cli_elsewhere(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis")
    gw = None
    try:
        gw = start_gateway(tmp_path / "gw", store_url=redis.url, instance="gw-a")
        assert gw.received(PARTNER_HOST).get(HEADER) == SUBSCRIBER_MSISDN
        os.unlink(gw.admin_socket)
        # The operator's copy of the config on another host: same Redis, its own state_dir,
        # so the gateway's state file is out of reach and only Redis carries the trip.
        elsewhere = tmp_path / "ops-laptop"
        elsewhere.mkdir()
        config = elsewhere / "linewarden.toml"
        config.write_text(gw.config.read_text().replace(str(tmp_path / "gw" / "state"),
                                                        str(elsewhere / "state")))
        assert str(tmp_path / "gw" / "state") not in config.read_text()
        started = time.monotonic()
        done = _trip(config, "--reason", "leak seen from outside")
        exited = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert "set and published Redis key linewarden:killswitch" in done.stdout
        waited = wait_for(lambda: HEADER not in gw.received(PARTNER_HOST), 5.0, step=0.005)
        print(f"\noffline trip via Redis: withheld {waited * 1000:.0f} ms after the CLI exited "
              f"({(exited - started) * 1000:.0f} ms CLI run)")
        # The gateway adopted it from Redis and persisted it itself (survives its restart).
        persisted = tmp_path / "gw" / "state" / "killswitch.json"
        assert json.loads(persisted.read_text())["reason"] == "leak seen from outside"
        log = gw.stderr()
        assert '"action": "trip"' in log and "leak seen from outside" in log
    finally:
        if gw is not None:
            gw.stop()
        redis.stop()


def test_trip_fails_only_when_nothing_could_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = tmp_path / "lw.toml"
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config.write_text(f'state_dir = "{blocker}/state"\n[store]\nurl = "{dead}"\n')
    done = _trip(config)
    assert done.returncode == 1
    assert "kill switch NOT tripped" in done.stderr and "Traceback" not in done.stderr
    assert "cannot write the kill switch to Redis" in done.stderr

    # The file alone is enough: exit 0, and the Redis failure is said.
    config.write_text(f'state_dir = "{tmp_path}/state"\n[store]\nurl = "{dead}"\n')
    done = _trip(config)
    assert done.returncode == 0, done.stderr
    assert "cannot write the kill switch to Redis" in done.stderr
    assert json.loads((tmp_path / "state" / "killswitch.json").read_text())["tripped"] is True
