"""linewarden.toml -> typed `Config`, validated once at the edge.

Every error names the file, the line and the fix. With no file, the embedded demo config
(`demo.toml` in the package) runs everything in memory with a SQLite ledger under
`./.linewarden/`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .assertion import DEFAULT_TTL, MAX_TTL
from .bindings import Binding
from .decide import DEFAULT_CONNECT_PORTS
from .destinations import parse_networks
from .hostport import listener_address
from .identifiers import e164_digits
from .policy.load import compile_policy, load_policy
from .policy.model import Policy, policy_version
from .sourcemap import ConfigError, ConfigErrors, SourceMap, load_toml, parse_toml

DEFAULT_CONFIG = "linewarden.toml"
DEMO_NAME = "<embedded demo config>"
# Generated secrets, in the state dir unless the config names them (docs/operations.md).
PSEUDONYM_FILE = "pseudonym.key"
LEDGER_FILE = "ledger.key"
# The shared secrets' names, as messages and the fingerprint table say them.
PSEUDONYM_SECRET = "pseudonym secret"
LEDGER_KEY = "ledger key"


def _cidr(value: str) -> str:
    try:
        parse_networks([value])
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a CIDR network ({exc}); e.g. \"10.0.0.0/8\", "
                         "\"fd00::/8\" or one address \"192.0.2.7\"") from None
    return value.strip()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProxySection(_Section):
    listen: str = "127.0.0.1:3128"
    instance_id: str = Field(default_factory=socket.gethostname)
    # Processes sharing the listening port (SO_REUSEPORT), one event loop each. More than one
    # needs a shared store (redis://) so every worker sees the same bindings and kill switch.
    workers: int = Field(default=1, ge=1, le=64)
    connect_ports: list[int] = sorted(DEFAULT_CONNECT_PORTS)
    reject_alias_headers: bool = False
    resolve: dict[str, str] = {}
    connect_timeout: float = Field(default=5.0, gt=0)
    # Upstream may think this long before the first response byte (nginx's proxy_read_timeout).
    read_timeout: float = Field(default=60.0, gt=0)
    # Slowloris: a request head must arrive whole within this (Apache mod_reqtimeout: 20 s).
    header_timeout: float = Field(default=10.0, gt=0)
    # Keep-alive idle limit with clients (nginx keepalive_timeout: 75 s).
    idle_timeout: float = Field(default=60.0, gt=0)
    # A CONNECT or WebSocket tunnel with no byte either way for this long is closed (Squid's
    # read_timeout is 15 min; HAProxy deployments often set `timeout tunnel` 1 h).
    tunnel_idle_timeout: float = Field(default=600.0, gt=0)
    # Destination policy (destinations.py, docs/gateway.md): CIDRs the proxy refuses on top of
    # the default-denied ranges, and exceptions to both (never the gateway's own listeners).
    deny_destinations: list[Annotated[str, AfterValidator(_cidr)]] = []
    allow_destinations: list[Annotated[str, AfterValidator(_cidr)]] = []
    # How connections reach the listener (proxy/intercept.py, docs/operations.md):
    # "forward": clients name the gateway as their proxy (or send origin-form + Host);
    # "intercept": an iptables/nftables REDIRECT sent them, SO_ORIGINAL_DST says where to;
    # "tproxy": a TPROXY rule sent them to an IP_TRANSPARENT listener (needs CAP_NET_ADMIN).
    mode: Literal["forward", "intercept", "tproxy"] = "forward"
    # L4 balancers whose connections start with a PROXY protocol v1/v2 header carrying the
    # subscriber's address (proxy/proxied.py). Empty: no peer may send one.
    trusted_proxies: list[Annotated[str, AfterValidator(_cidr)]] = []
    # SIGTERM: requests in flight may finish for this long before they are cut. Inside
    # Kubernetes' default 30 s termination grace period, with room for the ledger flush.
    drain_timeout: float = Field(default=10.0, ge=0)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        listener_address(v)
        return v

    @field_validator("resolve")
    @classmethod
    def _resolve(cls, v: dict[str, str]) -> dict[str, str]:
        for name, address in v.items():
            host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise ValueError(f"resolve '{name}' = '{address}': the target must be an IP "
                                 "address, optionally with ':port'") from None
        return {k.lower().rstrip("."): a for k, a in v.items()}


class IdentitySection(_Section):
    operator: str = Field(default="", pattern=r"^(\d{3}-\d{2,3})?$")
    pseudonym_secret: str = ""  # pseudonym key version 1
    pseudonym_secret_file: str = ""
    # Versioned pseudonym keys (2, 3, ...): a partner moves to one only when pinned in
    # partner_key_versions, and only its pseudonyms change (docs/assertions.md).
    pseudonym_keys: dict[int, str] = {}
    partner_key_versions: dict[str, int] = {}

    @field_validator("pseudonym_keys")
    @classmethod
    def _versions(cls, v: dict[int, str]) -> dict[int, str]:
        for version, secret in v.items():
            if version < 2 or not secret:
                raise ValueError(f"pseudonym key version {version}: versions start at 2 "
                                 "(1 is pseudonym_secret) and need a non-empty secret")
        return v


# ---- [signing]: keys for signed identity assertions (docs/assertions.md)
class SigningSection(_Section):
    key_dir: str = ""  # default: <state_dir>/signing
    algorithm: Literal["ES256", "EdDSA"] = "ES256"
    ttl: int = Field(default=DEFAULT_TTL, ge=1, le=MAX_TTL)  # assertion lifetime, seconds
    issuer: str = ""  # default: urn:linewarden:operator:<MCC-MNC>


class StripSection(_Section):
    extra_names: list[str] = []
    extra_suffixes: list[str] = []


class PolicySection(_Section):
    file: str = ""  # partners in another file; empty: the [[partners]] of this file


def _ip(value: str) -> str:
    return str(ipaddress.ip_address(value))


# A subscriber number (E.164 digits, '+' dropped) and an IP address, validated where read.
Msisdn = Annotated[str, AfterValidator(e164_digits)]
IpAddress = Annotated[str, AfterValidator(_ip)]


class BindingEntry(_Section):
    ip: IpAddress
    msisdn: Msisdn
    attributes: dict[str, str] = {}


class LedgerSection(_Section):
    url: str = "sqlite:///.linewarden/ledger.db"
    key: str = ""
    key_file: str = ""
    # Bounds of the group-commit writer: the defaults are ledger/writer.py's QUEUE_MAX and
    # BATCH_MAX and ledger/store.py's checkpoint policy, which say why (tests/core checks).
    queue_max: int = Field(default=8192, ge=1)
    batch_max: int = Field(default=1000, ge=1, le=50_000)
    checkpoint_every: int = Field(default=10_000, ge=1)  # a signed checkpoint every N rows
    checkpoint_seconds: float = Field(default=60.0, gt=0)  # ...or every S seconds
    signing_key_file: str = ""  # Ed25519 PEM; default <state_dir>/ledger-signing.pem
    trusted_keys: list[str] = []  # base64 public keys of other instances' checkpoints
    # Journal-first ledger (ledger/journal.py): a directory (relative to the config) for
    # the durable journal; the url's store becomes the index. Empty: rows are committed
    # to the store directly, one transaction per batch (ledger/writer.py).
    journal: str = ""
    journal_segment_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)


class StoreSection(_Section):
    url: str = Field(default="memory://", pattern=r"^(memory://|rediss?://.+)$")
    # Redis only: key prefix (several deployments may share one Redis), and the staleness
    # bound of the per-gateway cache in seconds (0: no cache; see docs/bindings.md).
    prefix: str = Field(default="linewarden:", pattern=r"^[A-Za-z0-9_.:-]*$")
    cache_ttl: float = Field(default=1.0, ge=0, le=5)
    # Redis only: RADIUS is answered once this many replicas hold the write (WAIT), within
    # replica_timeout seconds; 0: once the primary has it (then see its appendfsync).
    replicas: int = Field(default=0, ge=0, le=16)
    replica_timeout: float = Field(default=0.5, gt=0, le=5)


# ---- [radius]: the RADIUS accounting listener (docs/bindings.md)
class RadiusClient(_Section):
    address: str  # NAS address allowed to send accounting
    secret: str = ""
    secret_file: str = ""

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"'{v}' is not an IP address (clients are NAS addresses, "
                             "not names)") from None


# With [radius] ttl = 0 a binding outlives this many missed Interim-Updates: one lost
# datagram does not unbind a live session, a session whose Stop was lost ends soon after.
MISSED_INTERIMS = 3


class RadiusSection(_Section):
    listen: str = "127.0.0.1:1813"
    secret: str = ""  # default shared secret for clients without their own
    secret_file: str = ""
    clients: list[RadiusClient] = []
    interim_interval: float = Field(default=300.0, gt=0)
    ttl: float = Field(default=0.0, ge=0)  # 0: MISSED_INTERIMS x interim_interval

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        listener_address(v)
        return v

    def binding_ttl(self) -> float:
        return self.ttl or MISSED_INTERIMS * self.interim_interval

    def client_secrets(self, base: Path) -> dict[str, bytes]:
        """NAS address -> secret, each from the client, else the section's default."""
        default = _read_secret(self.secret, self.secret_file, base)
        out: dict[str, bytes] = {}
        for client in self.clients:
            secret = _read_secret(client.secret, client.secret_file, base) or default
            if not secret:
                raise ValueError(f"[radius] client {client.address} has no secret: set "
                                 "secret or secret_file, on the client or the section")
            out[client.address] = secret
        return out


def _read_secret(inline: str, file: str, base: Path) -> bytes:
    if inline:
        return inline.encode()
    if not file:
        return b""
    path = Path(file) if Path(file).is_absolute() else base / file
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file '{path}': {exc.strerror}") from None


# ---- [profiles]: subscriber profiles (docs/bindings.md)
class ProfilesSection(_Section):
    file: str  # .csv, or SQLite (.db / .sqlite / .sqlite3)
    table: str = Field(default="profiles", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    reload_interval: float = Field(default=5.0, gt=0)
    # Create the file, with no subscribers, if it does not exist. Off by default: a
    # mistyped path must stop start-up, not silently mean "nobody opted out". The demo
    # sets it so that /me's opt-out works from a fresh clone.
    create: bool = False


# ---- [canary]: the probe subscriber and its control sites (docs/canary.md)
class CanarySection(_Section):
    interval: float = Field(default=5.0, gt=0)  # seconds between rounds
    timeout: float = Field(default=3.0, gt=0)  # per probe request; capped at `interval`
    probe_ip: IpAddress = "127.0.0.9"  # a local address reserved for the probe subscriber
    probe_msisdn: Msisdn = "447400900999"  # a test number that is nobody's
    control_urls: list[str] = []  # empty: the gateway's own checker, via the proxy
    expect_urls: dict[str, list[str]] = {}  # partner id -> URLs that must get its claims
    webhook: str = ""  # alerts are POSTed here as JSON (docs/canary.md)

    @field_validator("control_urls")
    @classmethod
    def _control_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith("http://"):
                raise ValueError(f"'{url}': control URLs must be http:// (an https request "
                                 "is a blind tunnel the gateway never enriches)")
        return v

    @field_validator("expect_urls")
    @classmethod
    def _expect_urls(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for partner, urls in v.items():
            for url in urls:
                if not url.startswith("http://"):
                    raise ValueError(f"expect_urls '{partner}': '{url}' must be http://")
        return v

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"'{v}': the webhook must be an http:// or https:// URL")
        return v


class NumberVerificationSection(_Section):
    # docs/numberverify.md. issuer: the public https URL partners reach the web listener
    # by (OIDC `iss`, discovery); "" derives it from each request's scheme://host.
    issuer: str = Field(default="", pattern=r"^(https?://[^?#]+[^/?#])?$")
    rate_limit: int = Field(default=6000, ge=0)  # API calls a minute per client; 0: none


class WebSection(_Section):
    """The public pages: checker, /me, Number Verification, JWKS, /healthz. Nothing here
    changes the gateway; the control plane is [admin]."""

    listen: str = "127.0.0.1:8080"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        listener_address(v)
        return v


# ---- [admin]: the control plane (admin API, /metrics), apart from the public pages
ADMIN_SOCKET = "admin.sock"  # default: <state_dir>/admin.sock, mode 0600
UNIX_PREFIX = "unix:"
# sun_path is 108 bytes on Linux, one of them the terminating NUL (unix(7)).
MAX_UNIX_PATH = 107
# A Bearer token anyone could guess is no guard; 128 bits of randomness is what
# `openssl rand -hex 16` gives (RFC 6750 §5.2: tokens must not be guessable).
MIN_ADMIN_TOKEN = 16


class AdminSection(_Section):
    # "" : the Unix socket <state_dir>/admin.sock (0600: its file mode is the guard);
    # "unix:PATH": another socket path; "host:port": TCP, which requires admin_token.
    listen: str = ""
    admin_token: str = ""
    admin_token_file: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v.startswith(UNIX_PREFIX):
            if not v[len(UNIX_PREFIX):]:
                raise ValueError("'unix:' needs a socket path, e.g. \"unix:/run/lw/admin.sock\"")
        elif v:
            listener_address(v)
        return v


@dataclass(frozen=True)
class AdminAddress:
    """Where one process's admin listener is: a Unix socket path, or TCP host and port."""

    path: Path | None
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"http://{_url_host(self.host)}:{self.port}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ConfigModel(_Section):
    state_dir: str = ".linewarden"
    proxy: ProxySection = ProxySection()
    identity: IdentitySection = IdentitySection()
    strip: StripSection = StripSection()
    policy: PolicySection = PolicySection()
    bindings: list[BindingEntry] = []
    ledger: LedgerSection = LedgerSection()
    store: StoreSection = StoreSection()
    web: WebSection = WebSection()
    admin: AdminSection = AdminSection()
    radius: RadiusSection | None = None  # no section: no RADIUS listener
    profiles: ProfilesSection | None = None  # no section: no subscriber profiles
    canary: CanarySection | None = None  # no section: no canary
    signing: SigningSection = SigningSection()
    numberverify: NumberVerificationSection = NumberVerificationSection()
    partners: list[Any] = []  # validated by policy/load.py, which knows partners


@dataclass
class Config:
    model: ConfigModel
    path: str  # the file read, or DEMO_NAME
    base: Path  # relative paths in the file are relative to its directory
    policy: Policy

    @property
    def proxy(self) -> ProxySection:
        return self.model.proxy

    @property
    def web(self) -> WebSection:
        return self.model.web

    @property
    def admin(self) -> AdminSection:
        return self.model.admin

    def admin_address(self, worker: int = 0) -> AdminAddress:
        """Worker 0's admin listener, or worker K's: `admin-wK.sock` beside the socket, or
        the TCP port + K (each worker reports its own metrics there)."""
        listen = self.admin.listen
        if listen and not listen.startswith(UNIX_PREFIX):
            host, port = listener_address(listen)
            return AdminAddress(None, host, port + worker)
        path = self.resolve_path(listen[len(UNIX_PREFIX):]) if listen \
            else self.state_dir / ADMIN_SOCKET
        if worker:
            path = path.with_name(f"{path.stem}-w{worker}{path.suffix}")
        return AdminAddress(path)

    def admin_token(self) -> str:
        """The admin API's Bearer token ("" when none is set)."""
        if self.admin.admin_token:
            return self.admin.admin_token
        return _read_secret("", self.admin.admin_token_file, self.base).decode()

    @property
    def ledger(self) -> LedgerSection:
        return self.model.ledger

    @property
    def state_dir(self) -> Path:
        return self.resolve_path(self.model.state_dir)

    @property
    def policy_path(self) -> str:
        """The file hot reload re-reads for partners."""
        if self.model.policy.file:
            return str(self.resolve_path(self.model.policy.file))
        return self.path

    def reload_policy(self) -> Policy:
        """Re-read the partners (from [policy] file, or from this config file).

        The file is read once, and an empty one is refused: that is what a reload sees
        between an editor's truncate and its write, and accepting it would drop every
        partner until the next reload. To run with no partners on
        purpose, say so in the file (`partners = []`)."""
        if self.path == DEMO_NAME:
            return self.policy
        path = self.policy_path
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(path, None, f"cannot read the policy: {exc.strerror}") from None
        if not raw.strip():
            raise ConfigError(path, None, "the policy file is empty (caught mid-write?); the "
                              "running policy stays", "write the file whole, e.g. to a "
                              "temporary file renamed over it; for no partners write "
                              "`partners = []`")
        data, smap = parse_toml(path, raw.decode("utf-8", "replace"))
        policy, _ = compile_policy(data, smap, policy_version(raw))
        return policy

    def resolve_path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base / path

    def ledger_key(self) -> bytes:
        return self._secret(self.ledger.key, self.ledger.key_file, LEDGER_FILE)

    def bindings(self) -> list[Binding]:
        return [Binding(ip=b.ip, msisdn=b.msisdn.lstrip("+"), attributes=dict(b.attributes))
                for b in self.model.bindings]

    def pseudonym_secret(self) -> bytes:
        ident = self.model.identity
        return self._secret(ident.pseudonym_secret, ident.pseudonym_secret_file,
                            PSEUDONYM_FILE)

    def _secret(self, inline: str, file: str, default_name: str) -> bytes:
        """Inline or from a file. Reads only: a secret the gateway keeps in the state dir
        is created by `wiring.generate_secrets` at start-up, never here."""
        if inline:
            return inline.encode()
        path = self.resolve_path(file) if file else self.state_dir / default_name
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            if file:
                raise ConfigError(self.path, None, f"secret file '{path}' not found",
                                  "create it or remove the *_file setting") from None
            raise ConfigError(self.path, None, f"'{path}' has not been generated yet",
                              "start the gateway once (`linewarden serve` creates it), or "
                              "import the shared secrets (`linewarden secrets import`)") \
                from None

    def secret_sources(self) -> dict[str, SecretSource]:
        """Where this config gets each shared secret (secrets.py names them in its
        messages, `secrets import` installs into the file one)."""
        ident, ledger = self.model.identity, self.ledger
        return {
            PSEUDONYM_SECRET: self._source("[identity] pseudonym_secret", ident.pseudonym_secret,
                                           ident.pseudonym_secret_file, PSEUDONYM_FILE),
            LEDGER_KEY: self._source("[ledger] key", ledger.key, ledger.key_file, LEDGER_FILE),
        }

    def _source(self, key: str, inline: str, file: str, default_name: str) -> SecretSource:
        if inline:
            return SecretSource(f"{key} in {self.path}", None, key, generated=False)
        if file:
            path = self.resolve_path(file)
            return SecretSource(f"{path} ({key}_file in {self.path})", path, key,
                                generated=False)
        path = self.state_dir / default_name
        return SecretSource(f"{path} (generated)", path, key, generated=True)


@dataclass(frozen=True)
class SecretSource:
    """Where a secret comes from: said in messages; `path` is None when it is inline."""

    description: str
    path: Path | None
    key: str  # the config key that would set it inline, e.g. "[ledger] key"
    generated: bool  # kept in the state dir, created by `wiring.generate_secrets`


def demo_text() -> str:
    return resources.files("linewarden").joinpath("demo.toml").read_text(encoding="utf-8")


def load_config(path: str | None = None) -> Config:
    """`path`, else ./linewarden.toml if present, else the embedded demo config."""
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    if path is None:
        data, smap = parse_toml(DEMO_NAME, demo_text())
        return _build(data, smap, Path.cwd(), demo_text().encode())
    data, smap = load_toml(path)
    return _build(data, smap, Path(path).resolve().parent, Path(path).read_bytes())


def _build(data: dict[str, Any], smap: SourceMap, base: Path, raw: bytes) -> Config:
    moved = _moved_keys(data, smap)
    if moved:
        raise ConfigErrors(moved)
    try:
        model = ConfigModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigErrors([_error(err, smap) for err in exc.errors()]) from None
    config = Config(model, smap.path, base, Policy((), "", smap.path))
    problems = _admin_problems(config, data, smap) + _listener_problems(config, smap)
    if problems:
        raise ConfigErrors(problems)
    if model.policy.file:
        config.policy, _ = load_policy(config.policy_path)
    else:
        config.policy, _ = compile_policy(data, smap, policy_version(raw))
    return config


def _error(err: Any, smap: SourceMap) -> ConfigError:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    if err.get("type") == "extra_forbidden":
        return smap.error(loc, f"unknown key '{key}'", "remove it or check its spelling")
    message = str(err["msg"]).removeprefix("Value error, ")
    return smap.error(loc, f"'{key}': {message}")


def _listener_problems(config: Config, smap: SourceMap) -> list[ConfigError]:
    """A PROXY protocol header names the client of a forward listener; an intercepting
    listener learns the destination from the kernel, and mixing the two would leave one of
    them unchecked."""
    proxy = config.proxy
    if proxy.trusted_proxies and proxy.mode != "forward":
        return [smap.error(("proxy", "trusted_proxies"),
                           f"trusted_proxies (PROXY protocol) is for mode = \"forward\"; "
                           f"this listener is mode = \"{proxy.mode}\"",
                           "remove trusted_proxies, or let the balancer send traffic to a "
                           "forward listener")]
    return []


def _moved_keys(data: dict[str, Any], smap: SourceMap) -> list[ConfigError]:
    """Keys that used to mean something else are refused by name, not silently moved:
    `[web] admin_token` opened the admin API on the public port to token holders."""
    web = data.get("web")
    if isinstance(web, dict) and "admin_token" in web:
        return [smap.error(("web", "admin_token"), "[web] admin_token is gone: the admin API "
                           "no longer listens on [web] listen",
                           "move it to [admin] admin_token (with [admin] listen = "
                           "\"host:port\" for remote callers), or delete it to use the "
                           "default 0600 Unix socket <state_dir>/admin.sock")]
    return []


def _admin_problems(config: Config, data: dict[str, Any], smap: SourceMap) -> list[ConfigError]:
    """The admin listener's own rules: TCP needs a token, a socket path must fit in
    sun_path, and no [proxy.resolve] entry may lead the proxy to the admin port."""
    admin = config.admin
    where = ("admin", "listen") if admin.listen else ("admin",)
    address = config.admin_address()
    if address.path is not None:
        if len(os.fsencode(address.path)) > MAX_UNIX_PATH - len("-w64"):
            return [smap.error(where, f"the admin socket path {address.path} is too long for a "
                               f"Unix socket ({MAX_UNIX_PATH} bytes, with room for "
                               "'-wN' worker suffixes)",
                               "set [admin] listen = \"unix:/run/linewarden/admin.sock\" "
                               "(or a shorter state_dir)")]
        return []
    problems: list[ConfigError] = []
    try:
        token = config.admin_token()
    except ValueError as exc:
        return [smap.error(("admin", "admin_token_file"), str(exc))]
    if not token:
        problems.append(smap.error(where, f"[admin] listen = \"{admin.listen}\" is TCP, and "
                                   "a TCP admin API needs a token (no address is trusted)",
                                   "set [admin] admin_token_file = \"admin.token\" (e.g. "
                                   "`openssl rand -hex 32 > admin.token`), or remove listen "
                                   "to use the 0600 Unix socket <state_dir>/admin.sock"))
    elif len(token) < MIN_ADMIN_TOKEN:
        problems.append(smap.error(("admin", "admin_token_file" if admin.admin_token_file
                                    else "admin_token"),
                                   f"the admin token is {len(token)} characters; at least "
                                   f"{MIN_ADMIN_TOKEN} are needed",
                                   "use `openssl rand -hex 32`"))
    resolve = data.get("proxy", {}).get("resolve", {})
    for name, target in resolve.items() if isinstance(resolve, dict) else ():
        if _reaches(str(target), address):
            problems.append(smap.error(
                ("proxy", "resolve", name),
                f"[proxy.resolve] '{name}' = '{target}' leads the proxy to the admin listener "
                f"({address})" + ("" if _has_port(str(target)) else
                                  ": without a port it reaches every port of that address"),
                "map the host to another address, give it a port other than the admin "
                "port, or move [admin] listen"))
    return problems


def _has_port(target: str) -> bool:
    return target.count(":") == 1 or "]:" in target


def _reaches(target: str, admin: AdminAddress) -> bool:
    """Would a request to a host mapped to `target` connect to the admin TCP listener?"""
    if _has_port(target):
        host, port = listener_address(target)
        if port != admin.port:
            return False
    else:
        host = target.strip("[]")
    try:
        to, at = ipaddress.ip_address(host), ipaddress.ip_address(admin.host)
    except ValueError:
        return False
    # A wildcard bind answers on every local address; loopback is the one a map names.
    return to == at or (at.is_unspecified and (to.is_loopback or to.is_unspecified))
