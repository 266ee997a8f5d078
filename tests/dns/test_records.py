"""The records that follow the provider (plan ``records:``: SPF TXT, SRV _imaps._tcp / _submissions._tcp, webmail
CNAME) against real BIND servers and unbound: switched with the MX in one TSIG update, check mode with diff,
reversed, lowered with the MX TTL, checked on every authoritative server and resolver, judged by the DNS gate.

Own DNS sandbox (the surroundings plan of write_environment), on ports from PEC_TEST_BASE_PORT + 3500. What the
servers serve is read here with plain dnspython queries, independently of the code under test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import dns.message
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest

from checks.dns import authoritative_records, resolver_propagation, resolver_records
from checks.gates import Verdict, dns_gate
from cutover.dnschange import set_ttl, switch_mx
from cutover.errors import DnsChangeError
from cutover.plan import Gates, Plan, WebmailAlias, load_plan
from cutover.sandbox import Sandbox, free_base_port, write_environment

BASE_PORT = int(os.environ.get("PEC_TEST_BASE_PORT") or "20000") + 3500
DNS = ["ns1", "ns2", "resolver"]
ZONE = "pec.fnofi.it."
VERIFICATION = "google-site-verification=pec-cutover-test"  # a TXT string of the zone's own, to be kept
ARUBA_SPF = "v=spf1 include:_spf.aruba.pec-sandbox.invalid -all"
INFOCERT_SPF = "v=spf1 include:_spf-legalmail.infocert.it -all"


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Plan, Sandbox]]:
    directory = Path(tempfile.mkdtemp(prefix="pec-test-records-"))
    directory.chmod(0o711)
    environment = write_environment(directory, base_port=free_base_port(BASE_PORT), mailboxes=1, surroundings=True)
    plan = load_plan(environment.plan)
    box = Sandbox(plan)
    try:
        box.up(DNS)
        _update(plan, lambda u: u.add("@", plan.dns.ttl.normal, "TXT", f'"{VERIFICATION}"'))
        yield plan, box
    finally:
        box.down(DNS)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def zone(env) -> Iterator[tuple[Plan, Sandbox]]:
    """The zone as the source provider publishes it, at the normal TTL, before and after each test (set directly
    with one TSIG update, not through the code under test)."""
    plan, box = env
    reset(plan, box)
    yield plan, box
    reset(plan, box)


def reset(plan: Plan, box: Sandbox) -> None:
    ttl = plan.dns.ttl.normal
    wanted = {(ZONE, "MX"): ARUBA["mx"], (ZONE, "TXT"): {f'"{t}"' for t in ARUBA["txt"]},
              ("_imaps._tcp." + ZONE, "SRV"): ARUBA["imaps"], ("_submissions._tcp." + ZONE, "SRV"): ARUBA["submissions"],
              ("webmail." + ZONE, "CNAME"): ARUBA["webmail"]}
    if provider_records(plan.dns.primary.port) == ARUBA and served(plan.dns.primary.port, ZONE, "MX")[0] == ttl \
            and served(plan.dns.primary.port, ZONE, "TXT")[0] == ttl:
        return

    def edit(update: dns.update.Update) -> None:
        for (name, rdtype), values in wanted.items():
            update.replace(name, ttl, rdtype, *sorted(values))

    _update(plan, edit)
    wait_secondary(box)


def _update(plan: Plan, edit) -> None:
    keyring = dns.tsigkeyring.from_text({plan.dns.tsig.name: plan.secret(plan.dns.tsig.secret).reveal()})
    update = dns.update.Update(ZONE, keyring=keyring, keyalgorithm=plan.dns.tsig.algorithm)
    edit(update)
    assert dns.query.tcp(update, "127.0.0.1", port=plan.dns.primary.port, timeout=5).rcode() == 0


def served(port: int, name: str, rdtype: str) -> tuple[int | None, set[str]]:
    """(TTL, rdata texts; TXT as decoded strings) that the server on ``port`` answers."""
    answer = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=2)
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rdtype) and rrset.name.to_text() == name:
            if rdtype == "TXT":
                return rrset.ttl, {b"".join(r.strings).decode() for r in rrset}
            return rrset.ttl, {r.to_text() for r in rrset}
    return None, set()


def serial(port: int) -> int:
    answer = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1", port=port, timeout=2)
    return int(answer.answer[0][0].serial)


def wait_secondary(box: Sandbox) -> int:
    deadline = time.monotonic() + 20
    while (want := box.soa_serial("ns1")) != box.soa_serial("ns2"):
        assert time.monotonic() < deadline, "ns2 did not follow ns1"
        time.sleep(0.1)
    return want


def provider_records(port: int) -> dict[str, set[str]]:
    return {
        "mx": served(port, ZONE, "MX")[1],
        "txt": served(port, ZONE, "TXT")[1],
        "imaps": served(port, "_imaps._tcp." + ZONE, "SRV")[1],
        "submissions": served(port, "_submissions._tcp." + ZONE, "SRV")[1],
        "webmail": served(port, "webmail." + ZONE, "CNAME")[1],
    }


ARUBA = {"mx": {"10 mx.pec.aruba.it."}, "txt": {VERIFICATION, ARUBA_SPF},
         "imaps": {"0 1 993 imaps.pec.aruba.it."}, "submissions": {"0 1 465 smtps.pec.aruba.it."},
         "webmail": {"webmail.pec.it."}}
INFOCERT = {"mx": {"10 mx.cert.legalmail.it."}, "txt": {VERIFICATION, INFOCERT_SPF},
            "imaps": {"0 1 993 mbox.cert.legalmail.it."}, "submissions": {"0 1 465 sendm.cert.legalmail.it."},
            "webmail": {"webmail.infocert.it."}}


def test_every_record_kind_moves_with_the_mx_in_one_update_and_back(zone) -> None:
    plan, box = zone
    assert provider_records(plan.dns.primary.port) == ARUBA
    before = serial(plan.dns.primary.port)

    there = switch_mx(plan, "target")
    assert there.changed and there.action == "switch MX to target (infocert) with 4 records"
    # MX, SPF, two SRV and the CNAME changed by one dynamic update: one new serial holds them all.
    assert there.serial_before == before and there.serial_after == before + 1
    wait_secondary(box)
    for port in (plan.dns.primary.port, plan.dns.authoritative[1].port):
        assert provider_records(port) == INFOCERT, port
    assert all(r.ok for r in authoritative_records(plan, "target"))

    back = switch_mx(plan, "source")
    assert back.changed and back.serial_after == there.serial_after + 1
    wait_secondary(box)
    for port in (plan.dns.primary.port, plan.dns.authoritative[1].port):
        assert provider_records(port) == ARUBA, port
    assert all(r.ok for r in authoritative_records(plan, "source"))
    assert not switch_mx(plan, "source").changed  # idempotent


def test_check_mode_shows_each_record_in_the_diff_and_changes_nothing(zone) -> None:
    plan, _ = zone
    before = provider_records(plan.dns.primary.port), serial(plan.dns.primary.port)
    change = switch_mx(plan, "target", dry_run=True)
    assert change.dry_run and change.changed
    lines = change.diff.splitlines()
    assert f'-{ZONE} 10 IN TXT "{VERIFICATION}"' not in lines  # the zone's own TXT string is kept
    for line in (f'-{ZONE} 10 IN TXT "{ARUBA_SPF}"', f'+{ZONE} 10 IN TXT "{INFOCERT_SPF}"',
                 f"-_imaps._tcp.{ZONE} 10 IN SRV 0 1 993 imaps.pec.aruba.it.",
                 f"+_imaps._tcp.{ZONE} 10 IN SRV 0 1 993 mbox.cert.legalmail.it.",
                 f"+_submissions._tcp.{ZONE} 10 IN SRV 0 1 465 sendm.cert.legalmail.it.",
                 f"-webmail.{ZONE} 10 IN CNAME webmail.pec.it.", f"+webmail.{ZONE} 10 IN CNAME webmail.infocert.it.",
                 f"+{ZONE} 10 IN MX 10 mx.cert.legalmail.it."):
        assert line in lines, line
    assert (provider_records(plan.dns.primary.port), serial(plan.dns.primary.port)) == before


def test_checks_name_every_record_still_on_the_old_provider_and_the_gate_says_no_go(zone) -> None:
    plan, _ = zone
    results = authoritative_records(plan, "target")
    assert [r.target for r in results] == [str(s) for s in plan.dns.authoritative]
    for result in results:
        assert not result.ok and result.reason == "mismatch"
        assert {k: v["seen"] for k, v in result.data["records"].items()} == \
            {"spf": "source", "imaps": "source", "submissions": "source", "webmail": "source"}
        assert f"SPF TXT: still the source's ({ARUBA_SPF})" in result.detail
    decision = dns_gate([], None, Gates(), records=results)
    assert decision.verdict is Verdict.NO_GO
    assert "authoritative servers serve the provider's records" in [r.rule for r in decision.failed_rules]


def test_resolvers_count_as_converged_only_with_the_new_records_too(zone) -> None:
    plan, _ = zone
    set_ttl(plan, "cutover")
    assert all(r.ok for r in resolver_records(plan, "source"))  # the resolver caches the source's, for 2 s
    switch_mx(plan, "target")
    # The MX alone would not do: propagation waits for every record at every resolver.
    propagation = resolver_propagation(plan, "target", deadline_s=30, poll_s=0.3)
    assert propagation.ok, propagation.as_row()
    assert "and records" in propagation.expected
    [records] = propagation.data["records"]
    assert records["ok"] and records["data"]["records"]["spf"]["observed"] == INFOCERT_SPF
    assert served(plan.dns.resolvers[0].port, "webmail." + ZONE, "CNAME")[1] == {"webmail.infocert.it."}


def test_the_ttl_of_every_record_moves_with_the_mx_ttl(zone) -> None:
    plan, _ = zone
    lowered = set_ttl(plan, "cutover")
    assert lowered.action == "set TTL of the MX and 4 records to cutover (2s)"
    port = plan.dns.primary.port
    for name, rdtype in ((ZONE, "MX"), (ZONE, "TXT"), ("_imaps._tcp." + ZONE, "SRV"),
                         ("_submissions._tcp." + ZONE, "SRV"), ("webmail." + ZONE, "CNAME")):
        assert served(port, name, rdtype)[0] == plan.dns.ttl.cutover, (name, rdtype)
    switch_mx(plan, "target")  # the switch writes the records at the MX TTL it finds
    assert served(port, "_imaps._tcp." + ZONE, "SRV") == (plan.dns.ttl.cutover, INFOCERT["imaps"])
    set_ttl(plan, "normal")
    assert served(port, ZONE, "TXT") == (plan.dns.ttl.normal, INFOCERT["txt"])


def test_a_record_one_provider_does_not_declare_is_removed_and_restored(zone) -> None:
    plan, box = zone
    records = plan.target.records.model_copy(update={"imaps": None})
    no_srv = plan.model_copy(update={"target": plan.target.model_copy(update={"records": records})})
    switch_mx(no_srv, "target")
    wait_secondary(box)
    assert served(plan.dns.authoritative[1].port, "_imaps._tcp." + ZONE, "SRV") == (None, set())
    assert all(r.ok for r in authoritative_records(no_srv, "target"))
    switch_mx(no_srv, "source")
    wait_secondary(box)
    assert provider_records(plan.dns.authoritative[1].port) == ARUBA


def test_a_cname_beside_other_data_is_refused_and_the_zone_left_alone(zone) -> None:
    plan, _ = zone
    _update(plan, lambda u: u.add("posta", 10, "A", "127.0.0.7"))
    try:
        alias = {"webmail": WebmailAlias(name="posta", target="webmail.infocert.it.")}
        source = plan.source.model_copy(update={"records": plan.source.records.model_copy(update={"webmail": None})})
        posta = plan.model_copy(update={"source": source, "target": plan.target.model_copy(update={
            "records": plan.target.records.model_copy(update=alias)})})
        before = serial(plan.dns.primary.port)
        with pytest.raises(DnsChangeError) as err:
            switch_mx(posta, "target")
        assert f"posta.{ZONE} has A records: a CNAME cannot be added beside them" in str(err.value)
        assert serial(plan.dns.primary.port) == before
        assert served(plan.dns.primary.port, ZONE, "MX")[1] == ARUBA["mx"]  # nothing of the update was applied
    finally:
        _update(plan, lambda u: u.delete("posta", "A"))
