"""linewarden.toml: typed config, errors with file:line, secrets, the static resolve map."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linewarden import wiring
from linewarden.config import DEMO_NAME, load_config
from linewarden.proxy.upstream import resolve_static, static_routes
from linewarden.sourcemap import ConfigError, ConfigErrors

GOOD = """
state_dir = "state"

[proxy]
listen = "127.0.0.1:3999"
connect_ports = [443, 8443]

[proxy.resolve]
"Partner.Test." = "127.0.0.1:9000"

[identity]
operator = "234-10"

[[bindings]]
ip = "127.0.0.1"
msisdn = "+447400900123"

[[partners]]
id = "p1"
purpose = "billing"
hosts = ["partner.test"]
[partners.headers]
X-Sub = "pseudonym"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "linewarden.toml"
    path.write_text(text)
    return path


def errors(path: Path) -> list[ConfigError]:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        load_config(str(path))
    exc = info.value
    return exc.errors if isinstance(exc, ConfigErrors) else [exc]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_good_config(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, GOOD)))
    assert config.proxy.resolve == {"partner.test": "127.0.0.1:9000"}
    assert [b.msisdn for b in config.bindings()] == ["447400900123"]
    assert [p.id for p in config.policy.partners] == ["p1"]
    settings = wiring.settings(config)
    assert settings.connect_ports == frozenset({443, 8443})
    assert settings.secrets.operator == "234-10"


def test_generated_secrets_are_stable_and_private(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    first = wiring.settings(load_config(str(path))).secrets
    second = wiring.settings(load_config(str(path))).secrets
    assert first.pseudonym_secret == second.pseudonym_secret
    assert first.ledger_key == second.ledger_key
    assert first.pseudonym_secret != first.ledger_key


def test_loading_a_config_writes_nothing_and_generating_is_explicit(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, GOOD)))
    assert not config.state_dir.exists()  # no secret, no key, no directory
    with pytest.raises(ConfigError, match="has not been generated yet"):
        config.ledger_key()
    created = wiring.generate_secrets(config)
    assert sorted(p.name for p in created) == ["ledger.key", "pseudonym.key"]
    assert (config.state_dir / "signing").is_dir()  # the first signing key
    assert wiring.generate_secrets(config) == []  # once: kept across restarts
    assert config.ledger_key() == (config.state_dir / "ledger.key").read_bytes().strip()
    key_file = tmp_path / "state" / "pseudonym.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_demo_config_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.path == DEMO_NAME
    assert len(config.policy.partners) == 2
    assert {b.ip for b in config.bindings()} == {"127.0.0.1", "127.0.0.2"}
    assert config.reload_policy() is config.policy


@pytest.mark.parametrize(("edit", "needle", "fragment"), [
    (lambda t: t.replace("[identity]", "[identity]\ncolour = 1"), "colour", "unknown key"),
    (lambda t: t.replace('"+447400900123"', '"12"'), "msisdn", "E.164"),
    (lambda t: t.replace('ip = "127.0.0.1"', 'ip = "localhost"'), "ip = ", "ip"),
    # the resolve map is validated whole: the error points at its table
    (lambda t: t.replace('"127.0.0.1:9000"', '"partner.example"'), "[proxy.resolve]", "IP"),
    (lambda t: t.replace('listen = "127.0.0.1:3999"', 'listen = "3999"'), "listen", "listen"),
    (lambda t: t.replace('operator = "234-10"', 'operator = "O2"'), "operator", "operator"),
    (lambda t: t.replace('hosts = ["partner.test"]', 'hosts = ["*.co.uk"]'), "hosts",
     "public suffix"),
    (lambda t: t.replace('X-Sub = "pseudonym"', 'X-Sub = "msisdn"'), "X-Sub", "opt-in"),
    (lambda t: t.replace("[proxy]\n", "[proxy\n"), "[proxy", "invalid TOML"),
])
def test_config_errors_have_file_and_line(tmp_path: Path, edit, needle: str,
                                          fragment: str) -> None:
    text = edit(GOOD)
    assert text != GOOD
    path = write(tmp_path, text)
    errs = errors(path)
    hits = [e for e in errs if fragment.lower() in str(e).lower()]
    assert hits, [str(e) for e in errs]
    assert hits[0].path == str(path)
    assert hits[0].line == line_of(text, needle), str(hits[0])
    assert str(hits[0]).startswith(f"{path}:{hits[0].line}: ")


def test_missing_file(tmp_path: Path) -> None:
    [err] = errors(tmp_path / "nope.toml")
    assert "not found" in str(err)


def test_policy_file_is_read_and_its_errors_name_it(tmp_path: Path) -> None:
    partners = tmp_path / "partners.toml"
    partners.write_text(GOOD[GOOD.index("[[partners]]"):])
    text = GOOD[: GOOD.index("[[partners]]")] + '[policy]\nfile = "partners.toml"\n'
    config = load_config(str(write(tmp_path, text)))
    assert [p.id for p in config.policy.partners] == ["p1"]
    assert config.policy_path == str(partners)
    partners.write_text(partners.read_text().replace('"partner.test"', '"*"'))
    with pytest.raises(ConfigErrors) as info:
        config.reload_policy()
    assert f"{partners}:4:" in str(info.value)
    assert [p.id for p in config.policy.partners] == ["p1"]  # the loaded policy is untouched


def test_reload_from_main_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config(str(path))
    path.write_text(GOOD.replace("partner.test", "other.test"))
    assert config.reload_policy().partners[0].hosts == ("other.test",)
    assert config.reload_policy().version != config.policy.version


@pytest.mark.parametrize(("entry", "port", "expected"), [
    ("127.0.0.1", 8080, ("127.0.0.1", 8080)),
    ("127.0.0.1:9000", 80, ("127.0.0.1", 9000)),
    ("[::1]", 81, ("::1", 81)),
    ("[::1]:9000", 81, ("::1", 9000)),
    ("::1", 82, ("::1", 82)),
])
def test_resolve_static(entry: str, port: int, expected: tuple[str, int]) -> None:
    routes = static_routes({"h.test": entry})  # parsed once, at start-up
    assert resolve_static(routes, "h.test", port) == expected
    assert resolve_static(routes, "other.test", port) is None


@given(host=st.from_regex(r"[a-z]{1,10}\.test", fullmatch=True),
       octets=st.lists(st.integers(0, 255), min_size=4, max_size=4),
       port=st.one_of(st.none(), st.integers(1, 65535)), uri_port=st.integers(1, 65535))
def test_a_static_route_keeps_or_overrides_the_port(host: str, octets: list[int],
                                                    port: int | None, uri_port: int) -> None:
    ip = ".".join(map(str, octets))
    routes = static_routes({host: ip if port is None else f"{ip}:{port}"})
    assert resolve_static(routes, host, uri_port) == (ip, uri_port if port is None else port)


def test_ledger_section_defaults_are_the_writers_own() -> None:
    from linewarden.config import LedgerSection
    from linewarden.ledger.store import DEFAULT_CHECKPOINTS
    from linewarden.ledger.writer import BATCH_MAX, QUEUE_MAX

    section = LedgerSection()
    assert (section.queue_max, section.batch_max) == (QUEUE_MAX, BATCH_MAX)
    assert (section.checkpoint_every, section.checkpoint_seconds) == (
        DEFAULT_CHECKPOINTS.every_rows, DEFAULT_CHECKPOINTS.every_seconds)
