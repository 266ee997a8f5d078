"""The :class:`Sandbox`: real servers on 127.0.0.1 for a plan, all state under ``plan.sandbox.state_dir``."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
import signal
import ssl
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Protocol, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rdatatype
from cryptography import x509
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from cutover.dnsrecords import txt_rdata, wanted_records
from cutover.errors import SandboxError, SecretError
from cutover.operators import new_secret
from cutover.plan import Plan
from cutover.sandbox import _dns, _relay, _wan, _webmail
from cutover.sandbox._ca import CertKind, SandboxCA
from cutover.sandbox._dovecot import DovecotInstance, DovecotPaths, ensure_mail_user
from cutover.sandbox._imap import open_as
from cutover.sandbox._postgres import SandboxPostgres
from cutover.sandbox._process import (children_of, has_exited, pid_matches, port_in_use, port_open, read_pid,
                                      signal_pid, spawn, stop_pid, tail, wait_until)
from cutover.sandbox._users import PasswdEntry, new_password, ssha512, ssha512_matches, write_secret_file
from cutover.secrets import SecretRef, parse_ref, resolve

SERVICE_NAMES = ("aruba", "infocert", "ns1", "ns2", "resolver", "webmail")  # what every sandbox runs
# The surroundings, run only when the plan asks for them: "mta" when the providers have an smtp endpoint and
# sandbox.mta_ports, "relay" with sandbox.relay_port, "reader" with a clients section, "wan" (a latency proxy in
# front of both Dovecots) with sandbox.wan or after `sandbox up --rtt-ms` (see Sandbox.services), "postgres" (the
# shared ledger and the Prefect server's database of a distributed run) with sandbox.postgres_port.
OPTIONAL_SERVICES = ("mta", "relay", "reader", "wan", "postgres")
_ALL_SERVICES = SERVICE_NAMES + OPTIONAL_SERVICES
READER_APP = "protocollo"  # the sandbox's reader stands for the federation's document-management system
Side = Literal["source", "target", "aruba", "infocert"]
ADMIN_USER = "sandbox-admin"
START_TIMEOUT_S = 20.0  # generous: a loaded 2-core CI machine can take seconds to start a daemon
STOP_TIMEOUT_S = 10.0  # then SIGKILL
PORT_FREE_TIMEOUT_S = 5.0  # after our processes are gone, for the kernel to drop the listening socket


class MailboxLike(Protocol):
    """What the sandbox needs of an inventory mailbox (``cutover.inventory.Mailbox`` fits)."""

    address: str
    source_secret: SecretRef | str | None
    target_secret: SecretRef | str | None
    # optional: ``login(side)`` -> the name the member logs in with on that side (else the address)


def _login_of(mailbox: MailboxLike, side: Literal["source", "target"]) -> str:
    login = getattr(mailbox, "login", None)
    return login(side) if callable(login) else mailbox.address


@dataclass(frozen=True)
class ServiceStatus:
    """One sandbox service as observed now (``running`` = our process alive and its port answering)."""

    name: str
    kind: str
    port: int | None  # None: a service without a port (the reader)
    pid: int | None
    running: bool
    detail: str = ""


@dataclass(frozen=True)
class _Service:
    name: str
    kind: str
    program: str
    port: int | None
    config: Path
    log: Path
    pid_file: Path
    argv: tuple[str, ...]


def _side_key(side: str) -> Literal["source", "target"]:
    if side in ("source", "aruba"):
        return "source"
    if side in ("target", "infocert"):
        return "target"
    raise SandboxError(f"unknown side {side!r}; use source/aruba or target/infocert")


def _local_port(endpoint, tls: str) -> int | None:
    """The port of a plan endpoint served on this machine with TLS mode ``tls``, else None."""
    if endpoint is None or endpoint.host not in ("127.0.0.1", "localhost") or endpoint.tls != tls:
        return None
    return endpoint.port


class Sandbox:
    """Starts, stops and changes the sandbox servers described by ``plan`` (see docs/design.md, The sandbox)."""

    def __init__(self, plan: Plan) -> None:
        if plan.sandbox is None:
            raise SandboxError(f"plan {plan.name!r} has no 'sandbox:' section (state_dir, webmail_port); "
                               "only a rehearsal plan can drive the sandbox")
        self.plan = plan
        self.state_dir = Path(plan.sandbox.state_dir)
        self.ca = SandboxCA(self.state_dir / "ca")
        self.logs = self.state_dir / "logs"
        self.run_dir = self.state_dir / "run"
        self.ports = self._ports(plan)
        self._logins: dict[tuple[str, str], str] = {}  # (side, address) -> login name on that side
        # A WAN proxy on the plan's IMAP ports, the Dovecots behind it (see _wan): from the plan, or left by
        # `sandbox up --rtt-ms` (its settings file lives until `sandbox down`).
        self.wan = _wan.link_for(plan, self.state_dir)
        behind = _wan.BEHIND_OFFSET if self.wan is not None else 0
        good = self.ca.server_pair("good")
        submission = {"aruba": plan.source.smtp, "infocert": plan.target.smtp}
        self.dovecots = {
            name: DovecotInstance(
                name, self.ports[name] + behind,
                DovecotPaths(self.state_dir / "dovecot" / name, self.state_dir / "mail" / name, self.logs / f"{name}.log"),
                good.cert, good.key,
                # the plan's SMTP endpoint on this machine is served by this Dovecot's submission service, implicit
                # TLS or STARTTLS as the endpoint says; it relays to the sandbox MTA when the plan runs one
                submission_port=_local_port(submission[name], "implicit"),
                starttls_port=_local_port(submission[name], "starttls"),
                relay_port=self.ports.get(f"{name}-mta"))
            for name in ("aruba", "infocert")
        }
        self.postgres = (SandboxPostgres(self.state_dir / "postgres", plan.sandbox.postgres_port)
                         if plan.sandbox.postgres_port else None)
        for side, limit in (plan.sandbox.max_userip_connections or {}).items():
            self.dovecots["aruba" if side == "source" else "infocert"].max_userip_connections = limit

    # ----- layout -------------------------------------------------------------------------------
    @staticmethod
    def _ports(plan: Plan) -> dict[str, int]:
        primary = plan.dns.primary
        secondary = plan.sandbox.secondary_port if plan.sandbox else None
        if secondary is None:
            others = [s.port for s in plan.dns.authoritative if (s.host, s.port) != (primary.host, primary.port)]
            if not others:
                raise SandboxError("the plan names no secondary: add a second dns.authoritative server "
                                   "or sandbox.secondary_port")
            secondary = others[0]
        if not plan.dns.resolvers:
            raise SandboxError("the plan names no dns.resolvers; the sandbox runs one (unbound) on that port")
        ports = {
            "aruba": plan.source.imap.port,
            "infocert": plan.target.imap.port,
            "ns1": primary.port,
            "ns2": secondary,
            "resolver": plan.dns.resolvers[0].port,
            "webmail": plan.sandbox.webmail_port if plan.sandbox else 10443,
        }
        settings = plan.sandbox
        if settings is not None and settings.mta_ports:
            # Each provider's submission service (its plan smtp endpoint) relays to the sandbox MTA, which
            # delivers to that provider's Dovecot.
            if len(settings.mta_ports) != 2 or plan.source.smtp is None or plan.target.smtp is None:
                raise SandboxError("sandbox.mta_ports needs two ports (source, target) and an smtp endpoint for "
                                   "both providers (their submission services)")
            ports.update({"aruba-submission": plan.source.smtp.port, "infocert-submission": plan.target.smtp.port,
                          "aruba-mta": settings.mta_ports[0], "infocert-mta": settings.mta_ports[1],
                          "mta": settings.mta_ports[0]})
        if settings is not None and settings.relay_port is not None:
            ports["relay"] = settings.relay_port
        if settings is not None and settings.postgres_port is not None:
            ports["postgres"] = settings.postgres_port
        return ports

    @property
    def services(self) -> list[str]:
        """The services this plan's sandbox runs (the optional ones only when the plan configures them)."""
        active = {"mta": "mta" in self.ports, "relay": "relay" in self.ports, "reader": self.plan.clients is not None,
                  "wan": self.wan is not None, "postgres": self.postgres is not None}
        return [n for n in _ALL_SERVICES if n not in OPTIONAL_SERVICES or active[n]]

    @property
    def clients_dir(self) -> Path:
        """Where the sandbox's PEC clients keep their configuration (the inventory's ``pec_clients`` hosts)."""
        return self.state_dir / "clients"

    @property
    def relay_dir(self) -> Path:
        """The relay's Postfix config directory (``postfix -c``)."""
        return self.clients_dir / "relay"

    @property
    def reader_config(self) -> Path:
        return self.clients_dir / READER_APP / "pec.ini"

    @property
    def reader_status(self) -> Path:
        return self.clients_dir / READER_APP / "status.json"

    @property
    def ca_file(self) -> Path:
        """The CA bundle clients must trust to reach the sandbox."""
        return self.ca.ca_cert_path

    def _dns_dir(self, name: str) -> Path:
        return self.state_dir / "dns" / name

    def _webmail_dir(self) -> Path:
        return self.state_dir / "webmail"

    def _service(self, name: str) -> _Service:
        pid_file = self.run_dir / f"{name}.pid"
        if name in self.dovecots:
            d = self.dovecots[name]
            return _Service(name, "imap", "dovecot", d.port, d.paths.config, d.paths.log, pid_file, tuple(d.argv()))
        if name in ("ns1", "ns2"):
            conf = self._dns_dir(name) / "named.conf"
            return _Service(name, "dns-authoritative", "named", self.ports[name], conf, self.logs / f"{name}.log",
                            pid_file, ("/usr/sbin/named", "-g", "-n", "1", "-4", "-c", str(conf)))
        if name == "resolver":
            conf = self._dns_dir("resolver") / "unbound.conf"
            return _Service(name, "dns-resolver", "unbound", self.ports[name], conf, self.logs / "resolver.log",
                            pid_file, ("/usr/sbin/unbound", "-d", "-c", str(conf)))
        if name == "webmail":
            conf = self._webmail_dir() / "nginx.conf"
            return _Service(name, "https", "nginx", self.ports[name], conf, self.logs / "webmail.log", pid_file,
                            ("/usr/sbin/nginx", "-e", str(self.logs / "webmail-error.log"),
                             "-p", str(self._webmail_dir()), "-c", str(conf)))
        if name in OPTIONAL_SERVICES and name not in self.services:
            raise SandboxError(f"sandbox service {name!r} is not configured by plan {self.plan.name!r} "
                               "(sandbox.mta_ports / sandbox.relay_port / clients / sandbox.wan or "
                               "`sandbox up --rtt-ms`)")
        if name == "wan":
            return _Service(name, "wan-proxy", "cutover.sandbox._wan", self.wan.routes[0].listen_port,
                            self.wan.config_file, self.logs / "wan.log", pid_file,
                            (sys.executable, "-m", "cutover.sandbox._wan", str(self.wan.config_file)))
        if name == "postgres" and self.postgres is not None:
            pg = self.postgres
            return _Service(name, "postgresql", "postgres", pg.port, pg.data, pg.log, pg.pid_file, tuple(pg.argv()))
        if name == "mta":
            conf = self.state_dir / "mta" / "mta.json"
            return _Service(name, "smtp", "cutover.sandbox._mta", self.ports["mta"], conf, self.logs / "mta.log",
                            pid_file, (sys.executable, "-m", "cutover.sandbox._mta", str(conf)))
        if name == "relay":
            return _Service(name, "smtp-relay", _relay.MASTER, self.ports["relay"], self.relay_dir,
                            self.logs / "relay.log", pid_file, tuple(_relay.argv(self.relay_dir)))
        if name == "reader":
            return _Service(name, "imap-reader", "cutover.sandbox._reader", None, self.reader_config,
                            self.logs / "reader.log", pid_file,
                            (sys.executable, "-m", "cutover.sandbox._reader", str(self.reader_config),
                             str(self.reader_status)))
        raise SandboxError(f"unknown sandbox service {name!r}; known: {', '.join(_ALL_SERVICES)}")

    def _names(self, services: Iterable[str] | None) -> list[str]:
        names = self.services if services is None else list(services)
        for n in names:
            self._service(n)  # validates the name
        return [n for n in _ALL_SERVICES if n in names]

    # ----- state and secrets --------------------------------------------------------------------
    def _prepare_state(self) -> None:
        for d in (self.state_dir, self.logs, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._check_traversable(self.state_dir)
        self.ca.ensure()
        ensure_mail_user()

    @staticmethod
    def _check_traversable(path: Path) -> None:
        # Dovecot's mail processes, its login processes and nginx workers are unprivileged users and
        # must be able to walk down to their files.
        for d in [path.resolve(), *path.resolve().parents]:
            if not d.stat().st_mode & stat.S_IXOTH:
                raise SandboxError(f"directory {d} is not traversable by unprivileged users (the mail user, nginx); "
                                   f"run: chmod o+x {d} (or choose a sandbox.state_dir elsewhere)")

    def _ref(self, reference: SecretRef | str, base_dir: Path) -> SecretRef:
        return reference if isinstance(reference, SecretRef) else parse_ref(reference, base_dir=base_dir)

    def _get_or_create_secret(self, ref: SecretRef, make) -> str:
        """Read a secret; a missing ``file:`` secret is created (mode 600) with ``make()``."""
        if ref.scheme == "file" and not Path(ref.target).exists():
            write_secret_file(Path(ref.target), make())
        try:
            return resolve(ref).reveal()
        except SecretError as exc:
            raise SandboxError(f"sandbox cannot use secret {ref}: {exc}") from None

    def _control_secrets(self) -> None:
        """The Prefect server's auth string and each operator's TOTP secret the plan references, made if missing
        (a rehearsal locks its Prefect server and plays named operators, as on the day)."""
        if self.plan.prefect.auth:
            self._get_or_create_secret(self.plan.secret_ref(self.plan.prefect.auth),
                                       lambda: f"pec-cutover:{secrets.token_urlsafe(24)}")
        for operator in self.plan.operators:
            self._get_or_create_secret(self.plan.secret_ref(operator.totp_secret), new_secret)

    def _tsig_secret(self) -> str:
        ref = self.plan.secret_ref(self.plan.dns.tsig.secret)
        return self._get_or_create_secret(ref, lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    def _admin_password(self) -> str:
        ref = SecretRef("file", str(self.state_dir / "secrets" / "sandbox-admin"))
        return self._get_or_create_secret(ref, new_password)

    def _write_masters(self, name: str) -> None:
        """Master users of one Dovecot: the sandbox's own admin plus the plan's master user if any."""
        d = self.dovecots[name]
        entries = d.masters.entries()
        wanted = {ADMIN_USER: self._admin_password()}
        auth = self.plan.provider(_side_key(name)).auth
        if auth.mode == "master" and auth.master_user and auth.master_secret:
            wanted[auth.master_user] = self._get_or_create_secret(self.plan.secret_ref(auth.master_secret), new_password)
        new = {u: e for u, e in entries.items() if u in wanted}
        for user, password in wanted.items():
            if user not in new or not ssha512_matches(new[user].password_hash, password):
                new[user] = PasswdEntry(user, ssha512(password))
        if new != entries:
            d.masters.write(new)

    # ----- configuration ------------------------------------------------------------------------
    def _zone_data(self) -> _dns.ZoneData:
        # The zone starts as the source provider publishes it: its MX and the records that follow it.
        ttl = self.plan.dns.ttl.normal
        records = tuple(f"{r.name} {ttl} IN {r.rdtype} {txt_rdata(r.value) if r.kind == 'spf' else r.value}"
                        for r in wanted_records(self.plan, "source") if r.value is not None)
        return _dns.ZoneData(self.plan.dns.zone, sorted(self.plan.source.mx_set), ttl,
                             self.plan.dns.tsig.name, self.plan.dns.tsig.algorithm, records)

    def _write_config(self, name: str, *, held: bool = False) -> None:
        if name in self.dovecots:
            self.dovecots[name].write_config()
            self._write_masters(name)
        elif name == "ns1":
            directory = self._dns_dir("ns1")
            data = self._zone_data()
            _dns.write_named(directory, _dns.primary_config(directory, self.ports["ns1"], self.ports["ns2"], data,
                                                            self._tsig_secret()))
            zone_file = directory / f"{data.zone}.zone"
            if not zone_file.exists():  # later changes live in the zone + journal; never overwrite them
                zone_file.write_text(_dns.zone_file_text(data), encoding="utf-8")
        elif name == "ns2":
            directory = self._dns_dir("ns2")
            primary_port = _dns.DEAD_PRIMARY_PORT if held else self.ports["ns1"]
            _dns.write_named(directory, _dns.secondary_config(directory, self.ports["ns2"], primary_port,
                                                              self._zone_data(), self._tsig_secret()))
        elif name == "resolver":
            directory = self._dns_dir("resolver")
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "unbound.conf").write_text(_dns.unbound_config(
                directory, self.ports["resolver"], self.plan.dns.zone, [self.ports["ns1"], self.ports["ns2"]]))
        elif name == "wan" and self.wan is not None:
            self.wan.write_config()
        elif name == "webmail":
            directory = self._webmail_dir()
            _webmail.write_nginx(directory, self.ports["webmail"], self.logs)
            if not (directory / "current.pem").exists():
                pair = self.ca.server_pair("good")
                _webmail.install_cert(directory, pair.cert, pair.key)
        elif name == "mta":
            config = self.state_dir / "mta" / "mta.json"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(json.dumps({"log": str(self.logs / "mta-deliveries.log"), "listeners": [
                {"name": n, "port": self.ports[f"{n}-mta"], "lmtp": str(self.dovecots[n].paths.base_dir / "lmtp"),
                 "mailboxes": self._alias_map(n)}
                for n in ("aruba", "infocert")]}), encoding="utf-8")
            # Each provider's MX host names -> its MTA listener: where mail that follows the MX is delivered.
            self.mx_listeners_file.write_text(json.dumps({
                mx.host: {"provider": n, "port": self.ports[f"{n}-mta"]}
                for n, side in (("aruba", "source"), ("infocert", "target")) for mx in self.plan.provider(side).mx
            }, indent=2), encoding="utf-8")
        elif name == "relay":
            _relay.prepare(self.relay_dir, self.ports["relay"])
        elif name == "postgres" and self.postgres is not None:
            self.postgres.prepare()
        elif name == "reader":
            # The reader's settings are the pec_client role's to write; the sandbox only makes room for them.
            self.reader_config.parent.mkdir(parents=True, exist_ok=True)

    @property
    def mx_listeners_file(self) -> Path:
        """JSON ``{MX host name: {"provider", "port"}}``: each provider's MX served by its sandbox MTA listener."""
        return self.state_dir / "mta" / "mx-listeners.json"

    def _alias_map(self, name: str) -> dict[str, str]:
        """Members whose mailbox on this provider is named other than their address (InfoCert user IDs)."""
        side = _side_key(name)
        try:
            from cutover.inventory import load_inventory
            members = [mb.address for mb in load_inventory(self.plan)]
        except Exception:  # noqa: BLE001 - no (valid) inventory: mailboxes are named by address
            return {}
        names = {address.lower(): self.login_name(side, address).lower() for address in members}
        return {address: login for address, login in names.items() if login != address}

    # ----- lifecycle ----------------------------------------------------------------------------
    def _pid(self, svc: _Service) -> int | None:
        pid = read_pid(svc.pid_file)
        return pid if pid is not None and pid_matches(pid, svc.program, svc.config) else None

    def _healthy(self, svc: _Service) -> bool:
        return self._pid(svc) is not None and (svc.port is None or port_open(svc.port))

    def _logs_of(self, svc: _Service) -> str:
        logs = [svc.log] + ([self.logs / "webmail-error.log"] if svc.name == "webmail" else [])
        return "; ".join(f"{log} (last lines: {tail(log, 3) or 'empty'})" for log in logs)

    def _spawn(self, name: str) -> tuple[_Service, int]:
        """Start ``name``'s daemon once its port is free; returns it with the new process's own pid."""
        svc = self._service(name)
        if svc.port is not None and self._pid(svc) is None and (port_in_use(svc.port) or port_open(svc.port)):
            raise SandboxError(f"cannot start sandbox {name}: port 127.0.0.1:{svc.port} is taken by a process the "
                               "sandbox did not start; stop it or change the port in the plan")
        return svc, spawn(list(svc.argv), log_file=svc.log, pid_file=svc.pid_file)

    def _await(self, svc: _Service, pid: int) -> None:
        """Wait until ``pid`` (the process just spawned, never an older one) is ours and answers on its port."""
        def healthy() -> bool:
            return (read_pid(svc.pid_file) == pid and pid_matches(pid, svc.program, svc.config)
                    and (svc.port is None or port_open(svc.port)))

        # Not pid_matches for "exited": right after exec, /proc/<pid>/cmdline can still be empty for a moment.
        wait_until(lambda: healthy() or has_exited(pid), timeout=START_TIMEOUT_S)
        if healthy():
            return
        why = "exited" if has_exited(pid) else f"is not answering after {START_TIMEOUT_S:.0f}s"
        where = f" on 127.0.0.1:{svc.port}" if svc.port is not None else ""
        raise SandboxError(f"sandbox {svc.name} did not come up{where}: process {pid} {why}; "
                           f"read {self._logs_of(svc)}")

    def up(self, services: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Start the named services (default: all); healthy running ones are left alone. Idempotent."""
        names = self._names(services)
        self._prepare_state()
        self._control_secrets()
        todo = [n for n in names if not self._healthy(self._service(n))]
        for n in todo:
            self._stop(n)  # a half-dead instance of ours (alive, port closed) is replaced
            self._write_config(n)
        started: list[str] = []
        try:
            # ns2 transfers from ns1 at start and the resolver asks both: start them after ns1 answers.
            for group in ([n for n in todo if n not in ("ns2", "resolver")], [n for n in todo if n in ("ns2", "resolver")]):
                spawned = []
                for n in group:
                    spawned.append(self._spawn(n))
                    started.append(n)
                for svc, pid in spawned:
                    self._await(svc, pid)
            if "ns2" in todo:
                self._await_zone("ns2")
            if "postgres" in names and self.postgres is not None:
                self.postgres.start()  # running: only creates the ledger and prefect databases if missing
        except SandboxError:
            for n in reversed(started):  # leave things as we found them
                self._stop(n)
            raise
        return self.status(names)

    def down(self, services: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Stop the named services (default: all); only processes this sandbox started are signalled."""
        names = self._names(services)
        for n in reversed(names):
            self._stop(n)
        statuses = self.status(names)
        if services is None and self.wan is not None and self.plan.sandbox and self.plan.sandbox.wan is None:
            self.wan.forget()  # a WAN asked for by `sandbox up --rtt-ms` lasts until the sandbox is down
        return statuses

    def _stop(self, name: str) -> None:
        """Stop our process for ``name``; returns once it and its children have exited and its port is free."""
        if name == "postgres" and self.postgres is not None:
            self.postgres.stop()  # a fast shutdown (SIGINT): SIGTERM would wait for every client to leave
            return
        svc = self._service(name)
        pid = read_pid(svc.pid_file)
        ours = pid is not None and stop_pid(pid, svc.program, svc.config, timeout=STOP_TIMEOUT_S)
        svc.pid_file.unlink(missing_ok=True)
        if ours and svc.port is not None:
            # All our processes are gone, so their sockets are closed; wait for the kernel to agree (bounded:
            # a port held by someone else is reported by the next start).
            wait_until(lambda: not port_in_use(svc.port), timeout=PORT_FREE_TIMEOUT_S, interval=0.01)

    def start_service(self, name: str) -> ServiceStatus:
        return self.up([name])[0]

    def stop_service(self, name: str) -> ServiceStatus:
        return self.down([name])[0]

    def restart_service(self, name: str) -> ServiceStatus:
        self._stop(name)
        return self.start_service(name)

    def status(self, services: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Each service with its port, our pid (if alive) and whether it answers."""
        out = []
        for n in self._names(services):
            svc = self._service(n)
            pid = self._pid(svc)
            open_ = port_open(svc.port) if svc.port is not None else bool(pid)
            if pid and open_:
                detail = "up"
            elif pid:
                detail = f"process alive but 127.0.0.1:{svc.port} closed; see {svc.log}"
            elif open_:
                detail = f"port {svc.port} answered by a process the sandbox did not start"
            else:
                detail = "down"
            out.append(ServiceStatus(n, svc.kind, svc.port, pid, bool(pid and open_), detail))
        return out

    # ----- DNS helpers for tests of lagging secondaries -----------------------------------------
    def soa_serial(self, name: str) -> int | None:
        """The zone's SOA serial as served by ``ns1``/``ns2`` now, or None if it does not answer."""
        query = dns.message.make_query(self.plan.dns.zone, dns.rdatatype.SOA)
        try:
            answer = dns.query.udp(query, "127.0.0.1", port=self.ports[name], timeout=1.0)
        except (dns.exception.DNSException, OSError):
            return None
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return int(rrset[0].serial)
        return None

    def _await_zone(self, name: str, serial: int | None = None, timeout: float = START_TIMEOUT_S) -> None:
        def ready() -> bool:
            got = self.soa_serial(name)
            return got is not None and (serial is None or got == serial)
        if not wait_until(ready, timeout=timeout, interval=0.1):
            log = self._service(name).log
            raise SandboxError(f"sandbox {name} does not serve zone {self.plan.dns.zone}"
                               f"{f' at serial {serial}' if serial else ''} within {timeout:.0f}s; read {log}")

    def hold_secondary(self) -> None:
        """Make ns2 lag: restart it pointing at a dead primary, so it keeps serving its current copy."""
        self._stop("ns2")
        self._write_config("ns2", held=True)
        self._await(*self._spawn("ns2"))
        self._await_zone("ns2")

    def release_secondary(self, timeout: float = 15.0) -> None:
        """Reconnect ns2 to ns1 and wait until it serves ns1's serial."""
        self._stop("ns2")
        self._write_config("ns2")
        self._await(*self._spawn("ns2"))
        self._notify_secondary()
        target = self.soa_serial("ns1")
        self._await_zone("ns2", target, timeout=timeout)

    def _notify_secondary(self) -> None:
        # A NOTIFY from 127.0.0.1 makes ns2 check ns1 now instead of at its next refresh.
        msg = dns.message.make_query(self.plan.dns.zone, dns.rdatatype.SOA)
        msg.set_opcode(dns.opcode.NOTIFY)
        msg.flags |= dns.flags.AA
        try:
            dns.query.udp(msg, "127.0.0.1", port=self.ports["ns2"], timeout=1.0)
        except (dns.exception.DNSException, OSError):
            pass  # the refresh at start-up still comes, only later

    # ----- webmail ------------------------------------------------------------------------------
    def use_webmail_cert(self, kind: CertKind) -> None:
        """Serve the webmail with the good, an expired or a wrong-host certificate (reloads nginx)."""
        self.ca.ensure()
        pair = self.ca.server_pair(kind)
        directory = self._webmail_dir()
        directory.mkdir(parents=True, exist_ok=True)
        _webmail.install_cert(directory, pair.cert, pair.key)
        svc = self._service("webmail")
        pid = self._pid(svc)
        if pid is None:
            return  # takes effect at the next start
        expected = pair.cert.read_bytes()
        old_workers = children_of(pid)
        signal_pid(pid, signal.SIGHUP)
        # Old workers finish gracefully and may still accept a connection with the old certificate:
        # the switch is done when they are gone and the new certificate is served.
        if not wait_until(lambda: not (old_workers & children_of(pid)) and self._served_cert_is(expected),
                          timeout=10, interval=0.05):
            raise SandboxError(f"webmail did not switch to the {kind} certificate; read {self.logs / 'webmail-error.log'}")

    def _served_cert_is(self, pem: bytes) -> bool:
        try:
            served = ssl.get_server_certificate(("127.0.0.1", self.ports["webmail"]), timeout=1)
        except OSError:
            return False
        return x509.load_pem_x509_certificate(served.encode()) == x509.load_pem_x509_certificate(pem)

    # ----- users --------------------------------------------------------------------------------
    def _inventory_dir(self) -> Path:
        return Path(self.plan.inventory).parent

    def _member_password(self, side: Literal["source", "target"], mailbox: MailboxLike) -> str:
        reference = mailbox.source_secret if side == "source" else mailbox.target_secret
        if reference is None:
            name = "aruba" if side == "source" else "infocert"
            ref = SecretRef("file", str(self.state_dir / "secrets" / "generated" / name / mailbox.address))
        else:
            ref = self._ref(reference, self._inventory_dir())
        return self._get_or_create_secret(ref, new_password)

    def login_name(self, side: Side, address: str) -> str:
        """The user name ``address`` has on one Dovecot: its inventory login on that side (InfoCert-style User
        IDs on the target), else the address."""
        key = _side_key(side)
        if (key, address) not in self._logins:
            try:
                from cutover.inventory import load_inventory
                for mb in load_inventory(self.plan):
                    for k in ("source", "target"):
                        self._logins.setdefault((k, mb.address), mb.login(k))
            except Exception:  # noqa: BLE001 - no (valid) inventory: users are named by address
                pass
        return self._logins.get((key, address), address)

    def ensure_users(self, mailboxes: Iterable[MailboxLike]) -> int:
        """Create every mailbox on both Dovecots, named by its login on that side, with the password its secret
        holds (created if missing).

        Idempotent: users whose stored hash already matches are left alone. Returns how many entries changed.
        """
        self._prepare_state()
        boxes = list(mailboxes)
        changed = 0
        for name in ("aruba", "infocert"):
            d = self.dovecots[name]
            side = _side_key(name)
            if not d.paths.config.exists():
                d.write_config()
            self._write_masters(name)
            entries = d.users.entries()
            existed = bool(entries)
            changed_here = 0
            for mb in boxes:
                password = self._member_password(side, mb)
                self._logins[(side, mb.address)] = _login_of(mb, side)
                user = _login_of(mb, side).lower()  # Dovecot's auth_username_format %Lu: names are looked up lowercased
                entry = entries.get(user)
                if entry is None:
                    entries[user] = PasswdEntry(user, ssha512(password))
                    changed_here += 1
                elif not ssha512_matches(entry.password_hash, password):
                    entry.password_hash = ssha512(password)
                    changed_here += 1
            changed_here += self._ensure_client_accounts(side, entries, {mb.address for mb in boxes})
            if changed_here:
                d.users.write(entries, settle=existed)
            changed += changed_here
        return changed

    def _ensure_client_accounts(self, side: Literal["source", "target"], entries: dict[str, PasswdEntry],
                                members: set[str]) -> int:
        """The plan's PEC client accounts on one server, with the password their secret holds (created if missing).

        A login other than the address (InfoCert's user ID) is a second passwd-file line whose ``user=`` field
        makes Dovecot continue as the address, as the provider maps a user ID to its mailbox."""
        if self.plan.clients is None:
            return 0
        changed = 0
        for account in self.plan.clients.accounts.values():
            login = account.login(side)
            password = self._get_or_create_secret(self.plan.secret_ref(login.secret), new_password)
            wanted = [] if account.address in members else [(account.address, {})]
            if account.user(side).lower() != account.address:
                wanted.append((account.user(side).lower(), {"user": account.address}))
            for user, extra in wanted:
                entry = entries.get(user)
                if entry is None or entry.extra != extra or not ssha512_matches(entry.password_hash, password):
                    entries[user] = PasswdEntry(user, ssha512(password), dict(extra))
                    changed += 1
        return changed

    def client_login(self, side: Side, account: str) -> tuple[str, str]:
        """(login, password) of a plan client account on one provider (tests and the rehearsal log in with it)."""
        if self.plan.clients is None or account not in self.plan.clients.accounts:
            raise SandboxError(f"plan {self.plan.name!r} has no client account {account!r}")
        acct = self.plan.clients.accounts[account]
        key = _side_key(side)
        return acct.user(key), resolve(self.plan.secret_ref(acct.login(key).secret)).reveal()

    def set_password(self, side: Side, address: str, new_password: str, *, update_secret: bool = False) -> None:
        """Change a member's password on one server (as a member would mid-migration).

        The inventory's secret file keeps the old value unless ``update_secret`` is true.
        """
        name = "aruba" if _side_key(side) == "source" else "infocert"
        d = self.dovecots[name]
        user = self.login_name(side, address).lower()
        if user not in d.users.entries():
            raise SandboxError(f"{address} ({user}) does not exist on sandbox {name}")
        d.users.upsert(user, new_password)
        if update_secret:
            from cutover.inventory import load_inventory
            mb = load_inventory(self.plan).get(address)
            ref = mb.secret_for(_side_key(side))
            if ref is None or ref.scheme != "file":
                raise SandboxError(f"{address} has no file: secret for {name} to update")
            write_secret_file(Path(ref.target), new_password)

    def remove_user(self, side: Side, address: str) -> bool:
        """Delete a member and its mail from one server; False if it did not exist."""
        name = "aruba" if _side_key(side) == "source" else "infocert"
        d = self.dovecots[name]
        user = self.login_name(side, address).lower()
        existed = d.users.remove(user)
        d.delete_mail(user)
        return existed

    def set_quota(self, side: Side, address: str, storage_bytes: int | None) -> None:
        """Give a member a storage quota in bytes (None: back to the server default)."""
        name = "aruba" if _side_key(side) == "source" else "infocert"
        d = self.dovecots[name]
        user = self.login_name(side, address).lower()
        if user not in d.users.entries():
            raise SandboxError(f"{address} ({user}) does not exist on sandbox {name}")
        rule = None if storage_bytes is None else f"*:storage={int(storage_bytes)}B"
        d.users.upsert(user, None, userdb_quota_rule=rule)

    def set_max_message_size(self, side: Side, address: str, max_bytes: int | None) -> None:
        """Refuse (APPEND/delivery of) any message larger than ``max_bytes`` for one member (None: no limit).

        Dovecot's quota plugin (``quota_max_mail_size`` from the userdb) answers ``NO [LIMIT] Mail size is
        larger than the maximum size allowed by server configuration``; other members are not affected."""
        name = "aruba" if _side_key(side) == "source" else "infocert"
        d = self.dovecots[name]
        user = self.login_name(side, address).lower()
        if user not in d.users.entries():
            raise SandboxError(f"{address} ({user}) does not exist on sandbox {name}")
        d.users.upsert(user, None, userdb_quota_max_mail_size=None if max_bytes is None else str(int(max_bytes)))

    def set_imap_capability(self, side: Side, capabilities: Sequence[str] | None) -> None:
        """Tests only: make one Dovecot announce exactly ``capabilities`` after login (None: its own list
        again), e.g. without MULTIAPPEND; rewrites its config and restarts it (open sessions are cut)."""
        name = "aruba" if _side_key(side) == "source" else "infocert"
        self.dovecots[name].imap_capability = " ".join(capabilities) if capabilities is not None else None
        self._stop(name)
        self.up([name])

    def set_namespace(self, side: Side, prefix: str = "", separator: str = "/") -> None:
        """Give one Dovecot's personal namespace a prefix and separator (``"INBOX."``, ``"."``: Courier/Cyrus
        style, as many non-Dovecot providers); ``("", "/")`` is the default again. Restarts it."""
        name = "aruba" if _side_key(side) == "source" else "infocert"
        self.dovecots[name].namespace_prefix, self.dovecots[name].separator = prefix, separator
        self._stop(name)
        self.up([name])

    def set_special_use(self, side: Side, folders: dict[str, str] | None) -> None:
        """Tests only: the special-use folders one Dovecot declares, {name: flag} (None: the sandbox's own,
        ``Posta inviata`` \\Sent and ``Trash`` \\Trash); a declared folder shows its flag once it exists.
        Restarts it (open sessions are cut)."""
        from cutover.sandbox._dovecot import DEFAULT_SPECIAL_USE

        name = "aruba" if _side_key(side) == "source" else "infocert"
        self.dovecots[name].special_use = dict(folders if folders is not None else DEFAULT_SPECIAL_USE)
        self._stop(name)
        self.up([name])

    def set_connection_limit(self, side: Side, per_user: int | None) -> None:
        """Make one provider strict: at most ``per_user`` sessions per member and IP (Dovecot's
        ``mail_max_userip_connections``; None: the sandbox's lenient default). Restarts it."""
        name = "aruba" if _side_key(side) == "source" else "infocert"
        limits = self.plan.sandbox.max_userip_connections if self.plan.sandbox else {}
        self.dovecots[name].max_userip_connections = per_user or limits.get(_side_key(side), 200)
        self._stop(name)
        self.up([name])

    def admin_session(self, side: Side, address: str) -> IMAPClient:
        """An IMAPClient logged in as ``address`` through the sandbox admin master user (close it after use)."""
        name = "aruba" if _side_key(side) == "source" else "infocert"
        try:
            # straight to the Dovecot (behind the WAN proxy, when there is one): seeding is not what is measured
            return open_as("127.0.0.1", self.dovecots[name].port, self.ca_file, user=self.login_name(side, address), master=ADMIN_USER,
                           master_password=self._admin_password())
        except (IMAPClientError, OSError) as exc:
            raise SandboxError(f"sandbox {name}: cannot open a session for {address} "
                               f"({type(exc).__name__}); read {self.dovecots[name].paths.log}") from None

    def deliver(self, side: Side, address: str, raw: bytes, folder: str = "INBOX", flags: Sequence[str] = (),
                internaldate: dt.datetime | None = None) -> int | None:
        """Append a message as if it had just arrived; returns its UID (from APPENDUID) when known."""
        client = self.admin_session(side, address)
        try:
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=tuple(flags), msg_time=internaldate)
        finally:
            client.logout()
        match = re.search(rb"APPENDUID \d+ (\d+)", response if isinstance(response, bytes) else b"")
        return int(match.group(1)) if match else None
