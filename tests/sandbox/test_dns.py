"""The sandbox zone: same MX everywhere, TSIG updates reach the secondary, and a held secondary lags."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.tsig
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest

from cutover.sandbox import Sandbox


def _mx(host: str, port: int, zone: str) -> frozenset[tuple[int, str]]:
    answer = dns.query.udp(dns.message.make_query(zone, dns.rdatatype.MX), host, port=port, timeout=2)
    rrset = answer.find_rrset(answer.answer, dns.name.from_text(zone), dns.rdataclass.IN, dns.rdatatype.MX)
    return frozenset((r.preference, r.exchange.to_text().lower()) for r in rrset)


def _update(plan, **records: str):
    key = plan.secret(plan.dns.tsig.secret).reveal()
    keyring = dns.tsigkeyring.from_text({plan.dns.tsig.name: (plan.dns.tsig.algorithm, key)})
    update = dns.update.UpdateMessage(plan.dns.zone, keyring=keyring, keyname=plan.dns.tsig.name)
    for name, text in records.items():
        update.replace(name, 5, "TXT", f'"{text}"')
    response = dns.query.tcp(update, plan.dns.primary.host, port=plan.dns.primary.port, timeout=3)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


@pytest.mark.parametrize("server", ["ns1", "ns2", "unbound"])
def test_every_server_answers_the_source_mx_set(sandbox_env, server: str) -> None:
    plan = sandbox_env.plan
    servers = {s.name: s for s in [*plan.dns.authoritative, *plan.dns.resolvers]}
    assert _mx(servers[server].host, servers[server].port, plan.dns.zone) == plan.source.mx_set


def test_tsig_update_on_primary_reaches_secondary(sandbox_env) -> None:
    box: Sandbox = sandbox_env.sandbox
    before = box.soa_serial("ns1")
    _update(sandbox_env.plan, **{"tsig-test": "reached"})
    after = box.soa_serial("ns1")
    assert after is not None and before is not None and after > before
    box._await_zone("ns2", after, timeout=10)
    assert box.soa_serial("ns2") == after


def test_update_with_a_wrong_key_is_refused(sandbox_env) -> None:
    plan = sandbox_env.plan
    keyring = dns.tsigkeyring.from_text({plan.dns.tsig.name: (plan.dns.tsig.algorithm, "d3JvbmcgdHNpZyBrZXkgMTIzNDU2Nzg5MA==")})
    update = dns.update.UpdateMessage(plan.dns.zone, keyring=keyring, keyname=plan.dns.tsig.name)
    update.replace("forged", 5, "TXT", '"no"')
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.tcp(update, plan.dns.primary.host, port=plan.dns.primary.port, timeout=3)


def test_held_secondary_lags_then_catches_up(sandbox_env) -> None:
    box: Sandbox = sandbox_env.sandbox
    box.hold_secondary()
    try:
        old = box.soa_serial("ns2")
        _update(sandbox_env.plan, **{"lag-test": "while-held"})
        new = box.soa_serial("ns1")
        assert new is not None and old is not None and new > old
        assert box.soa_serial("ns2") == old  # the two authoritative servers disagree, each with its serial
    finally:
        box.release_secondary()
    assert box.soa_serial("ns2") == box.soa_serial("ns1")


def test_tsig_secret_file_is_private(sandbox_env) -> None:
    ref = sandbox_env.plan.secret_ref(sandbox_env.plan.dns.tsig.secret)
    from pathlib import Path

    assert Path(ref.target).stat().st_mode & 0o777 == 0o600
    assert (Path(sandbox_env.sandbox.state_dir) / "dns" / "ns1" / "named.conf").stat().st_mode & 0o777 == 0o600
