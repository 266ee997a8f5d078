"""Plan sections of what moves with the MX: per-provider records and the PEC clients. Bad input is one problem per
field with its line; the committed rehearsal plan and write_environment(surroundings=True) agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cutover.dnsrecords import record_count, switch_rrsets, wanted_records
from cutover.errors import PlanError
from cutover.plan import load_plan
from cutover.sandbox import write_environment

REPO = Path(__file__).resolve().parents[2]
REHEARSAL = REPO / "inventory" / "rehearsal"


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    return write_environment(tmp_path, base_port=24000, mailboxes=1, surroundings=True).plan


def _problems(path: Path) -> list[str]:
    with pytest.raises(PlanError) as err:
        load_plan(path)
    return err.value.problems


def test_an_spf_for_one_provider_only_is_refused_with_its_line(plan_file: Path) -> None:
    text = plan_file.read_text()
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "spf-legalmail" in l)
    plan_file.write_text(text.replace('    spf: "v=spf1 include:_spf-legalmail.infocert.it -all"\n', ""))
    [problem] = _problems(plan_file)
    assert problem.startswith("line ") and "source.records.spf: declared for one provider only" in problem
    assert line > int(re.match(r"line (\d+)", problem).group(1))  # the source's line, above the target's


def test_record_values_are_validated_per_field(plan_file: Path) -> None:
    text = plan_file.read_text()
    text = text.replace("v=spf1 include:_spf-legalmail.infocert.it -all", "include:_spf-legalmail.infocert.it")
    text = text.replace("{host: mbox.cert.legalmail.it., port: 993}", "{host: mbox.cert.legalmail.it., port: 99999}")
    plan_file.write_text(text)
    problems = _problems(plan_file)
    assert any("target.records.spf: an SPF record starts with 'v=spf1 '" in p for p in problems)
    assert any("target.records.imaps.port" in p for p in problems)
    assert all(p.startswith("line ") for p in problems)


def test_expect_txt_is_named_as_replaced_by_the_providers_records(plan_file: Path) -> None:
    plan_file.write_text(plan_file.read_text().replace("  ansible_inventory: hosts.yml\n",
                                                       '  ansible_inventory: hosts.yml\n  expect_txt: ["v=spf1 -all"]\n'))
    [problem] = _problems(plan_file)
    assert "dns.expect_txt: no longer a plan field" in problem and "target.records.spf" in problem


def test_a_client_secret_must_be_a_reference(plan_file: Path) -> None:
    plan_file.write_text(plan_file.read_text().replace('secret: "file:.sandbox/secrets/clients/aruba-protocollo"',
                                                       'secret: "hunter2"'))
    [problem] = _problems(plan_file)
    assert "clients.accounts.protocollo.source.secret" in problem and "hunter2" not in problem


def test_what_a_switch_writes_keeps_the_zones_own_txt(plan_file: Path) -> None:
    plan = load_plan(plan_file)
    assert record_count(plan) == 4
    rrsets = switch_rrsets(plan, "target", ttl=300, apex_txt=["v=spf1 include:old -all", "ms=verification"])
    txt = next(r for r in rrsets if r["type"] == "TXT")
    assert txt["values"] == ['"ms=verification"', '"v=spf1 include:_spf-legalmail.infocert.it -all"']
    assert {(r["record"], r["type"], r["state"]) for r in rrsets} == {
        ("pec.fnofi.it.", "TXT", "present"), ("_imaps._tcp.pec.fnofi.it.", "SRV", "present"),
        ("_submissions._tcp.pec.fnofi.it.", "SRV", "present"), ("webmail.pec.fnofi.it.", "CNAME", "present")}
    assert [r.label for r in wanted_records(plan, "source")] == ["SPF TXT", "SRV _imaps._tcp",
                                                                "SRV _submissions._tcp", "CNAME webmail"]


def test_the_rehearsal_plan_and_inventory_are_write_environments_surroundings(tmp_path: Path) -> None:
    committed = load_plan(REHEARSAL / "plan.yaml")
    generated = load_plan(write_environment(tmp_path, base_port=10000, surroundings=True).plan)
    for side in ("source", "target"):
        assert committed.provider(side).records == generated.provider(side).records
        assert committed.provider(side).smtp == generated.provider(side).smtp
    assert committed.clients.model_dump(exclude={"accounts"}) == generated.clients.model_dump(exclude={"accounts"})
    assert {k: (a.address, a.source.user, a.target.user) for k, a in committed.clients.accounts.items()} == \
        {k: (a.address, a.source.user, a.target.user) for k, a in generated.clients.accounts.items()}
    assert (committed.sandbox.relay_port, committed.sandbox.mta_ports) == \
        (generated.sandbox.relay_port, generated.sandbox.mta_ports)
    hosts = yaml.safe_load((REHEARSAL / "hosts.yml").read_text())["all"]["children"]["pec_clients"]["hosts"]
    generated_hosts = yaml.safe_load((tmp_path / "hosts.yml").read_text())["all"]["children"]["pec_clients"]["hosts"]
    assert hosts.keys() == generated_hosts.keys() == {"protocollo", "relay"}
    assert hosts["relay"]["pec_client_relay"]["listen"] == f"127.0.0.1:{committed.sandbox.relay_port}"
    assert not any("secret" in key or "password" in key for host in hosts.values() for key in host)
