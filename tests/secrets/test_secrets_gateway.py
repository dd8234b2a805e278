"""Instances that share a ledger or a store agree on their secrets, or do not start
(issue 15 item 4, PRODUCT.md invariant 7) — through real `linewarden serve` processes.

Every instance here starts with *generated* secrets (nothing inline), which is the case the
issue found: two instances on one ledger gave one subscriber two pseudonyms at one partner
and `audit subscriber` from either config saw only its own instance's rows.
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from lwtest import LINEWARDEN, MSISDN_1, Origin, free_port, launch_serve, stop_process

START_REFUSAL_TIMEOUT = 60.0
PSEUDONYM_HEADER = "x-subscriber-pseudonym"


def write_config(directory: Path, instance: str, ledger_url: str, origin_port: int,
                 proxy_port: int, web_port: int, store_url: str = "memory://") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "linewarden.toml"
    path.write_text(f"""
state_dir = "state"

[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "{instance}"

[proxy.resolve]
"pseudo.test" = "127.0.0.1:{origin_port}"
"a.pseudo.test" = "127.0.0.1:{origin_port}"

[[bindings]]
ip = "127.0.0.1"
msisdn = "{MSISDN_1}"

[ledger]
url = "{ledger_url}"

[store]
url = "{store_url}"

[web]
listen = "127.0.0.1:{web_port}"

[[partners]]
id = "age-partner"
purpose = "age_verification"
hosts = ["pseudo.test", "*.pseudo.test"]
[partners.headers]
X-Subscriber-Pseudonym = "pseudonym"
""")
    return path


class Instance:
    """One gateway's directory and config; started and stopped by the test."""

    def __init__(self, directory: Path, name: str, ledger_url: str, origin: Origin,
                 store_url: str = "memory://") -> None:
        self.directory, self.name = directory, name
        self.ledger_url, self.store_url, self.origin = ledger_url, store_url, origin
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy_port = 0
        self.config = write_config(directory, name, ledger_url, origin.port, 0, 0, store_url)

    def _write(self, proxy_port: int, web_port: int) -> Path:
        return write_config(self.directory, self.name, self.ledger_url, self.origin.port,
                            proxy_port, web_port, self.store_url)

    def start(self) -> Instance:
        self.proc, self.proxy_port, _web, self.config = launch_serve(self.directory,
                                                                     self._write)
        return self

    def refused(self) -> str:
        """Run `serve`, which must exit non-zero on its own; its stderr."""
        result = subprocess.run([str(LINEWARDEN), "serve", "--config", str(self.config)],
                                capture_output=True, cwd=self.directory,
                                timeout=START_REFUSAL_TIMEOUT)
        assert result.returncode != 0, result.stdout.decode()
        assert b"proxy    http" not in result.stdout  # it never listened
        return result.stderr.decode()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(LINEWARDEN), *args, "--config", str(self.config)],
                              capture_output=True, text=True, cwd=self.directory, timeout=60)

    def pseudonym(self, host: str, marker: str) -> str:
        """GET through this instance's proxy from the bound subscriber's address; the
        pseudonym header as the origin received it."""
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy_port, timeout=10,
                                          source_address=("127.0.0.1", 0))
        try:
            conn.request("GET", f"http://{host}/{marker}", headers={"Host": host})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        finally:
            conn.close()
        # Usually one request; two when a stale pooled connection was retried (an idempotent
        # GET may be, RFC 9112 §9.3.1): each copy must carry the same single pseudonym.
        received = self.origin.with_marker(f"/{marker} ")
        assert received
        values = {tuple(r.values(PSEUDONYM_HEADER)) for r in received}
        assert len(values) == 1 and len(next(iter(values))) == 1, [r.raw for r in received]
        return next(iter(values))[0]


@pytest.fixture
def instances(tmp_path: Path, origin: Origin):  # type: ignore[no-untyped-def]
    started: list[Instance] = []

    def make(name: str, ledger_url: str, store_url: str = "memory://") -> Instance:
        inst = Instance(tmp_path / name, name, ledger_url, origin, store_url)
        started.append(inst)
        return inst

    yield make
    for inst in started:
        inst.stop()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_one_sqlite_ledger_second_instance_refuses_until_it_imports_the_secrets(
        tmp_path: Path, instances) -> None:  # type: ignore[no-untyped-def]
    ledger = f"sqlite:///{tmp_path / 'shared' / 'ledger.db'}"
    a = instances("gw-a", ledger).start()
    b = instances("gw-b", ledger)

    stderr = b.refused()
    for name in ("pseudonym secret", "ledger key", "signing keys"):
        assert f"{name}: differs from the one instance 'gw-a' registered" in stderr, stderr
    assert f"{b.directory / 'state' / 'pseudonym.key'} (generated)" in stderr
    assert f"{b.directory / 'state' / 'ledger.key'} (generated)" in stderr
    assert "linewarden secrets export DIR" in stderr and "linewarden secrets import" in stderr
    assert "[identity] pseudonym_secret_file" in stderr
    assert MSISDN_1 not in stderr

    export = tmp_path / "export"
    done = a.cli("secrets", "export", str(export))
    assert done.returncode == 0, done.stderr
    assert _mode(export) == 0o700 and _mode(export / "signing") == 0o700
    files = [p for p in export.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"pseudonym.key", "ledger.key", "keyring.json",
                                       "manifest.json", "README.txt"}
    assert all(_mode(p) == 0o600 for p in files), [(p, oct(_mode(p))) for p in files]

    # B generated its own secrets when it tried to start: import will not silently
    # replace them, and says what replacing the ledger key means.
    refused = b.cli("secrets", "import", str(export))
    assert refused.returncode == 1
    assert "nothing imported" in refused.stderr and "audit subscriber" in refused.stderr
    assert "--force" in refused.stderr
    before = (b.directory / "state" / "ledger.key").read_bytes()
    assert before != (export / "ledger.key").read_bytes().strip()

    forced = b.cli("secrets", "import", str(export), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "no longer found by `linewarden audit subscriber`" in forced.stdout
    assert (b.directory / "state" / "ledger.key").read_bytes().strip() == \
        (export / "ledger.key").read_bytes().strip()
    kept = list((b.directory / "state").glob("ledger.key.replaced-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == before and _mode(kept[0]) == 0o600

    b.start()
    # One subscriber, one partner, two instances: one pseudonym.
    via_a = a.pseudonym("pseudo.test", "via-a")
    via_b = b.pseudonym("a.pseudo.test", "via-b")
    assert via_a == via_b
    # And either config's audit finds both instances' disclosures.
    for inst in (a, b):
        result = inst.cli("audit", "subscriber", MSISDN_1, "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert sorted(e["host"] for e in report["entries"]) == ["a.pseudo.test",
                                                                "pseudo.test"]
        assert report["total"] == 2
    status = b.cli("secrets", "status")
    assert status.returncode == 0 and status.stdout.count("agrees (reference: 'gw-a')") == 3

    # A restart with the same secrets registers again without complaint.
    a.stop()
    a.start()
    assert a.pseudonym("pseudo.test", "via-a-again") == via_a


def test_keys_rotate_then_import_on_the_other_instance(
        tmp_path: Path, instances) -> None:  # type: ignore[no-untyped-def]
    ledger = f"sqlite:///{tmp_path / 'shared.db'}"
    a = instances("gw-a", ledger).start()
    b = instances("gw-b", ledger)
    export = tmp_path / "export-1"
    assert a.cli("secrets", "export", str(export)).returncode == 0
    first = b.cli("secrets", "import", str(export))  # before B's first start: no --force
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": install (") == 3
    b.start()

    rotated = a.cli("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "reference in the ledger" in rotated.stdout and "signing keys" in rotated.stdout
    b.stop()
    stderr = b.refused()  # B still holds the ring from before the rotation
    assert "signing keys: differs" in stderr and "pseudonym secret" not in stderr

    export2 = tmp_path / "export-2"
    assert a.cli("secrets", "export", str(export2)).returncode == 0
    update = b.cli("secrets", "import", str(export2))  # a rotation of its ring: no --force
    assert update.returncode == 0, update.stderr
    assert "signing keys: update" in update.stdout
    assert "pseudonym secret: unchanged" in update.stdout
    b.start()
    a.stop()
    a.start()  # A's restart after its own rotation
    ring_a = json.loads((a.directory / "state" / "signing" / "keyring.json").read_text())
    ring_b = json.loads((b.directory / "state" / "signing" / "keyring.json").read_text())
    assert ring_a == ring_b and len(ring_a["keys"]) == 2


def test_two_instances_starting_at_once_on_an_empty_ledger_one_reference(
        tmp_path: Path, instances) -> None:  # type: ignore[no-untyped-def]
    ledger = f"sqlite:///{tmp_path / 'race.db'}"
    a, b = instances("gw-a", ledger), instances("gw-b", ledger)
    # Both generate their secrets first, so the race is only over the reference.
    for inst in (a, b):
        assert inst.cli("secrets", "status").returncode == 0
    procs = {}
    for inst in (a, b):  # started together: both reach the registration within ms
        inst.config = inst._write(free_port(), free_port())
        with (inst.directory / "out.log").open("wb") as out, \
                (inst.directory / "err.log").open("wb") as err:
            procs[inst.name] = (inst, subprocess.Popen(
                [str(LINEWARDEN), "serve", "--config", str(inst.config)], stdout=out,
                stderr=err, cwd=inst.directory))
    try:
        deadline = time.monotonic() + START_REFUSAL_TIMEOUT
        while time.monotonic() < deadline:
            exited = [n for n, (_i, p) in procs.items() if p.poll() is not None]
            started = [n for n, (i, _p) in procs.items()
                       if b"  proxy" in (i.directory / "out.log").read_bytes()]
            if exited and started:
                break
            time.sleep(0.05)
        assert len(exited) == 1 and len(started) == 1 and exited != started, \
            {n: (i.directory / "err.log").read_text()[-500:] for n, (i, _p) in procs.items()}
        loser, proc = procs[exited[0]]
        assert proc.returncode == 1
        assert "pseudonym secret: differs" in (loser.directory / "err.log").read_text()
    finally:
        for _inst, proc in procs.values():
            stop_process(proc)


def test_one_postgresql_ledger_second_instance_refuses(
        postgres, instances) -> None:  # type: ignore[no-untyped-def]
    url = postgres.create_database("secrets")
    a = instances("gw-a", url).start()
    b = instances("gw-b", url)
    stderr = b.refused()
    assert "ledger key: differs from the one instance 'gw-a' registered in the ledger " \
           "postgresql://" in stderr
    assert "pseudonym secret: differs" in stderr and "signing keys: differs" in stderr
    export = b.directory.parent / "export"
    assert a.cli("secrets", "export", str(export)).returncode == 0
    assert b.cli("secrets", "import", str(export), "--force").returncode == 0
    b.start()
    assert a.pseudonym("pseudo.test", "pg-a") == b.pseudonym("pseudo.test", "pg-b")


def test_one_redis_store_second_instance_refuses(
        tmp_path: Path, redis, instances) -> None:  # type: ignore[no-untyped-def]
    # Separate ledgers, one Redis: the bindings are shared, so the secrets must be too.
    a = instances("gw-a", f"sqlite:///{tmp_path / 'a.db'}", redis.url).start()
    b = instances("gw-b", f"sqlite:///{tmp_path / 'b.db'}", redis.url)
    stderr = b.refused()
    assert f"registered in the store {redis.url} (prefix 'linewarden:')" in stderr
    assert "pseudonym secret: differs" in stderr
    export = tmp_path / "export"
    assert a.cli("secrets", "export", str(export)).returncode == 0
    assert b.cli("secrets", "import", str(export), "--force").returncode == 0
    b.start()
    assert a.pseudonym("pseudo.test", "redis-a") == b.pseudonym("pseudo.test", "redis-b")


# ---------------------------------------------------------------- file modes (item 5)

def _serve_under(inst: Instance, umask: int) -> subprocess.Popen[bytes]:
    """`linewarden serve` run with `umask`, until its banner."""
    inst.proxy_port = free_port()
    inst.config = inst._write(inst.proxy_port, free_port())
    proc = subprocess.Popen([str(LINEWARDEN), "serve", "--config", str(inst.config)],
                            cwd=inst.directory, umask=umask, stdout=subprocess.PIPE,
                            stderr=open(inst.directory / "stderr.log", "wb"))  # noqa: SIM115
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b"  proxy"):
            return proc
    stop_process(proc)
    raise AssertionError((inst.directory / "stderr.log").read_text())


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_files_are_private_after_serve_and_export_whatever_the_umask(
        tmp_path: Path, origin: Origin, umask: int) -> None:
    inst = Instance(tmp_path / "gw", "gw", "sqlite:///state/ledger.db", origin)
    state = inst.directory / "state"
    proc = _serve_under(inst, umask)
    try:
        inst.pseudonym("pseudo.test", f"modes-{umask}")  # a disclosure: the WAL is written
        private = [state / "ledger.db", state / "ledger.db-wal", state / "ledger.db-shm",
                   state / "pseudonym.key", state / "ledger.key", state / "ledger-signing.pem",
                   state / "signing" / "keyring.json", *(state / "signing").glob("*.pem")]
        assert len(private) == 8
        for path in private:
            assert _mode(path) == 0o600, (path, oct(_mode(path)))
        assert _mode(state) == 0o700 and _mode(state / "signing") == 0o700
    finally:
        stop_process(proc)

    export = tmp_path / "new" / "export"
    done = subprocess.run([str(LINEWARDEN), "secrets", "export", str(export), "--config",
                           str(inst.config)], cwd=inst.directory, umask=umask,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    exported = [export, *export.rglob("*")]
    assert len(exported) == 8  # the dir, 4 files, signing/ with its ring and key
    for path in exported:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), (path, oct(_mode(path)))

    # The kill switch's state file, written by a process with that umask.
    script = ("import asyncio, sys; from pathlib import Path; "
              "from linewarden.killswitch import KillSwitch; "
              "asyncio.run(KillSwitch(Path(sys.argv[1])).trip('drill', by='test'))")
    switch_dir = tmp_path / "switch" / "state"
    subprocess.run([str(LINEWARDEN.parent / "python"), "-c", script, str(switch_dir)],
                   umask=umask, check=True, timeout=60)
    assert _mode(switch_dir) == 0o700
    assert _mode(switch_dir / "killswitch.json") == 0o600


def test_loose_existing_files_are_reported_once_not_changed(
        tmp_path: Path, origin: Origin) -> None:
    inst = Instance(tmp_path / "gw", "gw", "sqlite:///state/ledger.db", origin)
    state = inst.directory / "state"
    stop_process(_serve_under(inst, 0o022))
    os.chmod(state / "pseudonym.key", 0o644)
    os.chmod(state / "ledger.db", 0o640)
    os.chmod(state, 0o755)
    stop_process(_serve_under(inst, 0o022))
    log = (inst.directory / "stderr.log").read_text()
    for path, mode, fix in ((state / "pseudonym.key", "0644", "600"),
                            (state / "ledger.db", "0640", "600"), (state, "0755", "700")):
        line = f"{path} is mode {mode}: readable by others than its owner; fix: chmod {fix} {path}"
        assert log.count(line) == 1, log
    # The operator's files keep the modes the operator gave them.
    assert _mode(state / "pseudonym.key") == 0o644 and _mode(state) == 0o755
    assert "ledger.key is mode" not in log
