"""The fuzz targets' oracles over their seed corpora (the hostile corpus, real
Accounting-Requests) and seeded random mutations: the same checks `make fuzz` runs with
atheris, here without it and in a few seconds."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter

from lwtest import ROOT


def _load(name: str, path: str) -> object:
    """fuzz/ modules under their own names (tests/hostile has a `run` module too)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


targets = _load("lw_fuzz_targets", "fuzz/targets.py")
fuzz_run = _load("lw_fuzz_run", "fuzz/run.py")


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if not b:
            break
        i = rng.randrange(len(b))
        choice = rng.randrange(3)
        if choice == 0:
            b[i] = rng.randrange(256)
        elif choice == 1:
            del b[i:i + rng.randrange(1, 8)]
        else:
            b[i:i] = rng.choice([b"\r\n", b"_", b":", b"\x00", b" ", b"\n", b"0"])
    return bytes(b)


def test_decide_oracle_over_seeds_and_mutations() -> None:
    rng = random.Random(2012)
    seeds = fuzz_run.decide_seeds()
    assert len(seeds) > 400
    for seed in seeds:
        targets.decide_target(seed)
        for _ in range(4):
            targets.decide_target(_mutate(rng, seed))


def test_radius_oracle_over_seeds_and_mutations() -> None:
    rng = random.Random(2866)
    seeds = fuzz_run.radius_seeds()
    outcomes: Counter[str] = Counter()
    for seed in seeds:
        outcomes[targets.radius_target(seed)] += 1
        for _ in range(300):
            outcomes[targets.radius_target(_mutate(rng, seed))] += 1
    assert outcomes["start"] >= 3 and outcomes["bad_authenticator"] > 100, outcomes
    assert sum(q.qsize() for q in targets.listener()._lanes) == 0  # all drained
