"""Partners: who may receive which identity, on which hosts.

`policy.model` is the plain data the decision core reads (partners, claim specs, the host
matcher); `policy.load` reads a TOML file into it and lints it. Importing this package
loads only the model, so the core never pulls in pydantic, tomllib or the public-suffix list.
"""

from __future__ import annotations

from typing import Any

from .model import (
    NV_READ,
    NV_VERIFY,
    OAUTH_SCOPES,
    PURPOSES,
    RAW_NUMBER_PURPOSES,
    ClaimSpec,
    Finding,
    HostMatcher,
    OAuthClient,
    Partner,
    Policy,
    PolicyError,
    UnsafePolicyError,
    header_name_problems,
    is_ip_literal,
    matchable_path,
    normalise_host,
    normalise_pattern,
    path_within,
    patterns_overlap,
    policy_version,
)

__all__ = [
    "NV_READ", "NV_VERIFY", "OAUTH_SCOPES", "PURPOSES", "RAW_NUMBER_PURPOSES", "ClaimSpec",
    "Finding", "HostMatcher", "OAuthClient", "Partner", "Policy", "PolicyError",
    "UnsafePolicyError", "header_name_problems", "is_ip_literal", "matchable_path",
    "normalise_host", "normalise_pattern", "path_within", "patterns_overlap", "policy_version",
]

# Names that moved to `policy.load`; `from linewarden.policy import load_policy` keeps
# working for code written before the split, at the price of loading the loader then.
_MOVED_TO_LOAD = frozenset({"CONFIG_SECTIONS", "compile_policy", "host_problem", "lint",
                            "load_policy", "parse_policy"})


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_LOAD:
        from . import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
