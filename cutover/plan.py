"""The Plan: one typed description of a cutover, loaded from YAML once and passed down explicitly.

Relative paths in a plan (CA bundles, ledger, inventory, secret ``file:`` references) are resolved against
the directory of the plan file, so a plan directory can be moved as a whole.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cutover.errors import PlanError, SecretError
from cutover.secrets import SCHEMES, Secret, SecretRef, parse_ref, resolve


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ref(value: str) -> str:
    try:
        parse_ref(value)
    except SecretError as exc:
        raise ValueError(str(exc)) from None
    return value


class Endpoint(_Model):
    """A TCP service: host, port and TLS mode. The certificate is verified against ``host``."""

    host: str
    port: int = Field(ge=1, le=65535)
    tls: Literal["implicit", "starttls"] = "implicit"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Auth(_Model):
    """How pec-cutover logs in: each member's password, or an admin/master user (SASL PLAIN with authzid)."""

    mode: Literal["password", "master"] = "password"
    master_user: str | None = None
    master_secret: str | None = None

    _ref = field_validator("master_secret")(lambda v: v if v is None else _check_ref(v))

    @model_validator(mode="after")
    def _master_needs_credentials(self) -> "Auth":
        if self.mode == "master" and not (self.master_user and self.master_secret):
            raise ValueError("mode: master needs master_user and master_secret (a secret reference)")
        return self


class Webmail(_Model):
    """A webmail URL to probe and what a healthy login page looks like."""

    url: str
    expect_status: int = 200
    markers: list[str] = Field(default_factory=lambda: ["<form"])
    max_response_ms: int = Field(default=3000, gt=0)
    attempts: int = Field(default=3, ge=1)
    attempt_interval_s: float = Field(default=1.0, ge=0)
    min_successes: int | None = Field(default=None, ge=1, description="attempts that must pass; empty: a majority")

    @property
    def needed_successes(self) -> int:
        """Attempts that must pass for an aspect to be ok (``min_successes``, else a majority)."""
        return min(self.min_successes or self.attempts // 2 + 1, self.attempts)

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError("webmail url must start with https:// (TLS is always verified)")
        return v


class MxRecord(_Model):
    preference: int = Field(ge=0, le=65535)
    host: str

    @field_validator("host")
    @classmethod
    def _fqdn(cls, v: str) -> str:
        v = v.strip().lower()
        return v if v.endswith(".") else v + "."

    def __str__(self) -> str:
        return f"{self.preference} {self.host}"


def _fqdn(value: str) -> str:
    value = value.strip().lower()
    if not value or " " in value or "." not in value.rstrip("."):
        raise ValueError(f"{value!r} is not a host name")
    return value if value.endswith(".") else value + "."


class SrvTarget(_Model):
    """Where an RFC 6186 / RFC 8314 SRV record sends mail clients: host and port (priority, weight)."""

    host: str
    port: int = Field(ge=1, le=65535)
    priority: int = Field(default=0, ge=0, le=65535)
    weight: int = Field(default=1, ge=0, le=65535)

    _host = field_validator("host")(lambda v: _fqdn(v))

    def rdata(self) -> str:
        return f"{self.priority} {self.weight} {self.port} {self.host}"


class WebmailAlias(_Model):
    """A name under the zone (default ``webmail``) that is a CNAME of the provider's webmail host."""

    name: str = "webmail"
    target: str

    _target = field_validator("target")(lambda v: _fqdn(v))

    @field_validator("name")
    @classmethod
    def _label(cls, v: str) -> str:
        v = v.strip().lower().rstrip(".")
        if not v or " " in v or v.startswith("_"):
            raise ValueError(f"{v!r} is not a name under the zone (write e.g. webmail)")
        return v


class DnsRecords(_Model):
    """Records of the domain that follow the provider, besides the MX; each optional.

    ``spf`` is the zone apex's SPF TXT string (other TXT strings at the apex are kept), ``imaps`` and
    ``submissions`` the RFC 6186/8314 SRV records ``_imaps._tcp`` / ``_submissions._tcp``, ``webmail`` a CNAME.
    A record one provider declares and the other does not is removed when switching to the other.
    """

    spf: str | None = None
    imaps: SrvTarget | None = None
    submissions: SrvTarget | None = None
    webmail: WebmailAlias | None = None

    @field_validator("spf")
    @classmethod
    def _spf(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = " ".join(v.split())
        if not v.startswith("v=spf1 "):
            raise ValueError("an SPF record starts with 'v=spf1 ' (e.g. 'v=spf1 include:_spf.example.it -all')")
        return v


class Provider(_Model):
    """One PEC provider (source or target): endpoints, MX set, records, auth mode, limits."""

    name: str
    imap: Endpoint
    smtp: Endpoint | None = None
    webmail: list[Webmail] = Field(default_factory=list)
    mx: list[MxRecord] = Field(min_length=1)
    records: DnsRecords = DnsRecords()
    auth: Auth = Auth()
    ca_bundle: Path | None = None
    max_connections: int = Field(default=4, ge=1, le=64,
                                 description="hard cap on IMAP sessions to this provider at once (process-wide, and "
                                             "per provider across flow runs through a Prefect concurrency limit)")
    timeout_s: float = Field(default=30.0, gt=0)
    max_message_bytes: int | None = Field(default=None, gt=0)
    max_messages_per_s: float | None = Field(default=None, gt=0, description="messages/s to or from this provider, all sessions")
    max_bytes_per_s: float | None = Field(default=None, gt=0, description="bytes/s to or from this provider, all sessions")

    @property
    def mx_set(self) -> frozenset[tuple[int, str]]:
        return frozenset((r.preference, r.host) for r in self.mx)


class DnsServer(_Model):
    name: str
    host: str
    port: int = Field(default=53, ge=1, le=65535)

    def __str__(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"


class Tsig(_Model):
    name: str
    algorithm: Literal["hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5"] = "hmac-sha256"
    secret: str

    _ref = field_validator("secret")(lambda v: _check_ref(v))


class Ttl(_Model):
    normal: int = Field(gt=0)
    cutover: int = Field(gt=0)
    restore_after: timedelta = Field(default=timedelta(days=7), ge=timedelta(0),
                                     description="after a GO, keep the cutover TTL this long (hypercare: a rollback "
                                                 "then propagates fast), then `dns ttl --restore`; 0: restore at GO")

    @model_validator(mode="after")
    def _lower(self) -> "Ttl":
        if self.cutover > self.normal:
            raise ValueError("cutover TTL must not be higher than the normal TTL")
        return self


class Dns(_Model):
    """The zone, who may change it (primary + TSIG) and who must agree afterwards."""

    zone: str
    primary: DnsServer
    tsig: Tsig
    authoritative: list[DnsServer] = Field(default_factory=list, description="empty: discover the zone's NS")
    resolvers: list[DnsServer] = Field(default_factory=list)
    ttl: Ttl
    timeout_s: float = Field(default=2.0, gt=0)
    propagation_deadline_s: float = Field(default=600, gt=0)
    poll_interval_s: float = Field(default=2.0, gt=0)
    expect_a: dict[str, list[str]] = Field(default_factory=dict)
    ansible_inventory: Path | None = None

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return v.strip().lower().rstrip(".")


class ClientLogin(_Model):
    """How a client logs in at one provider: user name (empty: the address) and a secret reference."""

    user: str | None = None
    secret: str

    _ref = field_validator("secret")(lambda v: _check_ref(v))


class ClientAccount(_Model):
    """A PEC mailbox the organisation's own systems use (read over IMAP, send through a relay), per provider.

    InfoCert Legalmail clients log in with the InfoCert user ID, Aruba with the address: ``user`` differs.
    """

    address: str
    source: ClientLogin
    target: ClientLogin

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        v = v.strip().lower()
        local, at, domain = v.partition("@")
        if not (local and at and "." in domain):
            raise ValueError(f"{v!r} is not a mail address")
        return v

    def login(self, side: Literal["source", "target"]) -> ClientLogin:
        return self.source if side == "source" else self.target

    def user(self, side: Literal["source", "target"]) -> str:
        return self.login(side).user or self.address


class Clients(_Model):
    """The organisation's own PEC clients: the Ansible group the ``pec_client`` role is applied to, and the
    accounts its hosts name (``account:`` in their host vars)."""

    group: str = "pec_clients"
    accounts: dict[str, ClientAccount] = Field(min_length=1)
    verify_timeout_s: float = Field(default=90, gt=0, description="per client: relay delivery, reader's poll")

    @field_validator("group")
    @classmethod
    def _group(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c == "_" for c in v):
            raise ValueError(f"{v!r} is not an Ansible group name (letters, digits, underscores)")
        return v


class FanOut(_Model):
    """Copy on the workers of a Prefect work pool (several machines): the parent run splits the mailboxes into chunks
    and runs each as a run of the chunk deployment, on whatever worker is online (``docs/scale-out.md``)."""

    deployment: str = Field(default="copy chunk/copy-chunk", description="flow/deployment of the chunk runs")
    chunk_mailboxes: int = Field(default=50, ge=1, le=10_000, description="mailboxes per chunk run")
    stale_after_s: float = Field(default=60.0, gt=0, description="a chunk run Prefect shows alive whose lease in the "
                                 "ledger has been free this long is taken as dead (its machine gone): run again")
    pending_after_s: float = Field(default=300.0, gt=0, description="a chunk run a worker took but never started "
                                   "for this long (the worker's machine gone) is run again")
    attempts: int = Field(default=3, ge=1, le=10, description="runs of one chunk before its mailboxes count failed")
    poll_s: float = Field(default=2.0, gt=0, le=60)


class Copy(_Model):
    fan_out: FanOut | None = Field(default=None, description="copy on a work pool's workers (needs ledger: {url: ...})")
    batch_messages: int = Field(default=100, ge=1)
    batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    mailboxes_in_parallel: int = Field(default=4, ge=1, le=64)
    folder_map: dict[str, str] = Field(default_factory=dict, description="source folder name -> target folder name")
    retries: int = Field(default=3, ge=0, le=20)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    throttle_retries: int = Field(default=6, ge=0, le=30, description="retries after a 'too many / slow down' answer")
    throttle_backoff_s: float = Field(default=2.0, ge=0, description="first wait after a throttle answer (doubles, jittered)")
    throttle_backoff_max_s: float = Field(default=60.0, ge=0, description="longest single wait after a throttle answer")
    verify: Literal["readback", "size"] = Field(
        default="readback",
        description="readback: read every appended message back from the target and compare SHA-256; "
                    "size: trust APPENDUID and RFC822.SIZE (faster, weaker)")


class Gates(_Model):
    """Thresholds the gate rules apply; see checks/gates.py."""

    on_nogo: Literal["rollback", "ask"] = "ask"
    min_authoritative_fraction: float = Field(default=1.0, ge=0, le=1)
    min_resolver_fraction: float = Field(default=1.0, ge=0, le=1)
    webmail_all_green: bool = True
    min_canary_fraction: float = Field(default=1.0, ge=0, le=1)
    max_unverified_mailboxes: int = Field(default=0, ge=0)
    max_missing_messages: int = Field(default=0, ge=0)
    cert_min_days: int = Field(default=14, ge=0)
    pause_timeout_s: int = Field(default=3600, gt=0)


# Phases of the cutover day with an expected duration (minutes); the report flags a phase that overruns.
PHASE_MINUTES = {"freeze": 5.0, "switch": 5.0, "dns": 20.0, "final_delta": 60.0, "access": 15.0, "complete": 5.0,
                 "rollback": 60.0}


class Window(_Model):
    """The freeze window. Naive datetimes are read in the plan's timezone."""

    start: datetime
    end: datetime
    abort_at: datetime | None = Field(default=None, description="a gate still waiting for a human from this moment "
                                      "on is decided by on_close (default: the window end)")
    on_close: Literal["rollback", "continue"] = Field(default="rollback", description="what a gate waiting for a "
                                                      "human does when the window closes (recorded 'window closed')")
    phase_minutes: dict[str, float] = Field(default_factory=lambda: dict(PHASE_MINUTES),
                                            description="expected minutes per phase; the report says which overran")

    @model_validator(mode="after")
    def _ordered(self) -> "Window":
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window start and end need a timezone (the loader adds the plan's)")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end.isoformat()} is not after start {self.start.isoformat()}")
        if self.abort_at is not None and not self.start < self.abort_at <= self.end:
            raise ValueError(f"abort_at {self.abort_at.isoformat()} must be inside the window (after start, "
                             "at the latest its end)")
        return self

    @field_validator("phase_minutes")
    @classmethod
    def _known_phases(cls, v: dict[str, float]) -> dict[str, float]:
        if unknown := sorted(set(v) - set(PHASE_MINUTES)):
            raise ValueError(f"unknown phase(s) {', '.join(unknown)}; known: {', '.join(PHASE_MINUTES)}")
        if bad := sorted(k for k, m in v.items() if not m > 0):
            raise ValueError(f"phase minutes must be > 0: {', '.join(bad)}")
        return {**PHASE_MINUTES, **v}

    @property
    def closes_at(self) -> datetime:
        """When a gate may no longer wait for a human: ``abort_at`` if set, else the window end."""
        return self.abort_at or self.end

    def contains(self, when: datetime) -> bool:
        return self.start <= when < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


class SandboxWan(_Model):
    """A WAN between this machine and both sandbox IMAP servers (a userspace proxy: ``cutover.sandbox._wan``)."""

    rtt_ms: float = Field(default=0.0, ge=0, le=10_000, description="round-trip time the link adds")
    bandwidth_kbps: float | None = Field(default=None, gt=0, description="per connection and direction")
    cut_after_bytes: int | None = Field(default=None, gt=0, description="drop every connection after this many bytes")


class SandboxSettings(_Model):
    """Where the sandbox keeps its state and the ports of what the plan does not name already."""

    state_dir: Path
    webmail_port: int = Field(default=10443, ge=1, le=65535)
    secondary_port: int | None = None
    relay_port: int | None = Field(default=None, ge=1, le=65535,
                                   description="the PEC clients' Postfix relay (runs when the plan has clients)")
    mta_ports: list[int] = Field(default_factory=list, description="source, target: where each provider's "
                                 "submission service hands mail on (delivered to its Dovecot by LMTP)")
    max_userip_connections: dict[Literal["source", "target"], int] = Field(
        default_factory=dict, description="make a provider strict: its Dovecot's mail_max_userip_connections "
                                          "(sessions per member and IP; Dovecot's default is 10)")
    wan: SandboxWan | None = Field(default=None, description="put a WAN proxy (RTT, bandwidth, cuts) in front of "
                                                             "both IMAP servers; they then listen on their port + 1")
    postgres_port: int | None = Field(default=None, ge=1, le=65535,
                                      description="run the sandbox's PostgreSQL (the shared ledger and the Prefect "
                                                  "server's database of a distributed run) on this loopback port")


NotifyEvent = Literal["gate-paused", "run-failed", "go", "rollback-started", "rollback-ended", "phase-overrun"]


class Webhook(_Model):
    """A chat or incident webhook (Slack, Teams, a generic JSON receiver). Its URL is a secret reference: whoever
    has it can post to the channel."""

    name: str = Field(min_length=1)
    url: str

    _ref = field_validator("url")(_check_ref)


class Notify(_Model):
    """Who is told what, as it happens. Deliveries are retried and recorded in the run's report (never the URL)."""

    webhooks: list[Webhook] = Field(default_factory=list)
    events: list[NotifyEvent] = Field(default_factory=lambda: ["gate-paused", "run-failed", "go", "rollback-started",
                                                               "rollback-ended", "phase-overrun"])
    attempts: int = Field(default=3, ge=1, le=10)
    timeout_s: float = Field(default=5.0, gt=0)


class Operator(_Model):
    """A person who may answer a gate or start a rollback by hand: a name and the reference of a TOTP secret
    (base32, as an authenticator app takes it). Decisions carry a one-time code, never the secret."""

    name: str = Field(min_length=2)
    totp_secret: str

    _ref = field_validator("totp_secret")(_check_ref)


class PrefectServer(_Model):
    """The long-running Prefect server of the day (``pec-cutover server start``): locked by basic auth."""

    host: str = "127.0.0.1"
    port: int = Field(default=4200, ge=1, le=65535)
    auth: str | None = Field(default=None, description="reference to the basic-auth string 'user:password'")

    _ref = field_validator("auth")(lambda v: v if v is None else _check_ref(v))

    @property
    def api_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api"


class Plan(_Model):
    """A whole cutover. Load with :func:`load_plan`."""

    name: str
    domain: str
    timezone: str = "Europe/Rome"
    window: Window
    source: Provider
    target: Provider
    dns: Dns
    copy_: Copy = Field(default=Copy(), alias="copy")
    gates: Gates = Gates()
    ledger: Path  # the SQLite ledger; with ledger_url, only its directory is used (the run's local state)
    ledger_url: str | None = Field(default=None, description="reference to a postgresql:// URL: the ledger every "
                                   "worker shares (written ledger: {url: ...})")
    inventory: Path
    reports_dir: Path | None = None
    clients: Clients | None = None
    sandbox: SandboxSettings | None = None
    prefect: PrefectServer = PrefectServer()
    operators: list[Operator] = Field(default_factory=list)
    notify: Notify = Notify()
    rollback_until: datetime | None = Field(
        default=None, description="after this moment a rollback needs --override REASON; empty: the MX switch to "
                                  "the target + 7 days (Aruba drops a domain whose MX left it after about 7 days)")
    base_dir: Path = Field(default=Path("."), exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _ledger_ref = field_validator("ledger_url")(lambda v: v if v is None else _check_ref(v))

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        v = v.strip().lower().rstrip(".")
        if "." not in v or " " in v:
            raise ValueError(f"{v!r} is not a domain name")
        return v

    @field_validator("operators")
    @classmethod
    def _unique_operators(cls, v: list[Operator]) -> list[Operator]:
        names = [o.name.casefold() for o in v]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"operator names must be unique; repeated: {', '.join(dupes)}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}; use an IANA name such as Europe/Rome") from None
        return v

    @property
    def copy_settings(self) -> Copy:
        return self.copy_

    def provider(self, side: Literal["source", "target"]) -> Provider:
        return self.source if side == "source" else self.target

    def secret(self, reference: str) -> Secret:
        """Resolve a secret reference written in this plan (relative files against the plan directory)."""
        return resolve(parse_ref(reference, base_dir=self.base_dir))

    def secret_ref(self, reference: str) -> SecretRef:
        return parse_ref(reference, base_dir=self.base_dir)

    def summary(self) -> list[tuple[str, str]]:
        """Key facts for ``plan check`` and reports (never secret values)."""
        return [
            ("plan", self.name),
            ("domain", self.domain),
            ("window", f"{self.window.start.isoformat()} → {self.window.end.isoformat()} ({self.timezone})"),
            ("source", f"{self.source.name}: IMAP {self.source.imap}, MX {', '.join(map(str, self.source.mx))}"),
            ("target", f"{self.target.name}: IMAP {self.target.imap}, MX {', '.join(map(str, self.target.mx))}"),
            ("auth", f"source {self.source.auth.mode}, target {self.target.auth.mode}"),
            ("dns", f"zone {self.dns.zone}, primary {self.dns.primary}, {len(self.dns.authoritative) or 'discovered'} authoritative, {len(self.dns.resolvers)} resolvers"),
            ("ttl", f"normal {self.dns.ttl.normal}s, cutover {self.dns.ttl.cutover}s"),
            ("copy", f"{self.copy_.mailboxes_in_parallel} mailboxes in parallel, batches of {self.copy_.batch_messages}"),
            ("records", ", ".join(k for k in ("spf", "imaps", "submissions", "webmail")
                                  if any(getattr(self.provider(s).records, k) is not None
                                         for s in ("source", "target"))) or "MX only"),
            ("clients", f"group {self.clients.group}, accounts {', '.join(self.clients.accounts)}" if self.clients
             else "none"),
            ("gates", f"on NO-GO: {self.gates.on_nogo}"),
            ("rollback until", self.rollback_until.isoformat() if self.rollback_until else
             "the MX switch to the target + 7 days"),
            ("ledger", f"PostgreSQL, url {self.ledger_url} (local state in {self.ledger.parent})" if self.ledger_url
             else str(self.ledger)),
            ("inventory", str(self.inventory)),
        ]


_PATH_FIELDS = (
    ("ledger",),
    ("inventory",),
    ("reports_dir",),
    ("source", "ca_bundle"),
    ("target", "ca_bundle"),
    ("dns", "ansible_inventory"),
    ("sandbox", "state_dir"),
)


def load_plan(path: str | Path) -> Plan:
    """Read, validate and return a plan; any problem raises :class:`PlanError` naming file, field and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(path, ["file not found; pass the path of a plan YAML (see inventory/rehearsal/plan.yaml)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(path, [f"cannot be read: {exc}"]) from None
    return parse_plan(text, path)


def parse_plan(text: str, path: Path) -> Plan:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError(path, [f"{where}not valid YAML ({problem})"]) from None
    if not isinstance(data, dict):
        raise PlanError(path, ["expected a mapping of plan fields at the top (name, domain, window, ...)"])
    base_dir = path.resolve().parent
    tz_name = data.get("timezone", "Europe/Rome")
    problems = _localise_window(data, tz_name)
    _localise(data, "rollback_until", tz_name)
    if problems:
        raise PlanError(path, [f"line {_line_of(node, ('window', key))}: window.{key}: {msg}" for key, msg in problems])
    ledger_problem = _ledger_forms(data)
    if ledger_problem:
        raise PlanError(path, [f"line {_line_of(node, ('ledger',))}: ledger: {ledger_problem}"])
    for field_path in _PATH_FIELDS:
        _resolve_path(data, field_path, base_dir)
    data["base_dir"] = base_dir
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(path, [_describe(err, node) for err in exc.errors()]) from None
    problems = _cross_checks(plan, node)
    if problems:
        raise PlanError(path, problems)
    return plan


def _cross_checks(plan: Plan, node: yaml.Node | None) -> list[str]:
    """Rules that span fields, reported like field errors (line and field of the first field involved)."""
    problems = []
    spf = {side: plan.provider(side).records.spf for side in ("source", "target")}
    if (spf["source"] is None) != (spf["target"] is None):
        side = "source" if spf["source"] is not None else "target"
        line = _line_of(node, (side, "records", "spf"))
        problems.append(f"line {line}: {side}.records.spf: declared for one provider only; declare the SPF of both "
                        "(the zone keeps exactly one SPF record, switched with the MX) or of neither")
    if plan.rollback_until is not None and plan.rollback_until <= plan.window.end:
        line = _line_of(node, ("rollback_until",))
        problems.append(f"line {line}: rollback_until: {plan.rollback_until.isoformat()} is not after the window end "
                        f"({plan.window.end.isoformat()}): the day itself could not roll back; give a later moment "
                        "(at the latest the switch + 7 days) or leave it out")
    if plan.copy_.fan_out is not None and not plan.ledger_url:
        problems.append(f"line {_line_of(node, ('copy', 'fan_out'))}: copy.fan_out: workers on other machines cannot "
                        "share a SQLite file; give the PostgreSQL ledger (ledger: {url: <secret reference>})")
    names = {plan.provider(side).records.webmail.name for side in ("source", "target")
             if plan.provider(side).records.webmail is not None}
    if len(names) > 1:
        line = _line_of(node, ("target", "records", "webmail", "name"))
        problems.append(f"line {line}: target.records.webmail.name: the providers' webmail aliases have different "
                        f"names ({', '.join(sorted(names))}); use one name, its CNAME target follows the provider")
    return problems


_RELATIVE_DAY = re.compile(r"^today(?:\s*([+-])\s*(\d+)\s*d)?$")


def _localise_window(data: dict[str, Any], tz_name: str, now: datetime | None = None) -> list[tuple[str, str]]:
    """Give naive window times the plan's timezone; resolve ``today``/``today-1d``/``today+2d`` (midnight in the
    plan's timezone, a sandbox plan only, so a rehearsal window never expires). Returns (key, problem) pairs."""
    window = data.get("window")
    if not isinstance(window, dict):
        return []
    try:
        tz = ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError):
        return []  # the timezone validator reports it
    problems: list[tuple[str, str]] = []
    for key in ("start", "end", "abort_at"):
        value = window.get(key)
        if isinstance(value, str):
            relative = _RELATIVE_DAY.match(value.strip())
            if relative is not None:
                if not isinstance(data.get("sandbox"), dict):
                    problems.append((key, f"{value!r} is a window relative to today, for sandbox plans only; "
                                          "a production plan names its window (e.g. 2026-12-12T20:00:00)"))
                    continue
                sign, days = relative.groups()
                today = (now or datetime.now(tz)).astimezone(tz).date()
                offset = int(days or 0) * (-1 if sign == "-" else 1)
                window[key] = datetime.combine(today + timedelta(days=offset), datetime.min.time(), tzinfo=tz)
                continue
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                continue  # pydantic reports the bad datetime with its line
        if isinstance(value, datetime) and value.tzinfo is None:
            window[key] = value.replace(tzinfo=tz)
        elif isinstance(value, datetime):
            window[key] = value
    return problems


def _localise(data: dict[str, Any], key: str, tz_name: str) -> None:
    """A naive top-level datetime (or ISO string) is read in the plan's timezone."""
    value = data.get(key)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return  # pydantic reports the bad datetime with its line
    if isinstance(value, datetime):
        try:
            data[key] = value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(str(tz_name)))
        except (ZoneInfoNotFoundError, ValueError):
            return  # the timezone validator reports it


def _ledger_forms(data: dict[str, Any]) -> str | None:
    """``ledger: PATH`` (SQLite) stays as it is; ``ledger: {url: REF[, state_dir: DIR]}`` becomes ``ledger_url`` plus
    a local ``ledger`` path in ``state_dir`` (default ``state``, next to the plan) whose directory keeps what stays
    on the machine that runs the day (freeze marker, DNS journal). Returns a problem, or None."""
    form = data.get("ledger")
    if not isinstance(form, dict):
        return None
    unknown = sorted(set(map(str, form)) - {"url", "state_dir", "path"})
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}; write ledger: PATH (SQLite) or ledger: {{url: env:NAME}} (PostgreSQL)"
    if "url" not in form:
        if isinstance(form.get("path"), str):
            data["ledger"] = form["path"]
            return None
        return "a mapping needs url (a secret reference to a postgresql:// URL), or write ledger: PATH (SQLite)"
    if not isinstance(form["url"], str):
        return "url must be a secret reference (env:NAME, file:PATH, prefect:BLOCK), never the URL itself"
    if "state_dir" in form and not isinstance(form["state_dir"], str):
        return "state_dir must be a path"
    data["ledger_url"] = form["url"]
    data["ledger"] = str(Path(str(form.get("state_dir", "state"))) / "ledger.sqlite")
    return None


def _resolve_path(data: dict[str, Any], field_path: tuple[str, ...], base_dir: Path) -> None:
    holder: Any = data
    for key in field_path[:-1]:
        holder = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(holder, dict) and isinstance(holder.get(field_path[-1]), str):
        p = Path(holder[field_path[-1]]).expanduser()
        holder[field_path[-1]] = p if p.is_absolute() else (base_dir / p).resolve()


def _describe(err: dict[str, Any], root: yaml.Node | None) -> str:
    loc = [str(x) for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-"))]
    field = ".".join(loc) or "(top level)"
    line = _line_of(root, err["loc"])
    if loc and loc[0] == "ledger_url":  # written ledger: {url: ...}
        field, line = "ledger.url", _line_of(root, ("ledger", "url"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "extra_forbidden" and tuple(err["loc"]) == ("dns", "expect_txt"):
        msg = ("no longer a plan field: each provider declares its records (source.records.spf, "
               "target.records.spf, ...), switched with the MX and checked in both directions")
    elif err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; see inventory/rehearsal/plan.yaml for the fields)"
    where = f"line {line}: " if line else ""
    return f"{where}{field}: {msg}"


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree; return the deepest line found."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
            if nxt is None:
                # 'copy' is aliased; a missing field points at its parent mapping
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
        line = node.start_mark.line + 1
    return line


__all__ = ["Plan", "Provider", "Endpoint", "Auth", "Webmail", "MxRecord", "DnsRecords", "SrvTarget", "WebmailAlias",
           "Clients", "ClientAccount", "ClientLogin", "Dns", "DnsServer", "Tsig", "Ttl", "Copy",
           "Gates", "Window", "SandboxSettings", "load_plan", "parse_plan", "SCHEMES"]
