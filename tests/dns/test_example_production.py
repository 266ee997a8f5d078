"""The example production plan loads, holds no secret value, and its Ansible inventory names the DNS primary."""

from __future__ import annotations

from pathlib import Path

import yaml

from cutover.plan import load_plan

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example-production"


def test_example_production_plan_and_hosts_agree() -> None:
    plan = load_plan(EXAMPLE / "plan.yaml")
    assert plan.dns.tsig.secret.startswith("env:")
    assert plan.source.mx_set == {(10, "mx.pec.aruba.it.")} and plan.target.mx_set == {(10, "mx.cert.legalmail.it.")}
    hosts = yaml.safe_load((EXAMPLE / "hosts.yml").read_text(encoding="utf-8"))["all"]["hosts"]
    assert plan.dns.ansible_inventory == EXAMPLE / "hosts.yml"
    assert plan.dns.primary.name in hosts  # the playbooks run on the host named like the primary
    assert not any("secret" in key for host in hosts.values() for key in host)
