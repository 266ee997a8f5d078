"""checks/dns against the sandbox's real BIND primary + secondary and unbound resolver.

A DNS-only sandbox of its own (first free base from ``PEC_TEST_BASE_PORT`` (default 20000) + 3500), the zone put back
to the source MX at the normal TTL around every test, so the tests run in any order.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import dns.message
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest

from checks.dns import (authoritative_agree, authoritative_mx, authoritative_servers, dnssec_validation,
                        record_expectations, resolver_mx, resolver_propagation, ttl_preflight)
from cutover.dnschange import append_journal, journal_path, switch_mx
from cutover.plan import DnsServer, Plan, load_plan
from cutover.sandbox import Sandbox, free_base_port, write_environment

# Above the range the shared sandbox fixture allocates from PEC_TEST_BASE_PORT (base + 10*k, k < 90, + 1993).
BASE_PORT = int(os.environ.get("PEC_TEST_BASE_PORT") or "20000") + 3500
DNS_SERVICES = ["ns1", "ns2", "resolver"]




def _update(plan: Plan) -> dns.update.Update:
    keyring = dns.tsigkeyring.from_text({plan.dns.tsig.name: plan.secret(plan.dns.tsig.secret).reveal()})
    return dns.update.Update(plan.dns.zone + ".", keyring=keyring, keyalgorithm=plan.dns.tsig.algorithm)


def _send(plan: Plan, update: dns.update.Update) -> None:
    response = dns.query.tcp(update, plan.dns.primary.host, port=plan.dns.primary.port, timeout=5)
    assert response.rcode() == 0, response


def set_mx(plan: Plan, side: str, ttl: int) -> None:
    """Set the zone's MX directly (test set-up, not the code under test)."""
    update = _update(plan)
    update.delete("@", "MX")
    for pref, host in sorted(plan.provider(side).mx_set):
        update.add("@", ttl, "MX", f"{pref} {host}")
    _send(plan, update)


def served_mx(plan: Plan) -> tuple[frozenset, int]:
    r = dns.query.udp(dns.message.make_query(plan.dns.zone + ".", "MX"), "127.0.0.1", port=plan.dns.primary.port,
                      timeout=2)
    rrset = r.answer[0]
    return frozenset((x.preference, x.exchange.to_text()) for x in rrset), rrset.ttl


def wait_secondary(box: Sandbox, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while box.soa_serial("ns2") != box.soa_serial("ns1"):
        assert time.monotonic() < deadline, "ns2 did not catch up with ns1"
        time.sleep(0.1)


def resolver_answer(plan: Plan) -> tuple[str, int | None]:
    [r] = resolver_mx(plan, "source")
    return r.data.get("provider_seen", "none"), r.data.get("ttl_remaining")


def settle_resolver(plan: Plan, side: str, *, max_ttl_left: int | None = None, min_ttl_left: int | None = None) -> int:
    """Wait until unbound answers ``side``'s MX (cache left from other tests expires within the normal TTL),
    optionally with at most / at least some TTL left; return the TTL left. (Restarting unbound to empty its
    cache is not reliable: see the report on Sandbox.restart_service("resolver").)"""
    deadline = time.monotonic() + 3 * plan.dns.ttl.normal
    while True:
        seen, left = resolver_answer(plan)
        if seen == side and left is not None and (max_ttl_left is None or left <= max_ttl_left) \
                and (min_ttl_left is None or left >= min_ttl_left):
            return left
        assert time.monotonic() < deadline, f"resolver still answers {seen} (TTL left {left})"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def dns_box() -> Iterator[tuple[Plan, Sandbox]]:
    # Not under pytest's numbered temp dirs: a concurrent pytest session prunes those (keeps the newest 3)
    # and would delete the daemons' state under them mid-run.
    directory = Path(tempfile.mkdtemp(prefix="pec-test-dns-checks-"))
    directory.chmod(0o711)  # named/unbound may run unprivileged
    plan = load_plan(write_environment(directory, base_port=free_base_port(BASE_PORT), mailboxes=1).plan)
    box = Sandbox(plan)
    try:
        box.up(DNS_SERVICES)  # inside the try: a half-started sandbox is stopped too
        yield plan, box
    finally:
        box.down(DNS_SERVICES)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def zone(dns_box: tuple[Plan, Sandbox]) -> Iterator[tuple[Plan, Sandbox]]:
    plan, box = dns_box

    def reset() -> None:
        if served_mx(plan) != (plan.source.mx_set, plan.dns.ttl.normal):
            set_mx(plan, "source", plan.dns.ttl.normal)
        wait_secondary(box)
        journal_path(plan).unlink(missing_ok=True)

    reset()
    try:
        yield plan, box
    finally:
        reset()


def _with(plan: Plan, **dns_fields) -> Plan:
    return plan.model_copy(update={"dns": plan.dns.model_copy(update=dns_fields)})


def test_every_authoritative_server_answers_the_expected_mx_with_serial_and_ttl(zone) -> None:
    plan, box = zone
    results = authoritative_mx(plan, "source", ttl="normal")
    assert [r.data["server"] for r in results] == ["ns1", "ns2"]
    assert all(r.ok for r in results), [r.as_row() for r in results]
    assert {r.data["serial"] for r in results} == {box.soa_serial("ns1")}
    assert all(r.data["ttl"] == plan.dns.ttl.normal for r in results)

    wrong = authoritative_mx(plan, "target")
    assert not any(r.ok for r in wrong)
    assert {r.reason for r in wrong} == {"mismatch"} and "serves the source MX" in wrong[0].detail
    ttl_wrong = authoritative_mx(plan, "source", ttl="cutover")
    assert {r.reason for r in ttl_wrong} == {"ttl-mismatch"}
    assert authoritative_agree(results).ok


def test_lagging_secondary_makes_the_servers_disagree_showing_both_serials(zone) -> None:
    plan, box = zone
    old_serial = box.soa_serial("ns2")
    box.hold_secondary()
    try:
        switch_mx(plan, "target")
        new_serial = box.soa_serial("ns1")
        assert new_serial > old_serial
        results = authoritative_mx(plan, "target")
        by_server = {r.data["server"]: r for r in results}
        assert by_server["ns1"].ok and not by_server["ns2"].ok
        assert "serves the source MX" in by_server["ns2"].detail
        agree = authoritative_agree(results)
        assert not agree.ok and agree.reason == "disagree"
        assert f"ns1={new_serial}" in agree.observed and f"ns2={old_serial}" in agree.observed
        assert "authoritative servers disagree" in agree.detail and "ns2" in agree.detail
    finally:
        box.release_secondary()
    assert authoritative_agree(authoritative_mx(plan, "target")).ok


def test_a_stopped_server_is_a_failed_result_not_an_exception(zone) -> None:
    plan, box = zone
    quick = _with(plan, timeout_s=0.3)
    box.stop_service("ns2")
    try:
        results = authoritative_mx(quick, "source")
        by_server = {r.data["server"]: r for r in results}
        assert by_server["ns1"].ok
        assert not by_server["ns2"].ok and by_server["ns2"].reason in ("timeout", "unreachable")
        agree = authoritative_agree(results)
        assert not agree.ok and "ns2=no answer" in agree.observed
    finally:
        box.start_service("ns2")
        wait_secondary(box)
    dead = _with(quick, resolvers=[DnsServer(name="nobody", host="127.0.0.1", port=1)])
    [r] = resolver_mx(dead, "source")
    assert not r.ok and r.reason in ("timeout", "unreachable")


def test_resolver_serves_the_old_mx_until_the_ttl_runs_out_then_converges(zone, record_property) -> None:
    plan, box = zone
    # The resolver holds the source MX with most of a long TTL left (3x the normal one: an Ansible switch on a
    # loaded 2-core machine took longer than the normal TTL in all three rounds). If the switch still outlasts it,
    # the first look already sees the new MX: that round shows nothing and is played again.
    held_ttl = 3 * plan.dns.ttl.normal
    for _round in range(3):
        set_mx(plan, "source", held_ttl)
        wait_secondary(box)
        settle_resolver(plan, "source", min_ttl_left=held_ttl - 3)
        started = time.monotonic()
        change = switch_mx(plan, "target")
        switched = time.monotonic()
        assert change.changed
        early = resolver_propagation(plan, "target", deadline_s=0.5, poll_s=0.2, min_fraction=1.0)
        if not early.ok:
            break
    assert not early.ok and early.reason == "not-converged"
    assert early.data["fraction"] == 0.0 and early.data["converged_after_s"] is None
    [(name, ttl_left)] = early.data["pending"].items()
    assert name == "unbound" and 0 < ttl_left <= held_ttl
    assert "TTL left" in early.detail

    done = resolver_propagation(plan, "target", deadline_s=held_ttl + 10, poll_s=0.2, min_fraction=1.0)
    finished = time.monotonic()
    assert done.ok, done.as_row()
    assert done.data["fraction"] == 1.0 and done.data["converged"] == done.data["total"] == 1
    assert done.data["converged_after_s"] > 0 and done.data["polls"] > 1
    assert authoritative_agree(authoritative_mx(plan, "target")).ok
    record_property("switch_s", round(switched - started, 2))
    record_property("switch_to_converged_s", round(finished - started, 2))
    print(f"switch {switched - started:.2f}s, switch + convergence {finished - started:.2f}s "
          f"(normal TTL {plan.dns.ttl.normal}s)")


def test_propagation_with_short_ttl_converges_once_the_cached_short_ttl_runs_out(zone, record_property) -> None:
    """With the cutover TTL served, the resolver holds the old MX for at most that TTL: what it reports left at the
    switch bounds what it may still serve (no wall-clock threshold here; speed is for benchmarks)."""
    plan, box = zone
    set_mx(plan, "source", plan.dns.ttl.cutover)
    wait_secondary(box)  # else unbound may fetch the old TTL from a lagging ns2
    settle_resolver(plan, "source", max_ttl_left=plan.dns.ttl.cutover)
    started = time.monotonic()
    switch_mx(plan, "target")
    wait_secondary(box)
    seen, left = resolver_answer(plan)   # what the resolver holds right after the switch
    assert seen == "target" or (seen == "source" and left is not None and left <= plan.dns.ttl.cutover), (seen, left)
    done = resolver_propagation(plan, "target", deadline_s=60, poll_s=0.1)
    assert done.ok, done.as_row()
    [after] = resolver_mx(plan, "target")
    assert after.ok and after.data["ttl_remaining"] <= plan.dns.ttl.cutover  # the new MX is cached as briefly
    record_property("switch_to_converged_s", round(time.monotonic() - started, 2))


def test_ttl_preflight_wants_the_cutover_ttl_for_at_least_the_old_ttl(zone) -> None:
    plan, box = zone
    now = datetime.now(timezone.utc)
    not_lowered = ttl_preflight(plan, now=now)
    assert not not_lowered.ok and not_lowered.reason == "ttl-not-lowered"
    assert "dns ttl --lower" in not_lowered.detail

    # Without a journal the pre-flight trusts the resolvers only when none holds more than the cutover TTL. Whether
    # the cache still holds the old, longer TTL when the check asks is read from what the check saw: on a slow
    # machine the cache may age past it first, and the round is played again from a fresh cache.
    for _round in range(3):
        set_mx(plan, "source", plan.dns.ttl.normal)
        wait_secondary(box)
        settle_resolver(plan, "source", min_ttl_left=plan.dns.ttl.cutover + 1)  # a cache holding the old TTL
        set_mx(plan, "source", plan.dns.ttl.cutover)
        wait_secondary(box)
        unknown = ttl_preflight(plan, now=now)
        held = unknown.data["resolver_ttl"]["unbound"]
        assert unknown.ok == (held <= plan.dns.ttl.cutover), unknown.as_row()
        if held > plan.dns.ttl.cutover:
            break
    assert not unknown.ok and unknown.reason == "ttl-since-unknown", unknown.as_row()

    append_journal(plan, {"action": "set_ttl", "level": "cutover", "ttl": plan.dns.ttl.cutover, "changed": True},
                   when=now)
    recent = ttl_preflight(plan, now=now + timedelta(seconds=1))
    assert not recent.ok and recent.reason == "ttl-lowered-too-recently" and "wait another" in recent.detail
    ready = ttl_preflight(plan, now=now + timedelta(seconds=plan.dns.ttl.normal + 1))
    assert ready.ok, ready.as_row()


def test_ttl_preflight_without_journal_trusts_resolvers_holding_only_the_short_ttl(zone) -> None:
    plan, box = zone
    set_mx(plan, "source", plan.dns.ttl.cutover)
    wait_secondary(box)
    settle_resolver(plan, "source", max_ttl_left=plan.dns.ttl.cutover)  # old cached TTLs ran out
    result = ttl_preflight(plan)
    assert result.ok, result.as_row()
    assert "since: unknown" in result.observed


def test_record_expectations_a(zone) -> None:
    # The SPF (formerly expect_txt) is a record that follows the provider now: tests/dns/test_records.py.
    plan, _ = zone
    expecting = _with(plan, expect_a={"webmail": ["127.0.0.1"], "ns2.pec.fnofi.it": ["127.0.0.9"]})
    webmail, ns2 = record_expectations(expecting)
    assert webmail.ok and webmail.observed == "127.0.0.1"
    assert not ns2.ok and ns2.reason == "mismatch"


def test_unsigned_zone_has_nothing_to_validate(zone) -> None:
    plan, _ = zone
    result = dnssec_validation(plan)
    assert result.ok and result.data == {"signed": False} and "unsigned" in result.observed


def test_servers_are_discovered_from_the_zones_ns_when_the_plan_names_none(zone) -> None:
    plan, _ = zone
    discovered = authoritative_servers(_with(plan, authoritative=[]))
    assert sorted(s.name for s in discovered) == ["ns1.pec.fnofi.it", "ns2.pec.fnofi.it"]
    assert all(s.host == "127.0.0.1" for s in discovered)
