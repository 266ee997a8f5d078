"""DNS changes of the cutover: switch the MX (and the records that follow the provider) and move their TTL,
through Ansible.

Each change reads the primary with dnspython before and after (records, SOA serial), runs the playbook through
:mod:`cutover.ansible_bridge` and returns a :class:`DnsChange` whose diff is what the playbook reported per RRset
(in check mode: what it would change). The MX and the records of :mod:`cutover.dnsrecords` change in one TSIG
update. A failure raises :class:`DnsChangeError` with the server's reason. TTL changes are journaled next to the
ledger so the pre-flight knows since when the TTL is low, MX switches so the rollback knows its deadline.
"""

from __future__ import annotations

import difflib
import json
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from cutover.ansible_bridge import PlaybookResult, run_playbook
from cutover.dnsrecords import switch_rrsets, wanted_records
from cutover.errors import AnsibleError, DnsChangeError
from cutover.plan import Plan

Side = Literal["source", "target"]
TtlLevel = Literal["cutover", "normal"]
JOURNAL_NAME = "dns-journal.jsonl"


@dataclass(frozen=True)
class DnsChange:
    """What one DNS change did (or, with ``dry_run``, would do): records and SOA serial before and after."""

    action: str
    changed: bool
    dry_run: bool
    records_before: str
    records_after: str
    serial_before: int | None
    serial_after: int | None
    diff: str
    ok: bool = True
    error: str = ""
    duration_s: float = 0.0

    def as_row(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "dry run": "yes" if self.dry_run else "no",
            "changed": ("would change" if self.dry_run else "yes") if self.changed else "no",
            "before": self.records_before,
            "after": self.records_after,
            "serial": f"{self.serial_before} → {self.serial_after}",
            "ok": "yes" if self.ok else "NO",
            "error": self.error,
            "seconds": round(self.duration_s, 2),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Zone:
    mx: list[tuple[int, str]]
    mx_ttl: int | None
    serial: int | None
    # The managed records as served: (name, type) -> (ttl, sorted rdata texts); absent ones are not keys.
    records: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)
    apex_txt: list[str] = field(default_factory=list)  # the apex's TXT strings, decoded (SPF among them)


def switch_mx(plan: Plan, to: Side, *, dry_run: bool = False) -> DnsChange:
    """Replace the zone's MX set with ``to``'s provider's and, in the same TSIG update, the records that follow
    the provider (plan ``records:``), all at the MX TTL as served. Idempotent."""
    if to not in ("source", "target"):
        raise DnsChangeError(f"switch_mx: to must be 'source' or 'target', not {to!r}")
    provider = plan.provider(to)
    desired = sorted(provider.mx_set)
    before = read_zone(plan)
    ttl = before.mx_ttl or plan.dns.ttl.cutover
    rrsets = [{"record": f"{plan.dns.zone}.", "type": "MX", "ttl": ttl, "values": [f"{p} {h}" for p, h in desired],
               "state": "present"}, *switch_rrsets(plan, to, ttl=ttl, apex_txt=before.apex_txt)]
    extravars = {**_base_vars(plan), "dns_rrsets": rrsets}
    records = len(rrsets) - 1
    action = f"switch MX to {to} ({provider.name})" + (f" with {records} records" if records else "")
    change = _apply(plan, action, "switch_mx.yml", extravars, before, dry_run=dry_run)
    if not dry_run:
        # The moment the MX changed is the start of the rollback deadline (cutover.rollback_deadline).
        append_journal(plan, {"action": "switch_mx", "to": to, "provider": provider.name, "changed": change.changed,
                              "serial": change.serial_after})
    return change


def set_ttl(plan: Plan, level: TtlLevel, *, dry_run: bool = False) -> DnsChange:
    """Bring the MX TTL to the plan's ``cutover`` or ``normal`` value, records unchanged. Journaled."""
    if level not in ("cutover", "normal"):
        raise DnsChangeError(f"set_ttl: level must be 'cutover' or 'normal', not {level!r}")
    ttl = plan.dns.ttl.cutover if level == "cutover" else plan.dns.ttl.normal
    before = read_zone(plan)
    if not before.mx:
        raise DnsChangeError(f"zone {plan.dns.zone} has no MX on {plan.dns.primary}; nothing to set the TTL of")
    rrsets = [{"record": f"{plan.dns.zone}.", "type": "MX", "values": [f"{p} {h}" for p, h in before.mx]}]
    # The records that follow the provider move with the MX: a resolver must not keep an old SPF for hours
    # after the new MX.
    rrsets += [{"record": name, "type": rdtype, "values": values} for (name, rdtype), (_, values) in before.records.items()]
    extravars = {**_base_vars(plan), "dns_rrsets_current": rrsets, "dns_ttl": ttl}
    playbook = "lower_ttl.yml" if level == "cutover" else "restore_ttl.yml"
    what = "MX TTL" if len(rrsets) == 1 else f"TTL of the MX and {len(rrsets) - 1} records"
    change = _apply(plan, f"set {what} to {level} ({ttl}s)", playbook, extravars, before, dry_run=dry_run)
    if not dry_run:
        append_journal(plan, {"action": "set_ttl", "level": level, "ttl": ttl, "changed": change.changed,
                              "serial": change.serial_after, "ttl_before": before.mx_ttl})
    return change


def _apply(plan: Plan, action: str, playbook: str, extravars: dict[str, Any], before: _Zone, *,
           dry_run: bool) -> DnsChange:
    started = time.monotonic()
    try:
        result = run_playbook(plan, playbook, extravars, check=dry_run)
    except AnsibleError as exc:
        raise DnsChangeError(f"{action} on {plan.dns.primary}: {exc}") from None
    after = read_zone(plan)
    if not result.ok:
        reason = _reason(result)
        raise DnsChangeError(
            f"{action} on {plan.dns.primary} failed: {reason}; zone served at serial {after.serial} "
            f"({'unchanged' if after.serial == before.serial else f'was {before.serial}'})"
        )
    # The diff is what the playbook saw and did (or, in check mode, would do), RRset by RRset.
    changed = [r for r in result.reports if r.changed]
    diff = "".join(difflib.unified_diff(
        [line + "\n" for r in changed for line in r.before], [line + "\n" for r in changed for line in r.after],
        fromfile="served before", tofile="would be served" if dry_run else "served after", n=0,
    ))
    return DnsChange(action=action, changed=result.changed, dry_run=dry_run, records_before=_records_text(plan, before),
                     records_after=_records_text(plan, after), serial_before=before.serial, serial_after=after.serial,
                     diff=diff, duration_s=time.monotonic() - started)


def _reason(result: PlaybookResult) -> str:
    text = "; ".join(result.failures) or f"playbook status {result.status}"
    low = text.lower()
    if "peerbadsignature" in low or "peerbadkey" in low or "badsig" in low or "notauth" in low:
        return f"TSIG key rejected by the primary ({text}); check dns.tsig name, algorithm and secret"
    if "rc: 5" in low or ("refused" in low and "connection" not in low):
        return f"update refused by the primary ({text}); is the key allowed to update the zone (allow-update)?"
    if "timeout" in low or "connection" in low or "unreachable" in low:
        return f"primary unreachable ({text})"
    return text


def _base_vars(plan: Plan) -> dict[str, Any]:
    d = plan.dns
    return {
        "dns_control_host": d.primary.name,
        "dns_server": _address(d.primary.host),
        "dns_port": d.primary.port,
        "dns_zone": d.zone,
        "dns_key_name": d.tsig.name,
        "dns_key_algorithm": d.tsig.algorithm,
    }


def _address(host: str) -> str:
    # nsupdate wants an address; resolve a host name once here.
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host
    except OSError:
        pass
    try:
        return socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0]
    except OSError as exc:
        raise DnsChangeError(f"DNS primary {host} cannot be resolved ({exc}); put its address in dns.primary.host") from None


def read_zone(plan: Plan) -> _Zone:
    """MX set, MX TTL, SOA serial and the managed records as the primary serves them now (raises DnsChangeError
    if it cannot say)."""
    d = plan.dns
    mx: list[tuple[int, str]] = []
    mx_ttl: int | None = None
    serial: int | None = None
    records: dict[tuple[str, str], tuple[int, list[str]]] = {}
    apex_txt: list[str] = []
    questions = [(f"{d.zone}.", "MX"), (f"{d.zone}.", "SOA")]
    questions += [(r.name, r.rdtype) for r in wanted_records(plan, "source")]
    for name, type_text in questions:
        rdtype = dns.rdatatype.from_text(type_text)
        query = dns.message.make_query(name, rdtype)
        try:
            response, _tcp = dns.query.udp_with_fallback(query, _address(d.primary.host), port=d.primary.port,
                                                         timeout=d.timeout_s)
        except dns.exception.Timeout:
            raise DnsChangeError(f"DNS primary {d.primary} did not answer within {d.timeout_s}s; is it running?") from None
        except OSError as exc:
            raise DnsChangeError(f"DNS primary {d.primary} unreachable: {exc.strerror or exc}") from None
        if response.rcode() == dns.rcode.NXDOMAIN and name != f"{d.zone}.":
            continue  # a managed name that does not exist (yet)
        if response.rcode() != dns.rcode.NOERROR:
            raise DnsChangeError(f"DNS primary {d.primary} answered {dns.rcode.to_text(response.rcode())} "
                                 f"for {name} {type_text}; does it serve the zone?")
        for rrset in response.answer:
            if rrset.rdtype != rdtype or rrset.name.to_text().lower() != name:
                continue
            if rdtype == dns.rdatatype.MX:
                mx = sorted((r.preference, r.exchange.to_text().lower()) for r in rrset)
                mx_ttl = rrset.ttl
            elif rdtype == dns.rdatatype.SOA:
                serial = int(rrset[0].serial)
            else:
                records[(name, type_text)] = (rrset.ttl, sorted(r.to_text() for r in rrset))
                if rdtype == dns.rdatatype.TXT:
                    apex_txt = [b"".join(r.strings).decode("utf-8", "replace") for r in rrset]
    return _Zone(mx=mx, mx_ttl=mx_ttl, serial=serial, records=records, apex_txt=apex_txt)


def _records_text(plan: Plan, zone: _Zone) -> str:
    lines = [f"{plan.dns.zone}. {zone.mx_ttl} IN MX {p} {h}\n" for p, h in zone.mx]
    lines += [f"{name} {ttl} IN {rdtype} {value}\n" for (name, rdtype), (ttl, values) in zone.records.items()
              for value in values]
    return "".join(lines)


# ----- journal of DNS changes (TTL moves, MX switches) -------------------------------------------

def journal_path(plan: Plan) -> Path:
    return plan.ledger.parent / JOURNAL_NAME


def append_journal(plan: Plan, entry: dict[str, Any], *, when: datetime | None = None) -> None:
    """Append one event (with its UTC time) to ``<ledger dir>/dns-journal.jsonl``."""
    path = journal_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = (when or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat()
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": stamp, "zone": plan.dns.zone, **entry}) + "\n")


def read_journal(plan: Plan) -> list[dict[str, Any]]:
    """All journal entries, oldest first (unreadable lines skipped)."""
    path = journal_path(plan)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("zone", plan.dns.zone) == plan.dns.zone:
            out.append(entry)
    return out


def switched_to_target_at(plan: Plan) -> datetime | None:
    """When the MX last changed from the source to the target, per the journal; None if it never did, or if a
    later change put it back on the source."""
    since: datetime | None = None
    for entry in read_journal(plan):
        if entry.get("action") != "switch_mx" or not entry.get("changed"):
            continue  # an idempotent re-run changed nothing: the clock keeps the first change
        try:
            when = datetime.fromisoformat(entry["time"])
        except (KeyError, ValueError):
            continue
        since = when if entry.get("to") == "target" else None
    return since


def ttl_low_since(plan: Plan) -> datetime | None:
    """When the MX TTL last went to the cutover value (and was not restored since), per the journal."""
    since: datetime | None = None
    for entry in read_journal(plan):
        if entry.get("action") != "set_ttl":
            continue
        try:
            when = datetime.fromisoformat(entry["time"])
        except (KeyError, ValueError):
            continue
        if entry.get("level") == "cutover":
            # A changing lowering starts the clock; an unchanged one proves "low since at least then" only
            # when nothing earlier says more.
            if entry.get("changed") or since is None:
                since = when
        elif entry.get("level") == "normal":
            since = None
    return since


__all__ = ["DnsChange", "switch_mx", "set_ttl", "read_zone", "journal_path", "append_journal", "read_journal",
           "ttl_low_since", "switched_to_target_at", "JOURNAL_NAME"]
