"""The disclosure ledger: every disclosure recorded before it happens, tamper-evident.

The proxy holds one `Ledger` (from `open_ledger` or `ledger_from_config`) and forwards a
partner's claims only when `await ledger.record(decision.record)` returned True (the proxy
itself uses the writer's callback form, `submit(rec, done)`: no task per disclosure).

    ledger = ledger_from_config(config)
    await ledger.start()
    ...
    if decision.record is not None and not await ledger.record(decision.record):
        withhold identity, count it
    ...
    await ledger.close()

Backends, chain, reports and the CLI live in the submodules; this module imports none of
them (nor sqlite3, psycopg or cryptography) until a function needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..claims import Secrets
    from ..config import Config
    from ..decide import DisclosureRecord
    from .access import AccessLog
    from .chain import Signer
    from .store import Store
    from .writer import LedgerWriter

SIGNING_KEY_NAME = "ledger-signing.pem"  # in the state dir unless [ledger] signing_key_file

__all__ = ["SIGNING_KEY_NAME", "Ledger", "access_log_from_config", "journal_dir",
           "ledger_from_config", "open_ledger", "open_store", "open_with_tail", "redact_url",
           "signer_from_config", "trusted_keys_from_config"]


class Recorder(Protocol):
    """What the data plane and the Number Verification API need of the ledger."""

    async def record(self, rec: DisclosureRecord) -> bool:
        """True only once the row is committed; False, never an exception, when it is
        not (queue full, backend failed, or no COMMIT within the writer's bound)."""


class Ledger(Recorder, Protocol):
    async def start(self) -> None:
        """Open the backend, create or migrate the schema, start the writer task."""

    async def close(self) -> None:
        """Commit what is queued, sign the chain head, stop."""


def open_store(url: str, *, base: Path | None = None, must_exist: bool = False) -> Store:
    """An unopened synchronous `Store` for `url` (call `.open()`); for reports and the CLI."""
    base = Path.cwd() if base is None else base
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore, sqlite_options, sqlite_path

        return SQLiteStore(sqlite_path(url, base), must_exist=must_exist,
                           **sqlite_options(url))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported ledger url '{redact_url(url)}': use sqlite:///path or "
                     "postgresql://...")


def open_ledger(url: str, *, key: bytes, instance_id: str, base: Path | None = None,
                signing_key_file: Path | None = None,
                after_open: Callable[[Store], None] | None = None,
                journal: Path | None = None, **options: Any) -> LedgerWriter:
    """The writer for one gateway instance. `options` go to `LedgerWriter` (queue_max,
    batch_max, commit_bound, ...). The signing key defaults to
    `<base>/.linewarden/ledger-signing.pem`, generated on first use. `after_open` runs at
    every (re)connection (the secrets agreement check, secrets.py). With `journal` (a
    directory, relative to `base`), the journal-first writer (journal_writer.py): rows
    are durable in the journal, and the url's store is their index."""
    from .chain import Signer
    from .writer import LedgerWriter

    if not key:
        # Without a secret key, subscriber keys would be plain hashes of phone numbers,
        # which anyone can reverse by hashing the whole numbering plan.
        raise ValueError("the ledger key is empty")
    if not instance_id:
        raise ValueError("the instance id is empty")
    base = Path.cwd() if base is None else base
    store = open_store(url, base=base)
    store.after_open = after_open
    signer = Signer.load_or_create(signing_key_file or base / ".linewarden" / SIGNING_KEY_NAME)
    if journal is not None:
        from .journal_writer import JournalWriter

        return JournalWriter(lambda: _fresh(store), instance_id, base / journal,
                             signer=signer, **options)
    return LedgerWriter(lambda: _fresh(store), instance_id, signer=signer, **options)


def _fresh(template: Store) -> Store:
    """A new store like `template` for each (re)connection: one per worker thread."""
    import copy

    return copy.copy(template)


def ledger_from_config(config: Config, secrets: Secrets | None = None) -> LedgerWriter:
    """`open_ledger` with everything the config says. With the `secrets` the gateway runs
    with, every connection first checks they agree with the ledger's reference."""
    from ..secrets import ledger_check
    from .store import CheckpointPolicy

    section = config.ledger
    journal = journal_dir(config)
    extra: dict[str, Any] = {}
    if journal is not None:
        extra = {"journal": journal,
                 "segment_bytes": int(section.journal_segment_bytes)}
    return open_ledger(
        section.url, key=config.ledger_key(), instance_id=config.proxy.instance_id,
        base=config.base, signing_key_file=_signing_key_path(config),
        after_open=None if secrets is None else ledger_check(config, secrets),
        queue_max=section.queue_max, batch_max=section.batch_max,
        checkpoints=CheckpointPolicy(every_rows=section.checkpoint_every,
                                     every_seconds=section.checkpoint_seconds),
        **extra)


def journal_dir(config: Config) -> Path | None:
    """The journal-first ledger's directory, or None when rows go to the store directly."""
    name = config.ledger.journal
    return config.resolve_path(name) if name else None


def open_with_tail(store: Store, journal: Path | None) -> Store:
    """`store`, opened, seeing the journal's not-yet-indexed rows too (reports)."""
    store.open()
    if journal is not None:
        from .journal import unindexed

        store.attach_tail(unindexed(journal, store.head))
    return store


def access_log_from_config(config: Config) -> AccessLog:
    """Where reveals of a number by operator staff are recorded: this config's ledger."""
    from .access import AccessLog

    url, base = config.ledger.url, config.base
    return AccessLog(lambda: open_store(url, base=base), config.ledger_key(),
                     config.proxy.instance_id)


def _signing_key_path(config: Config) -> Path:
    name = config.ledger.signing_key_file
    return config.resolve_path(name) if name else config.state_dir / SIGNING_KEY_NAME


def signer_from_config(config: Config) -> Signer:
    from .chain import Signer

    return Signer.load_or_create(_signing_key_path(config))


def trusted_keys_from_config(config: Config) -> dict[str, Ed25519PublicKey]:
    """Keys whose checkpoints `verify` accepts: this config's signing key, plus
    `[ledger] trusted_keys` (base64 public keys of the other gateway instances)."""
    from .chain import key_id, parse_public_key

    own = signer_from_config(config)
    keys = {own.key_id: own.public}
    for text in config.ledger.trusted_keys:
        public = parse_public_key(text)
        keys[key_id(public)] = public
    return keys


def redact_url(url: str) -> str:
    """A URL for an error message, without its password."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
