"""The secrets every instance sharing a store must agree on (or one instance would
disclose, or record, what another would not).

Three secrets shape what partners receive or what the ledger can answer:
  * the pseudonym secret (and any versioned pseudonym keys): two instances with different
    ones give one subscriber two pseudonyms at the same partner;
  * the ledger key: ledger rows carry HMAC(ledger key, number), so `audit subscriber` run
    with one key finds none of the rows written under another, and says nothing about it;
  * the signing keys: partners verify assertions against the published JWKS, which each
    instance serves from its own key ring.

At start-up each instance registers a fingerprint of each secret in every shared store it
is configured with: the ledger always (a PostgreSQL database or one SQLite file shared by
several instances; a per-instance SQLite file simply holds that instance's own reference)
and Redis when `[store] url` is redis://. The first registration is the reference
(insert-if-absent on a primary key, or SET NX, then read back), so of two instances
starting at once on an empty ledger exactly one becomes the reference. An instance whose
fingerprint differs does not start, and says which secret, where it got it and the fix.
The ledger writer checks again at every (re)connection, so an instance that started while
the ledger was unreachable still cannot record a disclosure under a disagreeing secret.

A fingerprint reveals nothing about its secret: HMAC(secret, label) truncated to 128 bits
for the symmetric secrets; for the signing keys, a hash of the ring's key ids (RFC 7638
thumbprints of public keys that the JWKS publishes anyway).

Rotation is explicit: `keys rotate` makes the new ring the reference (replace) and the
other instances then `secrets import` it; `secrets set-reference` does the same for any
secret an operator changed on purpose. See docs/operations.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .assertion import KeyRing, Signer
from .config import LEDGER_KEY, PSEUDONYM_SECRET, Config
from .fileerrors import ConfigError
from .filemodes import create_private, loose, private_dir, replace_private, warn_loose
from .keys import KeyDirectory, KeyDirectoryError, issuer, key_dir
from .ledger import SIGNING_KEY_NAME, open_store, redact_url
from .ledger.migrations import SchemaError
from .ledger.store import Reference, Store

if TYPE_CHECKING:
    from .claims import Secrets

log = logging.getLogger("linewarden.secrets")

SIGNING_KEYS = "signing keys"
FINGERPRINT_LABEL = "linewarden secret fingerprint v1:"
# 128 bits: no two different secrets share a fingerprint by chance, and the truncated
# HMAC reveals nothing a guesser could test offline faster than the secret itself.
FINGERPRINT_BYTES = 16
# One Redis command at start-up (a healthy local Redis answers in well under 1 ms).
REDIS_TIMEOUT_S = 2.0
EXPORT_FORMAT = "linewarden-secrets/1"
MANIFEST = "manifest.json"

# What a secret that differs does, in the words a refusal or an import uses.
_CONSEQUENCE = {
    PSEUDONYM_SECRET: "partners would get a different pseudonym for the same subscriber "
                      "from each instance",
    LEDGER_KEY: "ledger rows recorded under another key are not found by "
                "`linewarden audit subscriber`",
    SIGNING_KEYS: "assertions signed here would not verify against the other instances' "
                  "published keys (JWKS)",
}
# The config setting that makes two instances read the same secret.
_SHARED_SETTING = {
    PSEUDONYM_SECRET: "[identity] pseudonym_secret_file",
    LEDGER_KEY: "[ledger] key_file",
    SIGNING_KEYS: "[signing] key_dir",
}
_EXPORT_FILE = {PSEUDONYM_SECRET: "pseudonym.key", LEDGER_KEY: "ledger.key"}
_SIGNING_DIR = "signing"


# ---------------------------------------------------------------- fingerprints

def keyed_fingerprint(name: str, secret: bytes) -> str:
    return hmac.digest(secret, (FINGERPRINT_LABEL + name).encode(), "sha256")[
        :FINGERPRINT_BYTES].hex()


def ring_fingerprint(ring: KeyRing) -> str:
    """Every key in the ring (active and retired) by its thumbprint: two instances agree
    when they sign with the same key and publish the same set."""
    lines = sorted(f"{k.kid} {'active' if k.retired is None else 'retired'}"
                   for k in ring.keys)
    text = FINGERPRINT_LABEL + SIGNING_KEYS + "\n" + "\n".join(lines)
    return hashlib.sha256(text.encode()).digest()[:FINGERPRINT_BYTES].hex()


@dataclass(frozen=True)
class Local:
    """One secret as this instance holds it."""

    name: str
    fingerprint: str
    source: str  # where this instance got it, for messages
    shared_setting: str  # the config setting that points two instances at one copy


def read_secrets(config: Config) -> Secrets:
    """The secrets this config names, read from where they live (nothing is created:
    `wiring.generate_secrets` does that at start-up)."""
    from .claims import Secrets

    ident = config.model.identity
    known = {1, *ident.pseudonym_keys}
    for partner_id, version in ident.partner_key_versions.items():
        if version not in known:
            raise ConfigError(config.path, None, f"[identity] partner_key_versions: "
                              f"'{partner_id}' is pinned to unknown pseudonym key "
                              f"version {version}", "add it to pseudonym_keys")
    section = config.model.signing
    try:
        ring = KeyDirectory(key_dir(config)).load()
    except KeyDirectoryError as exc:
        raise ConfigError(config.path, None, f"[signing] {exc}",
                          "fix the key directory or run 'linewarden keys list'") from None
    return Secrets(
        pseudonym_secret=config.pseudonym_secret(),
        ledger_key=config.ledger_key(),
        operator=ident.operator,
        pseudonym_keys={v: k.encode() for v, k in ident.pseudonym_keys.items()},
        partner_key_versions=dict(ident.partner_key_versions),
        signer=Signer(issuer(config), ring, section.ttl),
    )


def local_fingerprints(config: Config, secrets: Secrets) -> list[Local]:
    """The fingerprints of the secrets this process runs with (the signing ring is read
    live from the signer, which follows `keys rotate`)."""
    sources = config.secret_sources()
    out = [Local(name, keyed_fingerprint(name, secret), sources[name].description,
                 _SHARED_SETTING[name])
           for name, secret in ((PSEUDONYM_SECRET, secrets.pseudonym_secret),
                                (LEDGER_KEY, secrets.ledger_key))]
    for version, key in sorted(secrets.pseudonym_keys.items()):
        name = f"pseudonym key v{version}"
        out.append(Local(name, keyed_fingerprint(name, key),
                         f"[identity] pseudonym_keys.{version} in {config.path}",
                         f"[identity] pseudonym_keys.{version}"))
    if secrets.signer is not None:
        out.append(Local(SIGNING_KEYS, ring_fingerprint(secrets.signer.ring),
                         f"{key_dir(config)}", _SHARED_SETTING[SIGNING_KEYS]))
    return out


# ---------------------------------------------------------------- where references live

class Registry(Protocol):
    where: str  # "the ledger sqlite:///..." for messages

    def register(self, name: str, fingerprint: str, instance_id: str, *,
                 replace: bool = False) -> Reference: ...

    def references(self) -> dict[str, Reference]: ...

    def close(self) -> None: ...


class LedgerRegistry:
    """The `secret_fingerprints` table of the ledger (ledger/migrations.py v3)."""

    def __init__(self, store: Store, where: str) -> None:
        self.store, self.where = store, where

    def register(self, name: str, fingerprint: str, instance_id: str, *,
                 replace: bool = False) -> Reference:
        return self.store.register_fingerprint(name, fingerprint, instance_id,
                                               replace=replace)

    def references(self) -> dict[str, Reference]:
        return self.store.fingerprint_references()

    def close(self) -> None:
        self.store.close()


class RedisRegistry:
    """`{prefix}secret:<name>` keys beside the bindings; SET NX makes the first one stay."""

    def __init__(self, url: str, prefix: str, where: str) -> None:
        import redis

        self.where, self.prefix = where, prefix
        self.client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                           socket_connect_timeout=REDIS_TIMEOUT_S)

    def _key(self, name: str) -> str:
        return f"{self.prefix}secret:{name.replace(' ', '-')}"

    def register(self, name: str, fingerprint: str, instance_id: str, *,
                 replace: bool = False) -> Reference:
        value = json.dumps({"name": name, "fingerprint": fingerprint,
                            "instance_id": instance_id,
                            "registered_us": int(time.time() * 1_000_000)})
        self.client.set(self._key(name), value, nx=not replace)
        raw = self.client.get(self._key(name))
        if raw is None:  # deleted between SET and GET (a FLUSHALL): ours is as good
            return self.register(name, fingerprint, instance_id, replace=replace)
        return _reference(raw)

    def references(self) -> dict[str, Reference]:
        out = {}
        for key in self.client.scan_iter(match=f"{self.prefix}secret:*"):
            raw = self.client.get(key)
            if raw is not None:
                out[str(json.loads(raw)["name"])] = _reference(raw)
        return out

    def close(self) -> None:
        self.client.close()


def _reference(raw: Any) -> Reference:
    doc = json.loads(raw)
    return Reference(str(doc["fingerprint"]), str(doc["instance_id"]),
                     int(doc["registered_us"]))


Opener = tuple[str, Callable[[], Registry]]


def registries(config: Config) -> list[Opener]:
    """Every store this config shares with other instances, as (where, open)."""
    url = config.ledger.url
    ledger_where = f"the ledger {redact_url(url)}"
    out: list[Opener] = [(ledger_where, lambda: LedgerRegistry(
        open_store(url, base=config.base).open(), ledger_where))]
    store = config.model.store
    if store.url.startswith(("redis://", "rediss://")):
        store_where = f"the store {redact_url(store.url)} (prefix '{store.prefix}')"
        out.append((store_where, lambda: RedisRegistry(store.url, store.prefix, store_where)))
    return out


# ---------------------------------------------------------------- agreeing

@dataclass(frozen=True)
class Disagreement:
    local: Local
    where: str
    reference: Reference


class SecretsDisagree(SchemaError, ValueError):
    """This instance's secrets differ from the reference in a shared store: it must not
    run (a SchemaError, so the ledger writer refuses too; a ValueError, so `serve` exits 1
    with the message)."""

    def __init__(self, config: Config, problems: Sequence[Disagreement]) -> None:
        self.problems = tuple(problems)
        super().__init__(refusal(config, problems))


def refusal(config: Config, problems: Sequence[Disagreement]) -> str:
    instance = config.proxy.instance_id
    config_arg = "" if config.path.startswith("<") else f" --config {config.path}"
    lines = [f"this instance ('{instance}') does not hold the same secrets as the "
             "instances it shares a store with:"]
    for p in problems:
        ref = p.reference
        lines += [
            f"  {p.local.name}: differs from the one instance '{ref.instance_id}' registered "
            f"in {p.where} on {_when(ref.registered_us)}; {_CONSEQUENCE.get(p.local.name, '')}"
            .rstrip("; "),
            f"    this instance's {p.local.name}: {p.local.source}"]
    first = problems[0].reference.instance_id
    settings = ", ".join(sorted({p.local.shared_setting for p in problems}))
    lines.append(f"  fix: on '{first}' run `linewarden secrets export DIR`, copy DIR here "
                 f"and run `linewarden secrets import DIR{config_arg}`, then start again; "
                 f"or point both configs at the same {settings}; or, if this instance's "
                 "secrets are the ones to keep, `linewarden secrets set-reference` here "
                 "and import them on the others")
    return "\n".join(lines)


def _when(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def agree(registry: Registry, mine: Sequence[Local], instance_id: str) -> list[Disagreement]:
    """Register each fingerprint (the first one stays) and list those that differ."""
    out = []
    for local in mine:
        ref = registry.register(local.name, local.fingerprint, instance_id)
        if ref.fingerprint != local.fingerprint:
            out.append(Disagreement(local, registry.where, ref))
    return out


def check_at_start(config: Config) -> None:
    """`serve`, before anything listens: a private state dir, a warning for every loose
    file already there, secrets generated, and each shared store's agreement. A store that
    cannot be reached is logged, not fatal (the gateway withholds identity while its ledger
    is down anyway, and the ledger writer checks again when it connects).

    Every store is compared before any is written, so an instance refused by one store
    leaves no registration of its (wrong) secrets in another."""
    private_dir(config.state_dir)
    warn_loose(state_paths(config))
    mine = local_fingerprints(config, read_secrets(config))  # generated by the caller
    opened: list[Registry] = []
    try:
        for where, open_registry in registries(config):
            try:
                opened.append(open_registry())
            except SchemaError:
                raise
            except Exception as exc:
                log.warning("secrets: cannot check them against %s now (%s); checked again "
                            "when the ledger connects", where, _describe(exc))
        problems = [p for registry in opened for p in _compare(registry, mine)]
        for registry in [] if problems else opened:
            try:
                problems += agree(registry, mine, config.proxy.instance_id)
            except Exception as exc:
                log.warning("secrets: cannot register them in %s now (%s)", registry.where,
                            _describe(exc))
        if problems:
            raise SecretsDisagree(config, problems)
    finally:
        for registry in opened:
            registry.close()


def _compare(registry: Registry, mine: Sequence[Local]) -> list[Disagreement]:
    try:
        refs = registry.references()
    except Exception as exc:
        log.warning("secrets: cannot read the references in %s (%s)", registry.where,
                    _describe(exc))
        return []
    return [Disagreement(local, registry.where, refs[local.name]) for local in mine
            if local.name in refs and refs[local.name].fingerprint != local.fingerprint]


def ledger_check(config: Config, secrets: Secrets) -> Callable[[Store], None]:
    """The ledger writer's `Store.after_open`: the same agreement at every connection, with
    the secrets this process runs with (so a rotated ring, picked up live, is checked)."""
    where = f"the ledger {redact_url(config.ledger.url)}"
    instance = config.proxy.instance_id

    def check(store: Store) -> None:
        problems = agree(LedgerRegistry(store, where), local_fingerprints(config, secrets),
                         instance)
        if problems:
            raise SecretsDisagree(config, problems)

    return check


def set_reference(config: Config, names: Sequence[str] = ()) -> list[str]:
    """Make this instance's fingerprints (all, or `names`) the reference in every shared
    store; returns one line per store, saying what happened."""
    mine = [m for m in local_fingerprints(config, read_secrets(config))
            if not names or m.name in names]
    lines = []
    for where, open_registry in registries(config):
        try:
            registry = open_registry()
            try:
                for local in mine:
                    registry.register(local.name, local.fingerprint,
                                      config.proxy.instance_id, replace=True)
            finally:
                registry.close()
        except Exception as exc:
            lines.append(f"NOT recorded in {where}: {_describe(exc)}; run `linewarden "
                         "secrets set-reference` again once it is reachable")
            continue
        lines.append(f"reference in {where}: {', '.join(m.name for m in mine)} of "
                     f"'{config.proxy.instance_id}'")
    return lines


@dataclass(frozen=True)
class Status:
    where: str
    name: str
    state: str  # "agrees", "differs", "not registered", "unreachable"
    reference_instance: str = ""


def status(config: Config) -> list[Status]:
    """Each secret against each store's reference, registering nothing."""
    mine = local_fingerprints(config, read_secrets(config))
    out = []
    for where, open_registry in registries(config):
        try:
            registry = open_registry()
            try:
                refs = registry.references()
            finally:
                registry.close()
        except Exception as exc:
            out.append(Status(where, "*", f"unreachable: {_describe(exc)}"))
            continue
        for local in mine:
            ref = refs.get(local.name)
            if ref is None:
                out.append(Status(where, local.name, "not registered"))
            else:
                state = "agrees" if ref.fingerprint == local.fingerprint else "differs"
                out.append(Status(where, local.name, state, ref.instance_id))
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---------------------------------------------------------------- file modes at start-up

def state_paths(config: Config) -> list[Path]:
    """Every file and directory the gateway keeps that should be private, for the
    start-up warning."""
    from .killswitch import STATE_FILE

    paths = [config.state_dir, config.state_dir / STATE_FILE,
             config.state_dir / SIGNING_KEY_NAME]
    paths += [s.path for s in config.secret_sources().values() if s.path is not None]
    signing = key_dir(config)
    paths.append(signing)
    if signing.is_dir():
        paths += sorted(signing.iterdir())
    # Operator-supplied secret files: the checkpoint key, the admin token, RADIUS secrets.
    radius = config.model.radius
    for name in (config.ledger.signing_key_file, config.model.admin.admin_token_file,
                 *([radius.secret_file, *(c.secret_file for c in radius.clients)]
                   if radius is not None else [])):
        if name:
            paths.append(config.resolve_path(name))
    if config.ledger.url.startswith("sqlite:"):
        from .ledger.sqlite import sqlite_path

        db = sqlite_path(config.ledger.url, config.base)
        paths += [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    return paths


# ---------------------------------------------------------------- export and import

@dataclass(frozen=True)
class Exported:
    directory: Path
    files: list[Path]
    fingerprints: dict[str, str]


_README = """\
linewarden secrets exported from instance '{instance}' ({config}) on {when}.

Every gateway instance that shares a ledger or a Redis store must hold these same
secrets, or it refuses to start. On the other instance:

    linewarden secrets import {directory} --config /path/to/its/linewarden.toml

then start it again. Keep this directory like a password: anyone holding it can compute
every subscriber's pseudonyms and ledger keys, and sign assertions partners accept.
Delete it once imported (or keep it in your secrets store as the backup).

  pseudonym.key        [identity] pseudonym secret (key version 1)
  ledger.key           [ledger] key: the subscriber keys of the ledger rows
  signing/             [signing] key ring: keyring.json and the active private key
  manifest.json        fingerprints `secrets import` checks the files against
"""


def export_secrets(config: Config, directory: Path) -> Exported:
    """Write this instance's shared secrets (the caller generates missing ones) as 0600 files
    in a 0700 `directory`, which must be new or empty."""
    secrets = read_secrets(config)
    if directory.exists():
        if not directory.is_dir() or any(directory.iterdir()):
            raise ValueError(f"{directory} exists and is not empty: export into a new "
                             "directory")
        mode = loose(directory)
        if mode is not None:
            raise ValueError(f"{directory} is mode {mode:04o}: others could read the "
                             f"secrets; fix: chmod 700 {directory}, or export into a new "
                             "directory")
    private_dir(directory)
    files = []
    for name, value in ((PSEUDONYM_SECRET, secrets.pseudonym_secret),
                        (LEDGER_KEY, secrets.ledger_key)):
        path = directory / _EXPORT_FILE[name]
        create_private(path, value + b"\n")
        files.append(path)
    try:
        ring_text, pems = KeyDirectory(key_dir(config)).export()
    except (KeyDirectoryError, OSError) as exc:
        raise ValueError(f"cannot export the signing keys: {exc}") from None
    signing = private_dir(directory / _SIGNING_DIR)
    for kid, pem in pems.items():
        create_private(signing / f"{kid}.pem", pem)
        files.append(signing / f"{kid}.pem")
    create_private(signing / "keyring.json", ring_text)
    files.append(signing / "keyring.json")
    fingerprints = {m.name: m.fingerprint for m in local_fingerprints(config, secrets)
                    if m.name in (PSEUDONYM_SECRET, LEDGER_KEY, SIGNING_KEYS)}
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = {"format": EXPORT_FORMAT, "instance_id": config.proxy.instance_id,
                "config": config.path, "exported": when,
                "files": {PSEUDONYM_SECRET: _EXPORT_FILE[PSEUDONYM_SECRET],
                          LEDGER_KEY: _EXPORT_FILE[LEDGER_KEY], SIGNING_KEYS: _SIGNING_DIR},
                "fingerprints": fingerprints}
    create_private(directory / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
    create_private(directory / "README.txt", _README.format(
        instance=config.proxy.instance_id, config=config.path, when=when,
        directory=directory).encode())
    files += [directory / MANIFEST, directory / "README.txt"]
    return Exported(directory, files, fingerprints)


class ImportRefused(ValueError):
    """Nothing was installed; the message says why and what to do."""


@dataclass
class _Step:
    name: str
    action: str  # "unchanged", "install", "update" (a rotation), "replace", "refused"
    target: str  # the file or directory; for "refused", why
    apply: Callable[[], None]


def import_secrets(config: Config, directory: Path, *, force: bool = False) -> list[str]:
    """Install an export into this config's secrets: all of it or, if any step is refused,
    none of it. Returns what was done, one line each, with what it means."""
    manifest = _read_manifest(directory)
    steps = [*_secret_steps(config, directory, manifest, force),
             _signing_step(config, directory, manifest, force)]
    refused = [s.target for s in steps if s.action == "refused"]
    if refused:
        raise ImportRefused("\n  ".join(["", *refused]))
    lines = []
    for step in steps:
        step.apply()
        lines.append(f"{step.name}: {step.action} ({step.target})")
        if step.action == "replace":
            lines.append(f"  note: {_REPLACED[step.name]}")
    changed = [s.name for s in steps if s.action in ("install", "update", "replace")]
    if changed:
        lines += _follow_own_references(config, changed)
    if changed:
        lines.append("restart this instance's gateway: it keeps the pseudonym secret and "
                     "ledger key it started with (a new signing ring is picked up within "
                     "a second)")
    return lines


def _follow_own_references(config: Config, names: Sequence[str]) -> list[str]:
    """References this very instance registered for secrets it just replaced (it ran
    alone before joining, say) now name secrets it no longer has: move them to the new
    ones. A reference another instance registered is never touched here."""
    instance = config.proxy.instance_id
    mine = [m for m in local_fingerprints(config, read_secrets(config))
            if m.name in names]
    lines = []
    for where, open_registry in registries(config):
        try:
            registry = open_registry()
            try:
                refs = registry.references()
                for local in mine:
                    ref = refs.get(local.name)
                    if ref is not None and ref.instance_id == instance \
                            and ref.fingerprint != local.fingerprint:
                        registry.register(local.name, local.fingerprint, instance,
                                          replace=True)
                        lines.append(f"{local.name}: the reference this instance had "
                                     f"registered in {where} now names the imported one")
            finally:
                registry.close()
        except Exception as exc:
            lines.append(f"could not look at the references in {where} ({_describe(exc)}); "
                         "if this instance registered its old secrets there, run `linewarden "
                         "secrets set-reference` once it is reachable")
    return lines


_REPLACED = {
    PSEUDONYM_SECRET: "partners now get other pseudonyms from this instance than it gave "
                      "them before; the old secret is kept beside the file (.replaced-*)",
    LEDGER_KEY: "rows this instance recorded under the old ledger key are no longer found "
                "by `linewarden audit subscriber` run with the new key; the old key is kept "
                "beside the file (.replaced-*) to answer for those rows",
    SIGNING_KEYS: "this instance no longer publishes its previous keys: assertions it "
                  "signed with them stop verifying against its JWKS",
}


def _refused(why: str) -> _Step:
    return _Step("", "refused", why, lambda: None)


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        raise ImportRefused(f"{directory} has no {MANIFEST}: not a `linewarden secrets "
                            "export` directory") from None
    except (OSError, ValueError) as exc:
        raise ImportRefused(f"{directory / MANIFEST}: unreadable ({exc})") from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise ImportRefused(f"{directory / MANIFEST}: format {manifest.get('format')!r}, "
                            f"expected {EXPORT_FORMAT!r}")
    return manifest


def _expect(manifest: dict[str, Any], name: str, fingerprint: str, path: Path) -> None:
    if manifest.get("fingerprints", {}).get(name) != fingerprint:
        raise ImportRefused(f"{path} does not match the fingerprint in the manifest: the "
                            "export is damaged or was edited; export it again")


def _secret_steps(config: Config, directory: Path, manifest: dict[str, Any],
                  force: bool) -> Iterator[_Step]:
    sources = config.secret_sources()
    for name in (PSEUDONYM_SECRET, LEDGER_KEY):
        path = directory / _EXPORT_FILE[name]
        try:
            value = path.read_bytes().strip()
        except OSError as exc:
            raise ImportRefused(f"cannot read {path}: {exc.strerror}") from None
        _expect(manifest, name, keyed_fingerprint(name, value), path)
        source = sources[name]
        if source.path is None:
            inline = (config.model.identity.pseudonym_secret if name == PSEUDONYM_SECRET
                      else config.ledger.key).encode()
            if inline == value:
                yield _Step(name, "unchanged", source.description, lambda: None)
                continue
            yield _refused(f"{name}: this config sets it inline ({source.description}), "
                           f"so an imported file would not be used; remove {source.key} "
                           f"from the config (the secret then goes to {config.state_dir}) "
                           f"or set {source.key}_file to a copy of {path}")
            continue
        target = source.path
        current = target.read_bytes().strip() if target.exists() else None
        if current == value:
            yield _Step(name, "unchanged", str(target), lambda: None)
        elif current is None:
            yield _Step(name, "install", str(target), _writer(target, value, None))
        elif not force:
            yield _refused(f"{name}: {target} already holds a different one; "
                           f"{_CONSEQUENCE[name]}. Re-run with --force to replace it (the "
                           "old one is kept beside it as .replaced-*)")
        else:
            yield _Step(name, "replace", str(target), _writer(target, value, current))


def _writer(target: Path, value: bytes, old: bytes | None) -> Callable[[], None]:
    def write() -> None:
        if old is not None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            with contextlib.suppress(FileExistsError):
                create_private(target.with_name(f"{target.name}.replaced-{stamp}"), old)
        replace_private(target, value + b"\n")

    return write


def _signing_step(config: Config, directory: Path, manifest: dict[str, Any],
                  force: bool) -> _Step:
    source = KeyDirectory(directory / _SIGNING_DIR)
    try:
        ring = source.load()
        ring_text, pems = source.export()
    except (KeyDirectoryError, OSError) as exc:
        raise ImportRefused(f"{SIGNING_KEYS}: {exc}") from None
    _expect(manifest, SIGNING_KEYS, ring_fingerprint(ring), source.ring_file)
    target = KeyDirectory(key_dir(config))
    try:
        current = target.load()
    except KeyDirectoryError:
        current = None  # unreadable: replacing it needs --force like any other difference
    if current is not None and not current.keys:
        return _Step(SIGNING_KEYS, "install", str(target.path),
                     lambda: target.install(ring_text, pems))
    if current is not None and ring_fingerprint(current) == ring_fingerprint(ring):
        return _Step(SIGNING_KEYS, "unchanged", str(target.path), lambda: None)
    if current is not None and {k.kid for k in current.keys} <= {k.kid for k in ring.keys}:
        # A rotation of this very ring (`keys rotate` on another instance): every key
        # partners may hold assertions from stays published, so no --force is needed.
        return _Step(SIGNING_KEYS, "update", str(target.path),
                     lambda: target.install(ring_text, pems))
    if not force:
        return _refused(f"{SIGNING_KEYS}: {target.path} already holds a different key ring; "
                        f"{_CONSEQUENCE[SIGNING_KEYS]}. Re-run with --force to replace it")
    return _Step(SIGNING_KEYS, "replace", str(target.path),
                 lambda: target.install(ring_text, pems))
