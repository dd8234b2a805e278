"""From a loaded config to the parts that run: the one place secrets are generated.

`config.py` reads and validates linewarden.toml and writes nothing. What a running gateway
needs that the config leaves to it (a pseudonym secret, a ledger key, a first signing key)
is created here by `generate_secrets`, called explicitly at the start of `serve` and of the
commands that need the secrets; `settings` then builds the decision core's settings.
Only `serve` and the CLI import this module (tests/core/test_imports.py).
"""

from __future__ import annotations

import secrets as _random
import time
from pathlib import Path

from .assertion import MIN_NONCE_BYTES, NoncePool
from .config import Config
from .decide import Settings
from .fileerrors import ConfigError
from .filemodes import create_private
from .keys import KeyDirectoryError, open_signer
from .secrets import read_secrets

# Random bytes of a generated secret (base64url text in the file): 256 bits.
GENERATED_SECRET_BYTES = 32


def generate_secrets(config: Config) -> list[Path]:
    """Create, once, each secret the config does not give: the pseudonym secret and the
    ledger key (random, 0600 in the state dir, kept across restarts so pseudonyms and
    ledger keys stay stable) and the first signing key. Returns the files created."""
    created = []
    for source in config.secret_sources().values():
        if source.generated and source.path is not None and not source.path.exists():
            try:
                create_private(source.path,
                               _random.token_urlsafe(GENERATED_SECRET_BYTES).encode())
            except FileExistsError:  # another process generated it first: use that one
                continue
            created.append(source.path)
    try:
        open_signer(config, now=time.time())  # makes the first key of an empty ring
    except KeyDirectoryError as exc:
        raise ConfigError(config.path, None, f"[signing] {exc}",
                          "fix the key directory or run 'linewarden keys list'") from None
    return created


def settings(config: Config) -> Settings:
    """The decision core's settings, with the secrets generated first if missing."""
    generate_secrets(config)
    return Settings(
        secrets=read_secrets(config),
        draw_nonce=NoncePool(MIN_NONCE_BYTES),
        reject_alias_headers=config.proxy.reject_alias_headers,
        extra_identity_names=tuple(config.model.strip.extra_names),
        extra_identity_suffixes=tuple(config.model.strip.extra_suffixes),
        connect_ports=frozenset(config.proxy.connect_ports),
    )
