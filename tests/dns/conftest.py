"""A DNS-only sandbox (BIND primary + secondary, unbound) for the DNS change tests, on its own ports.

The zone is put back to the source MX at the normal TTL around every test (directly with a TSIG update, not
through the code under test), the secondary released and the journal cleared, so tests run in any order.
Ports: the first free base from ``PEC_TEST_BASE_PORT`` (default 20000) + 3000, + 53/54/55.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dns.message
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest

from cutover.dnschange import journal_path
from cutover.plan import Plan, load_plan
from cutover.sandbox import Environment, Sandbox, free_base_port, write_environment

# Above the range the shared sandbox fixture allocates from PEC_TEST_BASE_PORT (base + 10*k, k < 90, + 1993).
BASE_PORT = int(os.environ.get("PEC_TEST_BASE_PORT") or "20000") + 3000
DNS_SERVICES = ["ns1", "ns2", "resolver"]




@dataclass(frozen=True)
class DnsEnv:
    """The running DNS sandbox and helpers that read/set the zone directly (tests import no conftest)."""

    plan: Plan
    sandbox: Sandbox
    environment: Environment

    @property
    def ns1(self) -> int:
        return self.plan.dns.primary.port

    @property
    def ns2(self) -> int:
        return self.plan.dns.authoritative[1].port

    def served(self, port: int | None = None) -> tuple[frozenset[tuple[int, str]], int | None, int | None]:
        return served(self.plan, port or self.ns1)

    def set_mx(self, mx: frozenset[tuple[int, str]], ttl: int) -> None:
        set_zone_mx(self.plan, mx, ttl)

    def wait_secondary(self, timeout: float = 15.0) -> int:
        return wait_secondary(self, timeout)


def served(plan: Plan, port: int, rdtype: str = "MX") -> tuple[frozenset[tuple[int, str]], int | None, int | None]:
    """(MX set, MX TTL, SOA serial) as the server on ``port`` answers now."""
    out_mx: frozenset[tuple[int, str]] = frozenset()
    ttl = serial = None
    for t in ("MX", "SOA"):
        r = dns.query.udp(dns.message.make_query(plan.dns.zone + ".", t), "127.0.0.1", port=port, timeout=2)
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.MX:
                out_mx = frozenset((x.preference, x.exchange.to_text().lower()) for x in rrset)
                ttl = rrset.ttl
            elif rrset.rdtype == dns.rdatatype.SOA:
                serial = int(rrset[0].serial)
    return out_mx, ttl, serial


def set_zone_mx(plan: Plan, mx: frozenset[tuple[int, str]], ttl: int) -> None:
    """Replace the MX set with a direct TSIG update (test set-up, independent of the code under test)."""
    keyring = dns.tsigkeyring.from_text({plan.dns.tsig.name: plan.secret(plan.dns.tsig.secret).reveal()})
    update = dns.update.Update(plan.dns.zone + ".", keyring=keyring, keyalgorithm=plan.dns.tsig.algorithm)
    update.delete("@", "MX")
    for pref, host in sorted(mx):
        update.add("@", ttl, "MX", f"{pref} {host}")
    response = dns.query.tcp(update, plan.dns.primary.host, port=plan.dns.primary.port, timeout=5)
    assert response.rcode() == 0, response


def wait_secondary(env: DnsEnv, timeout: float = 15.0) -> int:
    """Wait until ns2 serves ns1's serial; return it."""
    deadline = time.monotonic() + timeout
    while True:
        want = env.sandbox.soa_serial("ns1")
        if want is not None and env.sandbox.soa_serial("ns2") == want:
            return want
        if time.monotonic() > deadline:
            raise AssertionError(f"ns2 did not reach serial {want} within {timeout}s")
        time.sleep(0.1)


def reset_zone(env: DnsEnv) -> None:
    plan = env.plan
    mx, ttl, _ = served(plan, plan.dns.primary.port)
    if mx != plan.source.mx_set or ttl != plan.dns.ttl.normal:
        set_zone_mx(plan, plan.source.mx_set, plan.dns.ttl.normal)
    wait_secondary(env)
    journal_path(plan).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def dns_env() -> Iterator[DnsEnv]:
    # Not under pytest's numbered temp dirs: a concurrent pytest session prunes those (keeps the newest 3)
    # and would delete the daemons' state under them mid-run.
    directory = Path(tempfile.mkdtemp(prefix="pec-test-dns-"))
    directory.chmod(0o711)  # named/unbound may run unprivileged
    environment = write_environment(directory, base_port=free_base_port(BASE_PORT), mailboxes=1)
    plan = load_plan(environment.plan)
    box = Sandbox(plan)
    try:
        box.up(DNS_SERVICES)  # inside the try: a half-started sandbox is stopped too
        yield DnsEnv(plan, box, environment)
    finally:
        box.down(DNS_SERVICES)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def zone(dns_env: DnsEnv) -> Iterator[DnsEnv]:
    """The DNS sandbox with the zone at the source MX and normal TTL, restored whatever the test did."""
    reset_zone(dns_env)
    try:
        yield dns_env
    finally:
        reset_zone(dns_env)
