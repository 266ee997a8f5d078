"""Write a complete sandbox environment (plan, mailbox list, Ansible inventory) on any ports.

``write_environment(dir, base_port=10000, mailboxes=8)`` reproduces ``inventory/rehearsal/`` except for
where the state lives (``dir/.sandbox``); tests and benchmarks use other base ports to run side by side.
``surroundings=True`` adds what moves with the MX (the rehearsal has it): each provider's records and SMTP
submission service, the sandbox MTA behind them, and the organisation's PEC clients (a Postfix relay and a
reader, hosts of the ``pec_clients`` Ansible group, with their account's logins).
"""

from __future__ import annotations

import socket

import csv
from dataclasses import dataclass
from pathlib import Path


_FIRST = ["mario", "giulia", "luca", "francesca", "marco", "chiara", "andrea", "sara", "paolo", "elena",
          "giuseppe", "anna", "roberto", "laura", "stefano", "valentina", "alessandro", "martina", "davide", "silvia"]
_LAST = ["rossi", "bianchi", "ferrari", "russo", "romano", "colombo", "ricci", "marino", "greco", "bruno",
         "gallo", "conti", "deluca", "mancini", "costa", "giordano", "rizzo", "lombardi", "moretti", "barbieri"]


@dataclass(frozen=True)
class SandboxPorts:
    """The ports of one sandbox environment, all offsets of ``base_port``."""

    aruba_imaps: int
    infocert_imaps: int
    infocert_submission: int
    ns1: int
    ns2: int
    resolver: int
    webmail: int
    # Surroundings. Offsets end in 6-9 and 0, unlike the ones above (3-5): sandboxes on bases 10 apart never
    # share a port.
    aruba_smtp: int = 0
    infocert_smtp: int = 0
    aruba_mta: int = 0
    infocert_mta: int = 0
    relay: int = 0

    @classmethod
    def from_base(cls, base_port: int) -> "SandboxPorts":
        return cls(base_port + 993, base_port + 1993, base_port + 1587, base_port + 53, base_port + 54, base_port + 55,
                   base_port + 443, base_port + 466, base_port + 1467, base_port + 468, base_port + 1469,
                   base_port + 2460)


@dataclass(frozen=True)
class Environment:
    """Paths of a written environment."""

    directory: Path
    plan: Path
    mailboxes: Path
    hosts: Path
    state_dir: Path
    ports: SandboxPorts


def mailbox_locals(count: int) -> list[str]:
    """Deterministic member names: the rehearsal's eight first, then more combinations."""
    names = [f"{_FIRST[i]}.{_LAST[i]}" for i in range(len(_FIRST))]
    i = 0
    while len(names) < count:
        names.append(f"{_FIRST[i % len(_FIRST)]}.{_LAST[(i * 7 + 3) % len(_LAST)]}{i // len(_FIRST) + 2}")
        i += 1
    return names[:count]


CLIENT_ACCOUNT = "protocollo"
INFOCERT_USER_ID = "ic-0012345"  # stands for the InfoCert user ID Legalmail mail clients log in with


def _surroundings(ports: SandboxPorts, state: str, domain: str) -> dict[str, str]:
    """The plan fragments of the surroundings (empty strings: the plain sandbox)."""
    return {
        "source": f"""  smtp: {{host: localhost, port: {ports.aruba_smtp}, tls: implicit}}
  # Records that follow the provider besides the MX (the sandbox's SPF stands for the one Aruba publishes).
  records:
    spf: "v=spf1 include:_spf.aruba.pec-sandbox.invalid -all"
    imaps: {{host: imaps.pec.aruba.it., port: 993}}
    submissions: {{host: smtps.pec.aruba.it., port: 465}}
    webmail: {{name: webmail, target: webmail.pec.it.}}
""",
        "target": f"""  smtp: {{host: localhost, port: {ports.infocert_smtp}, tls: implicit}}
  records:
    spf: "v=spf1 include:_spf-legalmail.infocert.it -all"
    imaps: {{host: mbox.cert.legalmail.it., port: 993}}
    submissions: {{host: sendm.cert.legalmail.it., port: 465}}
    webmail: {{name: webmail, target: webmail.infocert.it.}}
""",
        "clients": f"""
# The organisation's own PEC clients (hosts of the pec_clients group in hosts.yml), switched after the DNS gate.
clients:
  group: pec_clients
  accounts:
    {CLIENT_ACCOUNT}:
      address: {CLIENT_ACCOUNT}@{domain}
      source: {{secret: "file:{state}/secrets/clients/aruba-{CLIENT_ACCOUNT}"}}
      target: {{user: {INFOCERT_USER_ID}, secret: "file:{state}/secrets/clients/infocert-{CLIENT_ACCOUNT}"}}
  verify_timeout_s: 60
""",
        "sandbox": f"""  relay_port: {ports.relay}
  mta_ports: [{ports.aruba_mta}, {ports.infocert_mta}]
""",
    }


def plan_text(*, ports: SandboxPorts, state: str, window: tuple[str, str], domain: str = "pec.fnofi.it",
              name: str = "rehearsal", surroundings: bool = False) -> str:
    extra = _surroundings(ports, state, domain) if surroundings else {k: "" for k in ("source", "target", "clients",
                                                                                     "sandbox")}
    # Without the surroundings the target still has its submission service, with STARTTLS (as port 587): the
    # access checks log in to it; with them both providers' SMTP is implicit TLS and relays to the sandbox MTA.
    extra["target_smtp"] = ("" if surroundings else
                            f"  smtp: {{host: 127.0.0.1, port: {ports.infocert_submission}, tls: starttls}}\n")
    return f"""# Sandbox plan: real servers on 127.0.0.1 (see `pec-cutover sandbox up`). Generated by write_environment.
# Relative paths are resolved against this file's directory. No secret values live here: only references.
name: {name}
domain: {domain}
timezone: Europe/Rome
# Relative to the day the plan is loaded (sandbox plans only): a rehearsal or test run is always inside it.
window:
  start: {window[0]}
  end: {window[1]}

source:
  name: aruba
  imap: {{host: 127.0.0.1, port: {ports.aruba_imaps}, tls: implicit}}
  mx:
    - {{preference: 10, host: mx.pec.aruba.it.}}
{extra["source"]}  auth: {{mode: password}}
  ca_bundle: {state}/ca/ca.pem
  max_connections: 8

target:
  name: infocert
  imap: {{host: 127.0.0.1, port: {ports.infocert_imaps}, tls: implicit}}
{extra["target_smtp"]}  webmail:
    - url: https://127.0.0.1:{ports.webmail}/
      expect_status: 200
      markers: ["<form", "Legalmail"]
      max_response_ms: 2000
      attempts: 3
      attempt_interval_s: 0.2
  mx:
    - {{preference: 10, host: mx.cert.legalmail.it.}}
{extra["target"]}  auth: {{mode: password}}
  ca_bundle: {state}/ca/ca.pem
  max_connections: 8

dns:
  zone: {domain}
  primary: {{name: ns1, host: 127.0.0.1, port: {ports.ns1}}}
  tsig: {{name: pec-cutover, algorithm: hmac-sha256, secret: "file:{state}/secrets/tsig.key"}}
  authoritative:
    - {{name: ns1, host: 127.0.0.1, port: {ports.ns1}}}
    - {{name: ns2, host: 127.0.0.1, port: {ports.ns2}}}
  resolvers:
    - {{name: unbound, host: 127.0.0.1, port: {ports.resolver}}}
  ttl: {{normal: 10, cutover: 2}}
  timeout_s: 1.0
  propagation_deadline_s: 60
  poll_interval_s: 0.5
  ansible_inventory: hosts.yml

copy:
  batch_messages: 100
  mailboxes_in_parallel: 4

gates:
  on_nogo: ask
  min_resolver_fraction: 1.0
  min_canary_fraction: 1.0
  max_unverified_mailboxes: 0
  max_missing_messages: 0
  cert_min_days: 14
  pause_timeout_s: 3600

ledger: {state}/state/ledger.sqlite
inventory: mailboxes.csv
reports_dir: {state}/reports
{extra["clients"]}
sandbox:
  state_dir: {state}
  webmail_port: {ports.webmail}
  secondary_port: {ports.ns2}
{extra["sandbox"]}"""


def hosts_text(*, ports: SandboxPorts, state: str, domain: str = "pec.fnofi.it", surroundings: bool = False) -> str:
    text = f"""# Ansible inventory of a sandbox environment: the DNS primary is driven locally (one TSIG-signed update per
# change: playbooks/library/pec_rrsets.py). The TSIG secret is not here: tsig_key_secret_file points at it (mode 600).
all:
  hosts:
    ns1:
      ansible_connection: local
      ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
      dns_zone: {domain}
      dns_server: 127.0.0.1
      dns_port: {ports.ns1}
      tsig_key_name: pec-cutover
      tsig_key_algorithm: hmac-sha256
      tsig_key_secret_file: "{{{{ inventory_dir }}}}/{state}/secrets/tsig.key"
"""
    if surroundings:
        text += clients_hosts_text(ports=ports, state=state)
    return text


def clients_hosts_text(*, ports: SandboxPorts, state: str) -> str:
    """The ``pec_clients`` group of a sandbox inventory: the sandbox's reader and Postfix relay, reached as local
    hosts with their own paths (a real inventory names the organisation's servers; see docs/runbook.md)."""
    root = f"{{{{ inventory_dir }}}}/{state}/clients"
    return f"""  children:
    # The organisation's own PEC clients: the pec_client role points them at a provider (playbooks/pec_clients.yml).
    # No secret here: each names an account of the plan's clients section, whose logins are secret references.
    pec_clients:
      hosts:
        protocollo:
          ansible_connection: local
          ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
          pec_client_apps:
            - name: protocollo
              account: {CLIENT_ACCOUNT}
              config: "{root}/protocollo/pec.ini"
              status_file: "{root}/protocollo/status.json"
        relay:
          ansible_connection: local
          ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
          pec_client_relay:
            account: {CLIENT_ACCOUNT}
            config_directory: "{root}/relay"
            listen: "127.0.0.1:{ports.relay}"
            maillog: "{root}/relay/maillog"
"""


def infocert_user_id(i: int) -> str:
    """An InfoCert-style User ID (``IC`` and seven digits) for the ``i``-th member: Legalmail's mail clients log
    in with it, not with the PEC address, so every sandbox environment does too."""
    return f"IC{4_200_001 + i * 37:07d}"


def write_mailboxes_csv(path: Path, locals_: list[str], *, state: str, domain: str, canaries: int = 2) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["address", "source_secret", "target_secret", "canary", "notes", "source_login",
                         "target_login"])
        for i, local in enumerate(locals_):
            writer.writerow([f"{local}@{domain}", f"file:{state}/secrets/aruba/{local}",
                             f"file:{state}/secrets/infocert/{local}", "yes" if i < canaries else "no", "",
                             "", infocert_user_id(i)])


def write_environment(directory: str | Path, *, base_port: int = 10000, mailboxes: int = 8,
                      window: tuple[str, str] = ("today-1d", "today+2d"),
                      domain: str = "pec.fnofi.it", state_dir: str = ".sandbox",
                      surroundings: bool = False) -> Environment:
    """Write plan.yaml, mailboxes.csv and hosts.yml into ``directory``; state under ``directory/state_dir``.
    ``surroundings``: with the records, SMTP services and PEC clients that move with the MX."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ports = SandboxPorts.from_base(base_port)
    paths = Environment(directory, directory / "plan.yaml", directory / "mailboxes.csv", directory / "hosts.yml",
                        (directory / state_dir).resolve(), ports)
    paths.plan.write_text(plan_text(ports=ports, state=state_dir, window=window, domain=domain,
                                    surroundings=surroundings), encoding="utf-8")
    write_mailboxes_csv(paths.mailboxes, mailbox_locals(mailboxes), state=state_dir, domain=domain)
    paths.hosts.write_text(hosts_text(ports=ports, state=state_dir, domain=domain, surroundings=surroundings),
                           encoding="utf-8")
    return paths


def free_base_port(first: int, offsets: tuple[int, ...] = (53, 54, 55), *, step: int = 10, tries: int = 50) -> int:
    """The first base port from ``first`` (in ``step``s) whose ports ``base + offset`` are all free on 127.0.0.1
    for both UDP and TCP: for sandboxes started beside others (tests, benchmarks)."""
    for base in range(first, first + step * tries, step):
        try:
            for offset in offsets:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as probe:
                        probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no free sandbox ports from {first} (offsets {offsets})")
