"""The parts of secrets.py and filemodes.py on their own: fingerprints against a reference
written differently, the reference race on real SQLite and PostgreSQL, the ledger writer's
check at (re)connection, and `secrets import` refusing as a whole."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewarden import wiring
from linewarden.assertion import KeyRing, SigningKey
from linewarden.config import Config, load_config
from linewarden.filemodes import private_dir, warn_loose
from linewarden.ledger import ledger_from_config, open_store
from linewarden.secrets import (
    ImportRefused,
    SecretsDisagree,
    check_at_start,
    export_secrets,
    import_secrets,
    keyed_fingerprint,
    ring_fingerprint,
)

# ---------------------------------------------------------------- fingerprints


def _reference_fingerprint(name: str, secret: bytes) -> str:
    """HMAC-SHA256 built from the RFC 2104 definition, not from `hmac`."""
    block = 64
    key = hashlib.sha256(secret).digest() if len(secret) > block else secret
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key)
                           + f"linewarden secret fingerprint v1:{name}".encode()).digest()
    return hashlib.sha256(bytes(b ^ 0x5C for b in key) + inner).hexdigest()[:32]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["pseudonym secret", "ledger key", "pseudonym key v2"]),
       st.binary(min_size=1, max_size=100), st.binary(min_size=1, max_size=100))
def test_keyed_fingerprint_is_the_truncated_hmac_and_tells_secrets_apart(
        name: str, secret: bytes, other: bytes) -> None:
    fingerprint = keyed_fingerprint(name, secret)
    assert fingerprint == _reference_fingerprint(name, secret)
    assert len(fingerprint) == 32
    assert (fingerprint == keyed_fingerprint(name, other)) == (secret == other)
    # The same secret under another name has another fingerprint: one leaked reference
    # says nothing about another secret's.
    assert keyed_fingerprint("ledger key" if name != "ledger key" else "pseudonym secret",
                             secret) != fingerprint
    if len(secret) >= 8:
        assert secret.hex() not in fingerprint
        assert base64.urlsafe_b64encode(secret).decode()[:8] not in fingerprint


def _key(kid: str, created: float, retired: float | None) -> SigningKey:
    return SigningKey(kid=kid, algorithm="ES256", public_jwk={"kid": kid}, created=created,
                      retired=retired)


@given(st.lists(st.text(alphabet="abcdefXYZ0123-_", min_size=4, max_size=12), min_size=1,
                max_size=5, unique=True), st.randoms())
def test_ring_fingerprint_depends_on_the_keys_and_states_not_their_order(
        kids: list[str], rnd: object) -> None:
    keys = [_key(k, float(i), None if i == 0 else float(i)) for i, k in enumerate(kids)]
    shuffled = list(keys)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert ring_fingerprint(KeyRing(tuple(keys))) == ring_fingerprint(KeyRing(tuple(shuffled)))
    expected = hashlib.sha256(("linewarden secret fingerprint v1:signing keys\n" + "\n".join(
        sorted(f"{k.kid} {'retired' if k.retired else 'active'}" for k in keys))
    ).encode()).hexdigest()[:32]
    assert ring_fingerprint(KeyRing(tuple(keys))) == expected
    assert ring_fingerprint(KeyRing(tuple(keys[1:]))) != expected  # a key less: differs


# ---------------------------------------------------------------- the reference race

def _race(url: str, base: Path, contenders: int = 8) -> set[str]:
    """`contenders` threads, each with its own connection, register a different
    fingerprint for one name at once; the references they read back."""
    barrier = threading.Barrier(contenders)
    seen: list[str] = []
    lock = threading.Lock()

    def contend(i: int) -> None:
        store = open_store(url, base=base).open()
        try:
            barrier.wait()
            ref = store.register_fingerprint("ledger key", f"fp-{i}", f"gw-{i}")
            with lock:
                seen.append(f"{ref.fingerprint}/{ref.instance_id}")
        finally:
            store.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == contenders
    return set(seen)


def test_racing_first_registrations_on_sqlite_agree_on_one_reference(tmp_path: Path) -> None:
    (winner,) = _race("sqlite:///race.db", tmp_path)
    fingerprint, instance = winner.split("/")
    assert fingerprint.removeprefix("fp-") == instance.removeprefix("gw-")


def test_racing_first_registrations_on_postgresql_agree_on_one_reference(
        postgres, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = postgres.create_database("race")
    (winner,) = _race(url, tmp_path)
    fingerprint, instance = winner.split("/")
    assert fingerprint.removeprefix("fp-") == instance.removeprefix("gw-")
    # replace= moves it on (what `keys rotate` and `secrets set-reference` do).
    store = open_store(url).open()
    try:
        moved = store.register_fingerprint("ledger key", "fp-new", "gw-x", replace=True)
        assert (moved.fingerprint, moved.instance_id) == ("fp-new", "gw-x")
        assert store.fingerprint_references()["ledger key"].fingerprint == "fp-new"
    finally:
        store.close()


# ---------------------------------------------------------------- configs on one ledger

def _config(directory: Path, instance: str, ledger: Path, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "linewarden.toml"
    path.write_text(f"""
state_dir = "state"
[proxy]
instance_id = "{instance}"
[ledger]
url = "sqlite:///{ledger}"
{extra}
""")
    return path


def _generated(path: Path) -> Config:
    """The config with its secrets generated, as `serve` does at start-up."""
    config = load_config(str(path))
    wiring.generate_secrets(config)
    return config


def test_the_ledger_writer_refuses_a_disagreeing_instance_at_connection(
        tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    check_at_start(_generated(_config(tmp_path / "a", "gw-a", ledger)))
    b = _generated(_config(tmp_path / "b", "gw-b", ledger))
    # As if B started while the ledger was unreachable: only its writer can check.
    writer = ledger_from_config(b, wiring.settings(b).secrets)

    async def start() -> None:
        await writer.start()

    with pytest.raises(SecretsDisagree) as refused:
        asyncio.run(start())
    assert "pseudonym secret: differs from the one instance 'gw-a'" in str(refused.value)
    # Nothing of B's was registered.
    store = open_store(f"sqlite:///{ledger}").open()
    try:
        assert {r.instance_id for r in store.fingerprint_references().values()} == {"gw-a"}
    finally:
        store.close()


def test_a_refusal_by_one_store_registers_nothing_in_another(tmp_path: Path) -> None:
    """B's own ledger must not learn B's (wrong) secrets when the shared one refuses them:
    otherwise B's own ledger would refuse the imported ones next."""
    shared = tmp_path / "shared.db"
    check_at_start(_generated(_config(tmp_path / "a", "gw-a", shared)))
    b = _generated(_config(tmp_path / "b", "gw-b", shared))
    with pytest.raises(SecretsDisagree):
        check_at_start(b)
    store = open_store(f"sqlite:///{shared}").open()
    try:
        refs = store.fingerprint_references()
    finally:
        store.close()
    assert {r.instance_id for r in refs.values()} == {"gw-a"} and len(refs) == 3


def test_import_is_all_or_nothing_and_names_every_refusal(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.db"
    a = _generated(_config(tmp_path / "a", "gw-a", ledger))
    export = tmp_path / "export"
    export_secrets(a, export)
    # B holds its own generated secrets and sets the pseudonym secret inline.
    b_path = _config(tmp_path / "b", "gw-b", ledger,
                     '[identity]\npseudonym_secret = "inline-in-b"')
    b = load_config(str(b_path))
    wiring.generate_secrets(b)
    before = {p: p.read_bytes() for p in (tmp_path / "b" / "state").rglob("*") if p.is_file()}
    with pytest.raises(ImportRefused) as refused:
        import_secrets(b, export)
    message = str(refused.value)
    assert "pseudonym secret: this config sets it inline ([identity] pseudonym_secret in" \
           in message
    assert "ledger key:" in message and "signing keys:" in message
    after = {p: p.read_bytes() for p in (tmp_path / "b" / "state").rglob("*") if p.is_file()}
    assert after == before  # nothing installed
    with pytest.raises(ImportRefused, match="inline"):
        import_secrets(b, export, force=True)  # --force never overrides the config file


def test_import_refuses_an_edited_export(tmp_path: Path) -> None:
    a = _generated(_config(tmp_path / "a", "gw-a", tmp_path / "l.db"))
    export = tmp_path / "export"
    export_secrets(a, export)
    (export / "ledger.key").write_text("edited\n")
    b = load_config(str(_config(tmp_path / "b", "gw-b", tmp_path / "l.db")))
    with pytest.raises(ImportRefused, match="does not match the fingerprint"):
        import_secrets(b, export)
    assert not (tmp_path / "b" / "state" / "ledger.key").exists()


def test_export_refuses_a_directory_others_can_read(tmp_path: Path) -> None:
    a = _generated(_config(tmp_path / "a", "gw-a", tmp_path / "l.db"))
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    with pytest.raises(ValueError, match="chmod 700"):
        export_secrets(a, loose)
    assert list(loose.iterdir()) == []
    exported = export_secrets(a, tmp_path / "fresh")
    manifest = json.loads((tmp_path / "fresh" / "manifest.json").read_text())
    assert manifest["fingerprints"] == exported.fingerprints
    assert manifest["instance_id"] == "gw-a"
    ledger_key = (tmp_path / "a" / "state" / "ledger.key").read_bytes().strip()
    assert ledger_key.decode() not in json.dumps(manifest)
    assert manifest["fingerprints"]["ledger key"] == hmac.new(
        ledger_key, b"linewarden secret fingerprint v1:ledger key", "sha256").hexdigest()[:32]


# ---------------------------------------------------------------- filemodes

def test_private_dir_makes_every_missing_parent_0700(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        leaf = private_dir(tmp_path / "x" / "y" / "z")
    finally:
        os.umask(old)
    for path in (tmp_path / "x", tmp_path / "x" / "y", leaf):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_warn_loose_names_the_file_and_the_fix_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    path.write_text("k")
    os.chmod(path, 0o604)
    private = tmp_path / "fine"
    private.write_text("k")
    os.chmod(private, 0o600)
    assert warn_loose([path, private, path, tmp_path / "absent"]) == [
        f"{path} is mode 0604: readable by others than its owner; fix: chmod 600 {path}"]


def test_serve_names_a_missing_secret_file_in_one_line(tmp_path: Path) -> None:
    import subprocess

    from lwtest import LINEWARDEN

    config = _config(tmp_path, "gw", tmp_path / "l.db",
                     '[identity]\npseudonym_secret_file = "absent.key"')
    result = subprocess.run([str(LINEWARDEN), "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"linewarden: cannot start: {config}: secret file "
                             f"'{tmp_path / 'absent.key'}' not found (fix: create it or "
                             "remove the *_file setting)\n")


def test_start_up_checks_the_operators_secret_files_too(tmp_path: Path) -> None:
    from linewarden.secrets import state_paths

    (tmp_path / "radius.secret").write_text("s3cret-for-tests")
    os.chmod(tmp_path / "radius.secret", 0o644)
    (tmp_path / "nas2.secret").write_text("other")
    os.chmod(tmp_path / "nas2.secret", 0o600)
    config = load_config(str(_config(tmp_path, "gw", tmp_path / "l.db", """
[radius]
secret_file = "radius.secret"
[[radius.clients]]
address = "10.0.0.2"
secret_file = "nas2.secret"
""")))
    warnings = warn_loose(state_paths(config))
    assert warnings == [f"{tmp_path / 'radius.secret'} is mode 0644: readable by others than "
                        f"its owner; fix: chmod 600 {tmp_path / 'radius.secret'}"]
