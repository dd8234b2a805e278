"""The signing key directory: generate, rotate, list, and load it into a `KeyRing`.

Layout of `[signing] key_dir` (default `<state_dir>/signing`):

    keyring.json   every key still published: kid, alg, created, retired, public JWK
    <kid>.pem      the private key of the active key only (PKCS#8, mode 0600)

Rotation makes a new active key and retires the previous one: its private key file is
deleted at once (nothing may sign with it again), its public key stays in `keyring.json`
and in the JWKS until every assertion it signed has expired (`RETIRED_KEY_RETENTION`).
A running gateway polls `keyring.json` (`KeyWatcher`) and switches keys within a second.
Writes go to a temporary file and `os.replace`, so a reader sees the old ring or the new.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .assertion import (
    ALGORITHMS,
    Algorithm,
    KeyRing,
    PrivateKey,
    Signer,
    SigningKey,
    new_private_key,
    public_jwk,
)
from .filemodes import private_dir, replace_private

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("linewarden.keys")

RING_FILE = "keyring.json"
# How often a running gateway looks for a rotated key ring: one stat() per second.
KEY_POLL_INTERVAL = 1.0


class KeyDirectoryError(Exception):
    """A key directory problem, said in one sentence with the fix."""


def key_dir(config: Config) -> Path:
    section = config.model.signing
    return config.resolve_path(section.key_dir) if section.key_dir \
        else config.state_dir / "signing"


def issuer(config: Config) -> str:
    """`iss`: configured, else derived from the operator's MCC-MNC."""
    section = config.model.signing
    if section.issuer:
        return section.issuer
    operator = config.model.identity.operator
    return f"urn:linewarden:operator:{operator}" if operator else "urn:linewarden"


def open_signer(config: Config, *, now: float) -> Signer:
    """The gateway's signer: the directory's ring, with a first key made if it has none
    (like the pseudonym secret, generated once and kept)."""
    directory = KeyDirectory(key_dir(config))
    section = config.model.signing
    ring = directory.load()
    if ring.active is None:
        try:
            directory.generate(section.algorithm, now=now)
        except OSError as exc:
            raise KeyDirectoryError(f"cannot create a signing key in {directory.path}: "
                                    f"{exc.strerror}") from None
        ring = directory.load()
    return Signer(issuer(config), ring, section.ttl)


@dataclass(frozen=True)
class KeyDirectory:
    path: Path

    @property
    def ring_file(self) -> Path:
        return self.path / RING_FILE

    def stamp(self) -> tuple[int, int] | None:
        """Changes whenever the ring file is replaced (the watcher's cheap check)."""
        try:
            st = self.ring_file.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_ino

    def load(self) -> KeyRing:
        """The ring on disk; an empty ring if there is none yet. Raises KeyDirectoryError."""
        try:
            data = json.loads(self.ring_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return KeyRing()
        except (OSError, ValueError) as exc:
            raise KeyDirectoryError(f"{self.ring_file}: unreadable key ring ({exc})") from None
        keys = []
        for entry in data.get("keys", []):
            private = None
            if entry.get("retired") is None:
                private = self._private(entry["kid"], entry["alg"])
            keys.append(SigningKey(kid=entry["kid"], algorithm=entry["alg"],
                                   public_jwk=entry["jwk"], created=entry["created"],
                                   retired=entry.get("retired"), private=private))
        keys.sort(key=lambda k: k.created, reverse=True)
        return KeyRing(tuple(keys))

    def generate(self, algorithm: Algorithm, *, now: float) -> SigningKey:
        """The first key. Refuses when one is active: that is what `rotate` is for."""
        ring = self.load()
        if ring.active is not None:
            raise KeyDirectoryError(f"{self.path} already has an active key ({ring.active.kid}); "
                            "use 'linewarden keys rotate' to replace it")
        return self._add(ring, algorithm, now)

    def rotate(self, algorithm: Algorithm, *, now: float) -> tuple[SigningKey, SigningKey | None]:
        """A new active key; the old one retired (private half deleted, public kept)."""
        ring = self.load()
        return self._add(ring, algorithm, now), ring.active

    def _add(self, ring: KeyRing, algorithm: Algorithm, now: float) -> SigningKey:
        if algorithm not in ALGORITHMS:
            raise KeyDirectoryError(f"unsupported algorithm '{algorithm}'; use one of "
                            f"{', '.join(ALGORITHMS)}")
        private = new_private_key(algorithm)
        jwk = public_jwk(private, algorithm)
        key = SigningKey(kid=jwk["kid"], algorithm=algorithm, public_jwk=jwk, created=now,
                         private=private)
        private_dir(self.path)
        self._write_private(key.kid, private)
        kept = [SigningKey(k.kid, k.algorithm, k.public_jwk, k.created,
                           k.retired if k.retired is not None else now)
                for k in ring.keys
                if k.retired is None or now < (k.published_until() or 0.0)]
        self._write_ring([key, *kept])  # the new ring is live before old keys are shredded
        for old in ring.keys:
            if old.retired is None:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / f"{old.kid}.pem").unlink()
        return key

    def _private(self, kid: str, algorithm: str) -> PrivateKey:
        path = self.path / f"{kid}.pem"
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyDirectoryError(f"{path}: the active key's private key is missing; run "
                            "'linewarden keys rotate' to make a new one") from None
        except ValueError as exc:
            raise KeyDirectoryError(f"{path}: not a PEM private key ({exc})") from None
        expected = ec.EllipticCurvePrivateKey if algorithm == "ES256" else Ed25519PrivateKey
        if not isinstance(loaded, expected):
            raise KeyDirectoryError(f"{path}: key type does not match its algorithm {algorithm}")
        return loaded

    def _write_private(self, kid: str, private: PrivateKey) -> None:
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        replace_private(self.path / f"{kid}.pem", pem)

    def _write_ring(self, keys: list[SigningKey]) -> None:
        data: dict[str, Any] = {"keys": [
            {"kid": k.kid, "alg": k.algorithm, "created": k.created, "retired": k.retired,
             "jwk": dict(k.public_jwk)} for k in keys]}
        replace_private(self.ring_file, json.dumps(data, indent=2).encode())

    def export(self) -> tuple[bytes, dict[str, bytes]]:
        """The ring file and the active key's private PEM, as `secrets export` copies
        them. Raises KeyDirectoryError if there is no active key."""
        ring = self.load()
        if ring.active is None:
            raise KeyDirectoryError(f"{self.path} has no active signing key")
        kid = ring.active.kid
        return self.ring_file.read_bytes(), {kid: (self.path / f"{kid}.pem").read_bytes()}

    def install(self, ring_text: bytes, private_pems: dict[str, bytes]) -> None:
        """Replace this directory's keys with an exported ring (`secrets import`). The
        private keys go first and the ring last (the moment a running gateway's
        `KeyWatcher` switches); private keys the new ring does not use are then deleted,
        so nothing signs with them again."""
        private_dir(self.path)
        for kid, pem in private_pems.items():
            replace_private(self.path / f"{kid}.pem", pem)
        replace_private(self.ring_file, ring_text)
        for stale in self.path.glob("*.pem"):
            if stale.stem not in private_pems:
                stale.unlink()


class KeyWatcher:
    """Reloads the signer's ring when `keyring.json` changes (after `keys rotate`).

    A ring that fails to load is logged and the running one kept: a half-finished edit
    never stops signing with the key partners already trust."""

    def __init__(self, directory: KeyDirectory, signer: Signer) -> None:
        self.directory = directory
        self.signer = signer
        self._stamp = directory.stamp()

    def check(self) -> bool:
        stamp = self.directory.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            ring = self.directory.load()
        except (KeyDirectoryError, KeyError, TypeError, ValueError) as exc:
            log.error("signing keys: keeping the running ring; %s", exc)
            return False
        if ring.active is None:
            log.error("signing keys: %s has no active key; keeping the running ring",
                      self.directory.path)
            return False
        self.signer.use(ring)
        log.info("signing keys: now signing with kid %s", ring.active.kid)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(KEY_POLL_INTERVAL)
            await asyncio.to_thread(self.check)


async def watch_keys(config: Config, signer: Signer | None) -> None:
    """The running gateway's side of `keys rotate` (a task for the life of `serve`)."""
    if signer is not None:
        await KeyWatcher(KeyDirectory(key_dir(config)), signer).run()
