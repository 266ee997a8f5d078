"""DNS probes with dnspython: what every authoritative server and configured resolver says about the zone's MX
and the records that follow the provider (plan ``records:``: SPF TXT, SRV, webmail CNAME).

Plain functions returning :class:`CheckResult` (one per server where it makes sense), questions asked in
parallel. A server that times out, refuses or answers wrongly is a failed result with its reason; only bad
configuration raises. ``render_status`` draws the table of ``pec-cutover dns status``.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal, Sequence, TypeVar

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from cutover.dnschange import ttl_low_since
from cutover.dnsrecords import WantedRecord, is_spf, wanted_records
from cutover.ttl import ttl_to_wait
from cutover.plan import DnsServer, Plan
from cutover.results import CheckResult

Expect = Literal["source", "target"]
TtlSpec = Literal["cutover", "normal"] | int | None
T = TypeVar("T")
R = TypeVar("R")
MAX_WORKERS = 16


# ----- asking one server ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Reply:
    """A server's response, or why there is none (reason: timeout, unreachable, refused, servfail, ...)."""

    response: dns.message.Message | None
    seconds: float
    reason: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.response is not None and not self.reason


def _ask(server: DnsServer, qname: str, rdtype: dns.rdatatype.RdataType, *, timeout: float, recursive: bool,
         dnssec: bool = False) -> _Reply:
    query = dns.message.make_query(qname, rdtype, want_dnssec=dnssec)
    if not recursive:
        query.flags &= ~dns.flags.RD
    started = time.monotonic()
    try:
        response, _tcp = dns.query.udp_with_fallback(query, server.host, port=server.port, timeout=timeout)
    except dns.exception.Timeout:
        return _Reply(None, time.monotonic() - started, "timeout", f"no answer within {timeout}s")
    except ConnectionRefusedError:
        return _Reply(None, time.monotonic() - started, "unreachable", "connection refused (nothing listens)")
    except (OSError, dns.exception.DNSException) as exc:
        return _Reply(None, time.monotonic() - started, "unreachable", f"{type(exc).__name__}: {exc}")
    seconds = time.monotonic() - started
    rcode = response.rcode()
    if rcode == dns.rcode.REFUSED:
        return _Reply(response, seconds, "refused", f"REFUSED for {qname} {dns.rdatatype.to_text(rdtype)}")
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        text = dns.rcode.to_text(rcode)
        return _Reply(response, seconds, text.lower(), f"{text} for {qname} {dns.rdatatype.to_text(rdtype)}")
    if not recursive and not response.flags & dns.flags.AA:
        return _Reply(response, seconds, "not-authoritative", f"answer for {qname} without the AA flag (lame server?)")
    return _Reply(response, seconds)


def _rrset(reply: _Reply, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset | None:
    if reply.response is None:
        return None
    for rrset in reply.response.answer:
        if rrset.rdtype == rdtype:
            return rrset
    return None


def _mx_of(rrset: dns.rrset.RRset | None) -> frozenset[tuple[int, str]]:
    if rrset is None:
        return frozenset()
    return frozenset((int(r.preference), r.exchange.to_text().lower()) for r in rrset)


def _mx_text(mx: Iterable[tuple[int, str]]) -> str:
    return ", ".join(f"{p} {h}" for p, h in sorted(mx)) or "(no MX)"


def _parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(items))) as pool:
        return list(pool.map(fn, items))


def _zone_fqdn(plan: Plan) -> str:
    return f"{plan.dns.zone}."


def _provider_seen(plan: Plan, mx: frozenset[tuple[int, str]]) -> str:
    if mx == plan.target.mx_set:
        return "target"
    if mx == plan.source.mx_set:
        return "source"
    return "other" if mx else "none"


def _ttl_value(plan: Plan, ttl: TtlSpec) -> int | None:
    if ttl == "cutover":
        return plan.dns.ttl.cutover
    if ttl == "normal":
        return plan.dns.ttl.normal
    return ttl if isinstance(ttl, int) else None


# ----- authoritative servers --------------------------------------------------------------------

def authoritative_servers(plan: Plan) -> list[DnsServer]:
    """The plan's authoritative servers, or the zone's NS as the primary names them (port 53 unless the primary)."""
    if plan.dns.authoritative:
        return list(plan.dns.authoritative)
    reply = _ask(plan.dns.primary, _zone_fqdn(plan), dns.rdatatype.NS, timeout=plan.dns.timeout_s, recursive=False)
    ns = _rrset(reply, dns.rdatatype.NS)
    if ns is None:
        # Cannot discover: the primary is the one server we know.
        return [plan.dns.primary]
    servers = []
    for rdata in ns:
        name = rdata.target.to_text()
        address = _address_of(plan, name, reply)
        if address is None:
            servers.append(DnsServer(name=name.rstrip("."), host=name.rstrip("."), port=53))
            continue
        port = plan.dns.primary.port if address == plan.dns.primary.host else 53
        servers.append(DnsServer(name=name.rstrip("."), host=address, port=port))
    return servers


def _address_of(plan: Plan, name: str, ns_reply: _Reply) -> str | None:
    if ns_reply.response is not None:
        for rrset in ns_reply.response.additional:
            if rrset.rdtype == dns.rdatatype.A and rrset.name.to_text() == name:
                return rrset[0].address
    if name.endswith(_zone_fqdn(plan)):
        reply = _ask(plan.dns.primary, name, dns.rdatatype.A, timeout=plan.dns.timeout_s, recursive=False)
        a = _rrset(reply, dns.rdatatype.A)
        if a is not None:
            return a[0].address
    try:
        return socket.getaddrinfo(name.rstrip("."), None, socket.AF_INET)[0][4][0]
    except OSError:
        return None


def authoritative_mx(plan: Plan, expect: Expect, *, ttl: TtlSpec = None,
                     servers: Sequence[DnsServer] | None = None) -> list[CheckResult]:
    """One result per authoritative server: MX set equals ``expect``'s provider's, SOA serial, TTL.

    ``ttl`` ("cutover", "normal" or seconds) also requires the MX TTL to be that value; ``None`` only reports it.
    """
    expected = plan.provider(expect).mx_set
    want_ttl = _ttl_value(plan, ttl)
    servers = list(servers) if servers is not None else authoritative_servers(plan)

    def probe(server: DnsServer) -> CheckResult:
        mx_reply = _ask(server, _zone_fqdn(plan), dns.rdatatype.MX, timeout=plan.dns.timeout_s, recursive=False)
        soa_reply = _ask(server, _zone_fqdn(plan), dns.rdatatype.SOA, timeout=plan.dns.timeout_s, recursive=False)
        seconds = mx_reply.seconds + soa_reply.seconds
        exp_text = _mx_text(expected) + (f" (TTL {want_ttl}s)" if want_ttl is not None else "")
        base = dict(name="authoritative MX", expected=exp_text, target=str(server), duration_s=seconds)
        failed = next((r for r in (mx_reply, soa_reply) if not r.ok), None)
        if failed is not None:
            return CheckResult(ok=False, observed=f"no answer: {failed.reason}", reason=failed.reason,
                               detail=f"{server}: {failed.error}",
                               data={"server": server.name, "serial": None, "mx": [], "ttl": None}, **base)
        mx_rrset = _rrset(mx_reply, dns.rdatatype.MX)
        soa = _rrset(soa_reply, dns.rdatatype.SOA)
        mx = _mx_of(mx_rrset)
        mx_ttl = mx_rrset.ttl if mx_rrset is not None else None
        serial = int(soa[0].serial) if soa is not None else None
        seen = _provider_seen(plan, mx)
        problems = []
        reason = ""
        if mx != expected:
            problems.append(f"serves the {seen} MX, expected the {expect} MX" if seen in ("source", "target")
                            else f"serves an MX set that is neither provider's: {_mx_text(mx)}")
            reason = "mismatch"
        if want_ttl is not None and mx_ttl != want_ttl:
            problems.append(f"MX TTL {mx_ttl}s, planned {want_ttl}s")
            reason = reason or "ttl-mismatch"
        return CheckResult(
            ok=not problems,
            observed=f"{_mx_text(mx)} (TTL {mx_ttl}s), serial {serial}",
            reason=reason,
            detail="; ".join(problems),
            data={"server": server.name, "serial": serial, "mx": [f"{p} {h}" for p, h in sorted(mx)],
                  "ttl": mx_ttl, "provider_seen": seen, "expect": expect},
            **base,
        )

    return _parallel(probe, servers)


def authoritative_agree(results: Sequence[CheckResult]) -> CheckResult:
    """All authoritative servers answered with the same SOA serial (each serial shown)."""
    serials = {r.data.get("server", r.target): r.data.get("serial") for r in results}
    shown = ", ".join(f"{name}={serial if serial is not None else 'no answer'}" for name, serial in serials.items())
    distinct = {s for s in serials.values() if s is not None}
    silent = [name for name, s in serials.items() if s is None]
    base = dict(name="authoritative servers agree", expected="one SOA serial on every server", observed=shown,
                target=f"{len(results)} servers", data={"serials": serials})
    if not results:
        return CheckResult(ok=False, reason="no-servers", detail="no authoritative server to compare", **base)
    if len(distinct) > 1:
        newest = max(distinct)
        lagging = [n for n, s in serials.items() if s is not None and s != newest]
        return CheckResult(ok=False, reason="disagree",
                           detail=f"authoritative servers disagree: {', '.join(lagging)} behind serial {newest}"
                                  " (zone transfer not done yet or blocked)", **base)
    if silent:
        return CheckResult(ok=False, reason="no-answer", detail=f"no serial from {', '.join(silent)}", **base)
    return CheckResult(ok=True, detail=f"all at serial {distinct.pop()}", **base)


# ----- resolvers --------------------------------------------------------------------------------

def resolver_mx(plan: Plan, expect: Expect) -> list[CheckResult]:
    """One result per configured resolver: does it return ``expect``'s MX set? Old answers show their remaining TTL."""
    expected = plan.provider(expect).mx_set

    def probe(server: DnsServer) -> CheckResult:
        reply = _ask(server, _zone_fqdn(plan), dns.rdatatype.MX, timeout=plan.dns.timeout_s, recursive=True)
        base = dict(name="resolver MX", expected=_mx_text(expected), target=str(server), duration_s=reply.seconds)
        if not reply.ok:
            return CheckResult(ok=False, observed=f"no answer: {reply.reason}", reason=reply.reason,
                               detail=f"{server}: {reply.error}", data={"resolver": server.name, "mx": [],
                                                                         "ttl_remaining": None}, **base)
        rrset = _rrset(reply, dns.rdatatype.MX)
        mx = _mx_of(rrset)
        remaining = rrset.ttl if rrset is not None else None
        seen = _provider_seen(plan, mx)
        ok = mx == expected
        detail = "" if ok else (f"still the {seen} MX, cached for another {remaining}s" if seen in ("source", "target")
                                else f"unexpected MX set {_mx_text(mx)}")
        return CheckResult(ok=ok, observed=f"{_mx_text(mx)} (TTL left {remaining}s)", reason="" if ok else "mismatch",
                           detail=detail, data={"resolver": server.name, "mx": [f"{p} {h}" for p, h in sorted(mx)],
                                                "ttl_remaining": remaining, "provider_seen": seen}, **base)

    return _parallel(probe, list(plan.dns.resolvers))


def authoritative_converged(plan: Plan, expect: Expect, *, deadline_s: float | None = None,
                            poll_s: float | None = None) -> tuple[list[CheckResult], CheckResult]:
    """Poll every authoritative server until all answer ``expect``'s MX with one SOA serial, or the deadline.

    Right after a change the secondaries lag by one NOTIFY and zone transfer; one look would report that
    transient as a failure. Returns the last per-server results and the agreement result (with polls and the
    time it took in ``data``).
    """
    deadline_s = plan.dns.propagation_deadline_s if deadline_s is None else deadline_s
    poll_s = plan.dns.poll_interval_s if poll_s is None else poll_s
    started = time.monotonic()
    polls = 0
    while True:
        polls += 1
        results = authoritative_mx(plan, expect)
        agreement = authoritative_agree(results)
        elapsed = time.monotonic() - started
        if (agreement.ok and all(r.ok for r in results)) or elapsed + poll_s > deadline_s:
            break
        time.sleep(poll_s)
    agreement.data.update({"polls": polls, "converged_after_s": round(elapsed, 3) if agreement.ok else None})
    return results, agreement


def resolver_propagation(plan: Plan, expect: Expect, *, deadline_s: float | None = None, poll_s: float | None = None,
                         min_fraction: float | None = None) -> CheckResult:
    """Poll the resolvers until ``min_fraction`` of them return ``expect``'s MX, or the deadline passes.

    ``data``: fraction, converged/total, converged_after_s (None if not reached), polls, pending resolvers with
    their remaining TTL, and the per-resolver results of the last poll.
    """
    deadline_s = plan.dns.propagation_deadline_s if deadline_s is None else deadline_s
    poll_s = plan.dns.poll_interval_s if poll_s is None else poll_s
    min_fraction = plan.gates.min_resolver_fraction if min_fraction is None else min_fraction
    total = len(plan.dns.resolvers)
    what = f"the {expect} MX" + (" and records" if wanted_records(plan, expect) else "")
    expected = f"≥ {min_fraction:.0%} of {total} resolvers on {what} within {deadline_s:g}s"
    if total == 0:
        return CheckResult(name="resolver propagation", ok=False, expected=expected, observed="no resolvers configured",
                           reason="no-resolvers", detail="add dns.resolvers to the plan",
                           data={"fraction": 0.0, "converged": 0, "total": 0})
    started = time.monotonic()
    polls = 0
    while True:
        polls += 1
        results = resolver_mx(plan, expect)
        records = {r.data["resolver"]: r for r in resolver_records(plan, expect)}
        # A resolver has converged when it answers the new MX and every record that follows the provider.
        converged = [r for r in results if r.ok and records.get(r.data["resolver"], r).ok]
        fraction = len(converged) / total
        elapsed = time.monotonic() - started
        if fraction + 1e-9 >= min_fraction or elapsed + poll_s > deadline_s:
            break
        time.sleep(poll_s)
    reached = fraction + 1e-9 >= min_fraction
    pending = {r.data["resolver"]: r.data.get("ttl_remaining") for r in results
               if not (r.ok and records.get(r.data["resolver"], r).ok)}
    observed = f"{len(converged)}/{total} ({fraction:.0%})" + (f" after {elapsed:.1f}s" if reached else "")
    lagging = [f"{n}: {records[n].detail}" for n in pending if n in records and not records[n].ok]
    detail = "" if reached else (f"still old after {elapsed:.1f}s: "
                                 + ", ".join(f"{n} (TTL left {t}s)" for n, t in pending.items())
                                 + ("; records: " + "; ".join(lagging) if lagging else ""))
    return CheckResult(
        name="resolver propagation", ok=reached, expected=expected, observed=observed,
        target=f"{total} resolvers", reason="" if reached else "not-converged", detail=detail, duration_s=elapsed,
        data={"fraction": fraction, "converged": len(converged), "total": total,
              "converged_after_s": round(elapsed, 3) if reached else None, "polls": polls, "pending": pending,
              "results": [r.to_dict() for r in results],
              "records": [r.to_dict() for r in records.values()]},
    )


# ----- the records that follow the provider -----------------------------------------------------

def authoritative_records(plan: Plan, expect: Expect, *, servers: Sequence[DnsServer] | None = None) -> list[CheckResult]:
    """One result per authoritative server: every record of plan ``records:`` is ``expect``'s provider's (or
    absent where that provider declares none). ``[]`` when the plan manages no record besides the MX."""
    wanted = wanted_records(plan, expect)
    if not wanted:
        return []
    servers = list(servers) if servers is not None else authoritative_servers(plan)
    return _parallel(lambda server: _records_probe(plan, expect, wanted, server, recursive=False), servers)


def resolver_records(plan: Plan, expect: Expect) -> list[CheckResult]:
    """One result per configured resolver: does it return ``expect``'s provider's records (as
    :func:`authoritative_records`)? ``[]`` when the plan manages no record besides the MX."""
    wanted = wanted_records(plan, expect)
    if not wanted:
        return []
    return _parallel(lambda server: _records_probe(plan, expect, wanted, server, recursive=True),
                     list(plan.dns.resolvers))


def _records_probe(plan: Plan, expect: Expect, wanted: list[WantedRecord], server: DnsServer, *,
                   recursive: bool) -> CheckResult:
    other_side: Expect = "source" if expect == "target" else "target"
    other = {r.kind: r for r in wanted_records(plan, other_side)}
    seconds = 0.0
    per_record: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    reason = ""
    for record in wanted:
        reply = _ask(server, record.name, dns.rdatatype.from_text(record.rdtype), timeout=plan.dns.timeout_s,
                     recursive=recursive)
        seconds += reply.seconds
        if not reply.ok:
            per_record[record.kind] = {"ok": False, "expected": record.shown(), "observed": f"no answer: {reply.reason}",
                                       "seen": "none", "ttl": None}
            problems.append(f"{record.label}: no answer ({reply.error})")
            reason = reason or reply.reason
            continue
        rrset = _rrset(reply, dns.rdatatype.from_text(record.rdtype))
        values = _record_values(record, rrset)
        ok = values == _record_values_of(record, record.value)
        if ok:
            seen = expect
        elif values == _record_values_of(record, other[record.kind].value):
            seen = other_side
        else:
            seen = "other"
        observed = ", ".join(sorted(values)) or "(none)"
        per_record[record.kind] = {"ok": ok, "expected": record.shown(), "observed": observed, "seen": seen,
                                   "ttl": rrset.ttl if rrset is not None else None}
        if not ok:
            reason = reason or "mismatch"
            cached = f", cached for another {rrset.ttl}s" if recursive and rrset is not None else ""
            problems.append(f"{record.label}: " + (f"still the {seen}'s ({observed}{cached})" if seen == other_side
                                                   else f"{observed}, expected {record.shown()}"))
    return CheckResult(
        name="resolver records" if recursive else "authoritative records",
        ok=not problems, target=str(server), duration_s=seconds, reason=reason, detail="; ".join(problems),
        expected="; ".join(f"{r.label} {r.shown()}" for r in wanted),
        observed="; ".join(f"{r.label} {per_record[r.kind]['observed']}" for r in wanted),
        data={("resolver" if recursive else "server"): server.name, "expect": expect, "records": per_record},
    )


def _record_values(record: WantedRecord, rrset: dns.rrset.RRset | None) -> frozenset[str]:
    """What a served RRset says for ``record``: the SPF strings of a TXT RRset, else canonical rdata texts."""
    if rrset is None:
        return frozenset()
    if record.kind == "spf":
        return frozenset(t for t in (b"".join(r.strings).decode("utf-8", "replace") for r in rrset) if is_spf(t))
    return frozenset(r.to_text().lower() for r in rrset)


def _record_values_of(record: WantedRecord, value: str | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    if record.kind == "spf":
        return frozenset([value])
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(record.rdtype), value)
    return frozenset([rdata.to_text().lower()])


# ----- pre-flight -------------------------------------------------------------------------------

def ttl_preflight(plan: Plan, *, now: datetime | None = None) -> CheckResult:
    """The MX TTL is at the cutover value and has been for at least the old (normal) TTL, so caches hold no old TTL.

    "Since when" comes from the TTL journal (``pec-cutover dns ttl --lower``); without one, the configured
    resolvers must all hold the MX for no longer than the cutover TTL.
    """
    now = now or datetime.now(timezone.utc)
    # Wait the TTL the zone actually served (recorded at readiness and `dns ttl --lower`), not the configured one.
    wait = ttl_to_wait(plan)
    cutover, old = plan.dns.ttl.cutover, wait.seconds
    base = dict(name="TTL pre-flight", expected=f"MX TTL {cutover}s for ≥ {old}s ({wait.reason})",
                target=str(plan.dns.primary))
    reply = _ask(plan.dns.primary, _zone_fqdn(plan), dns.rdatatype.MX, timeout=plan.dns.timeout_s, recursive=False)
    if not reply.ok:
        return CheckResult(ok=False, observed=f"no answer: {reply.reason}", reason=reply.reason, detail=reply.error,
                           duration_s=reply.seconds, **base)
    rrset = _rrset(reply, dns.rdatatype.MX)
    served = rrset.ttl if rrset is not None else None
    if served is None or served > cutover:
        return CheckResult(ok=False, observed=f"MX TTL {served}s on the primary", reason="ttl-not-lowered",
                           detail=f"run `pec-cutover dns ttl --lower` at least {old}s before the switch",
                           data={"served_ttl": served}, **base)
    since = ttl_low_since(plan)
    if since is not None:
        elapsed = (now - since).total_seconds()
        ok = elapsed >= old
        return CheckResult(ok=ok, observed=f"MX TTL {served}s since {since.isoformat(timespec='seconds')} "
                                          f"({elapsed:.0f}s ago)",
                           reason="" if ok else "ttl-lowered-too-recently",
                           detail="" if ok else f"wait another {old - elapsed:.0f}s: caches may still hold the old TTL",
                           data={"served_ttl": served, "low_since": since.isoformat(), "elapsed_s": elapsed}, **base)
    # No journal: the resolvers we can see must not hold the MX longer than the cutover TTL.
    resolvers = resolver_mx(plan, "source")
    held = {r.data["resolver"]: r.data.get("ttl_remaining") for r in resolvers}
    too_long = {n: t for n, t in held.items() if t is None or t > cutover}
    ok = bool(resolvers) and not too_long
    return CheckResult(ok=ok, observed=f"MX TTL {served}s; since: unknown (no journal); resolvers hold "
                                      + (", ".join(f"{n}={t}s" for n, t in held.items()) or "nothing"),
                       reason="" if ok else "ttl-since-unknown",
                       detail=("no journal entry; every configured resolver holds the MX for ≤ the cutover TTL"
                               if ok else f"cannot tell since when the TTL is low; wait {old}s or lower it with "
                                          "`pec-cutover dns ttl --lower`"),
                       data={"served_ttl": served, "low_since": None, "resolver_ttl": held}, **base)


def record_expectations(plan: Plan) -> list[CheckResult]:
    """Optional A/CNAME expectations from the plan (``dns.expect_a``), asked of the primary. (The SPF and the other
    records that follow the provider are :func:`authoritative_records` / :func:`resolver_records`.)"""
    jobs: list[Callable[[], CheckResult]] = []
    for name, addresses in plan.dns.expect_a.items():
        jobs.append(lambda name=name, addresses=addresses: _expect_a(plan, name, addresses))
    return _parallel(lambda job: job(), jobs)


def _expect_a(plan: Plan, name: str, addresses: list[str]) -> CheckResult:
    fqdn = name if name.endswith(".") else (f"{name}." if name.endswith(plan.dns.zone) else f"{name}.{plan.dns.zone}.")
    reply = _ask(plan.dns.primary, fqdn, dns.rdatatype.A, timeout=plan.dns.timeout_s, recursive=False)
    base = dict(name="A record", expected=", ".join(sorted(addresses)), target=f"{fqdn} @ {plan.dns.primary}",
                duration_s=reply.seconds)
    if not reply.ok:
        return CheckResult(ok=False, observed=f"no answer: {reply.reason}", reason=reply.reason, detail=reply.error,
                           **base)
    found: set[str] = set()
    chain: list[str] = []
    for rrset in reply.response.answer if reply.response else []:
        if rrset.rdtype == dns.rdatatype.A:
            found.update(r.address for r in rrset)
        elif rrset.rdtype == dns.rdatatype.CNAME:
            chain.append(f"{rrset.name} CNAME {rrset[0].target}")
    ok = found == set(addresses)
    return CheckResult(ok=ok, observed=", ".join(sorted(found)) or "(no A)", reason="" if ok else "mismatch",
                       detail="; ".join(chain), data={"a": sorted(found), "cname": chain}, **base)


# ----- DNSSEC -----------------------------------------------------------------------------------

def dnssec_validation(plan: Plan) -> CheckResult:
    """If the zone is signed, the primary's MX and DNSKEY answers validate against the zone's DNSKEY set.

    Unsigned zone: ok, nothing to validate. The chain of trust to the parent's DS is not checked here.
    """
    zone = _zone_fqdn(plan)
    base = dict(name="DNSSEC", target=f"{plan.dns.zone} @ {plan.dns.primary}")
    key_reply = _ask(plan.dns.primary, zone, dns.rdatatype.DNSKEY, timeout=plan.dns.timeout_s, recursive=False,
                     dnssec=True)
    if not key_reply.ok:
        return CheckResult(ok=False, expected="DNSKEY answer", observed=f"no answer: {key_reply.reason}",
                           reason=key_reply.reason, detail=key_reply.error, **base)
    keys = _rrset(key_reply, dns.rdatatype.DNSKEY)
    if keys is None:
        return CheckResult(ok=True, expected="valid signatures if signed", observed="zone unsigned (no DNSKEY)",
                           detail="nothing to validate", data={"signed": False}, **base)
    mx_reply = _ask(plan.dns.primary, zone, dns.rdatatype.MX, timeout=plan.dns.timeout_s, recursive=False, dnssec=True)
    name = dns.name.from_text(zone)
    problems = []
    for label, reply, rdtype in (("DNSKEY", key_reply, dns.rdatatype.DNSKEY), ("MX", mx_reply, dns.rdatatype.MX)):
        rrset = _rrset(reply, rdtype)
        sig = next((r for r in (reply.response.answer if reply.response else [])
                    if r.rdtype == dns.rdatatype.RRSIG and r.covers == rdtype), None)
        if rrset is None or sig is None:
            problems.append(f"{label}: no RRSIG")
            continue
        try:
            dns.dnssec.validate(rrset, sig, {name: keys})
        except (dns.dnssec.ValidationFailure, dns.exception.DNSException) as exc:
            problems.append(f"{label}: {exc}")
    ok = not problems
    return CheckResult(ok=ok, expected="valid signatures", observed="signatures valid" if ok else "; ".join(problems),
                       reason="" if ok else "dnssec-invalid",
                       detail="validated against the zone's own DNSKEY set (parent DS not checked)",
                       data={"signed": True}, **base)


# ----- the whole picture (``pec-cutover dns status``) --------------------------------------------

def infer_expect(plan: Plan) -> Expect | None:
    """Which provider's MX set the primary serves now; None when it does not answer or serves neither."""
    reply = _ask(plan.dns.primary, _zone_fqdn(plan), dns.rdatatype.MX, timeout=plan.dns.timeout_s, recursive=False)
    served = _mx_of(_rrset(reply, dns.rdatatype.MX))
    if served == plan.source.mx_set:
        return "source"
    if served == plan.target.mx_set:
        return "target"
    return None


def dns_status(plan: Plan, expect: Expect) -> list[CheckResult]:
    """Every authoritative server (MX, records), their agreement, every resolver (one poll: MX, records), A
    expectations, DNSSEC."""
    authoritative = authoritative_mx(plan, expect)
    return [*authoritative, *authoritative_records(plan, expect), authoritative_agree(authoritative),
            *resolver_mx(plan, expect), *resolver_records(plan, expect), *record_expectations(plan),
            dnssec_validation(plan)]


def render_status(results: Sequence[CheckResult], *, title: str = "DNS status") -> Any:
    """A rich Table of results: check, server, ok, expected, observed, detail."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in ("check", "server", "ok", "expected", "observed", "detail"):
        table.add_column(column, overflow="fold")
    for r in results:
        ok = "[green]yes[/green]" if r.ok else f"[red]NO[/red] {r.reason}"
        table.add_row(*(escape(x) for x in (r.name, r.target)), ok, *(escape(x) for x in (r.expected, r.observed, r.detail)))
    return table


__all__ = ["authoritative_servers", "authoritative_mx", "authoritative_agree", "resolver_mx", "resolver_propagation",
           "authoritative_records", "resolver_records",
           "ttl_preflight", "record_expectations", "dnssec_validation", "infer_expect", "dns_status",
           "render_status"]
