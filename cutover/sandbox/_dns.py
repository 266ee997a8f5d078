"""BIND9 primary + secondary for the plan's zone, and the unbound caching resolver in front of them.

Config files that hold the TSIG secret are mode 600. Nothing notifies or listens beyond 127.0.0.1:
the primary notifies only the sandbox secondary (``notify explicit``), rndc is off (``controls { }``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

# A port nobody listens on: a held secondary asks it for updates and keeps serving its old copy.
DEAD_PRIMARY_PORT = 1


@dataclass(frozen=True)
class ZoneData:
    zone: str
    mx: list[tuple[int, str]]
    ttl: int
    tsig_name: str
    tsig_algorithm: str
    records: tuple[str, ...] = ()  # zone-file lines of the source's records (plan ``records:``), absolute names


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def initial_serial() -> int:
    return int(time.strftime("%Y%m%d")) * 100 + 1


def zone_file_text(data: ZoneData) -> str:
    z = data.zone
    mx = "\n".join(f"@\tIN\tMX\t{pref} {host}" for pref, host in data.mx)
    records = "".join(line + "\n" for line in data.records)
    # A webmail alias of the plan is a CNAME, which cannot sit beside an A record.
    webmail = "" if any(line.startswith(f"webmail.{z}. ") for line in data.records) else "webmail\tIN\tA\t127.0.0.1\n"
    # refresh 30 s so a released secondary catches up fast; expire far away so a held one keeps serving.
    return f"""$ORIGIN {z}.
$TTL {data.ttl}
@\tIN\tSOA\tns1.{z}. hostmaster.{z}. ( {initial_serial()} 30 5 1209600 {data.ttl} )
@\tIN\tNS\tns1.{z}.
@\tIN\tNS\tns2.{z}.
ns1\tIN\tA\t127.0.0.1
ns2\tIN\tA\t127.0.0.1
{webmail}{mx}
{records}"""


def _key_clause(data: ZoneData, secret: str) -> str:
    return f'key "{data.tsig_name}" {{\n  algorithm {data.tsig_algorithm};\n  secret "{secret}";\n}};\n'


def _options(directory: Path, port: int, extra: str) -> str:
    return f"""options {{
  directory "{directory}";
  pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key";
  managed-keys-directory "{directory}";
  dump-file "{directory}/cache_dump.db";
  statistics-file "{directory}/named.stats";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify-source 127.0.0.1;
  transfer-source 127.0.0.1;
  query-source address 127.0.0.1;
{extra}}};
controls {{ }};
"""


def primary_config(directory: Path, port: int, secondary_port: int, data: ZoneData, secret: str) -> str:
    extra = (f"  notify explicit;\n  also-notify {{ 127.0.0.1 port {secondary_port}; }};\n"
             "  allow-transfer { 127.0.0.1; };\n")
    return (_options(directory, port, extra) + _key_clause(data, secret) + f"""zone "{data.zone}" {{
  type primary;
  file "{directory}/{data.zone}.zone";
  journal "{directory}/{data.zone}.zone.jnl";
  allow-update {{ key "{data.tsig_name}"; }};
}};
""")


def secondary_config(directory: Path, port: int, primary_port: int, data: ZoneData, secret: str) -> str:
    extra = "  notify no;\n  allow-transfer { 127.0.0.1; };\n"
    return (_options(directory, port, extra) + _key_clause(data, secret) + f"""zone "{data.zone}" {{
  type secondary;
  primaries {{ 127.0.0.1 port {primary_port}; }};
  file "{directory}/{data.zone}.zone";
  journal "{directory}/{data.zone}.zone.jnl";
  masterfile-format text;
  allow-notify {{ 127.0.0.1; }};
}};
""")


def write_named(directory: Path, config_text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "named.conf"
    _write_private(conf, config_text)  # holds the TSIG secret
    return conf


def unbound_config(directory: Path, port: int, zone: str, authoritative_ports: list[int]) -> str:
    stubs = "\n".join(f"  stub-addr: 127.0.0.1@{p}" for p in authoritative_ports)
    return f"""server:
  interface: 127.0.0.1
  port: {port}
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  outgoing-interface: 127.0.0.1
  username: ""
  chroot: ""
  directory: "{directory}"
  pidfile: "{directory}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  # No DNSSEC validation: the sandbox zone is unsigned (and is declared insecure besides).
  module-config: "iterator"
  domain-insecure: "{zone}"
remote-control:
  control-enable: no
stub-zone:
  name: "{zone}"
{stubs}
"""
