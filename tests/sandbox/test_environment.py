"""The committed rehearsal environment and write_environment agree; generated PEC messages are well formed."""

from __future__ import annotations

import email
import random
import re
import subprocess
from pathlib import Path

import yaml

from cutover.inventory import load_inventory
from cutover.plan import load_plan
from cutover.sandbox import SandboxCA, write_environment
from cutover.sandbox.pec_messages import PecMessageFactory, Signer

REPO = Path(__file__).resolve().parents[2]
REHEARSAL = REPO / "inventory" / "rehearsal"


def _ports(plan) -> dict[str, int]:
    return {
        "aruba": plan.source.imap.port,
        "infocert": plan.target.imap.port,
        "ns1": plan.dns.primary.port,
        "authoritative": tuple(s.port for s in plan.dns.authoritative),
        "resolver": plan.dns.resolvers[0].port,
        "webmail": plan.sandbox.webmail_port,
        "webmail_url": plan.target.webmail[0].url,
        "submission": str(plan.target.smtp),
    }


def test_rehearsal_plan_has_the_ports_of_write_environment_base_10000(tmp_path: Path) -> None:
    committed = load_plan(REHEARSAL / "plan.yaml")
    generated = load_plan(write_environment(tmp_path, base_port=10000, surroundings=True).plan)
    assert _ports(committed) == _ports(generated)
    assert _ports(committed)["aruba"] == 10993 and _ports(committed)["webmail"] == 10443
    assert committed.source.mx_set == generated.source.mx_set
    assert committed.sandbox.state_dir == REPO / ".sandbox"


def test_generated_environment_is_complete_and_offset(tmp_path: Path) -> None:
    env = write_environment(tmp_path, base_port=23000, mailboxes=25)
    plan = load_plan(env.plan)
    assert plan.source.imap.port == 23993 and plan.target.imap.port == 24993
    assert plan.sandbox.state_dir == (tmp_path / ".sandbox").resolve()
    inventory = load_inventory(plan)
    assert len(inventory) == 25 and len({m.address for m in inventory}) == 25
    assert inventory.mailboxes[0].source_secret.target.startswith(str(plan.sandbox.state_dir))
    hosts = yaml.safe_load(env.hosts.read_text())["all"]["hosts"]["ns1"]
    assert hosts["dns_port"] == 23053 and hosts["ansible_connection"] == "local"


def _values(node) -> list[str]:
    """Every scalar value of a YAML tree (keys are names; values are what could carry a secret)."""
    if isinstance(node, dict):
        return [v for value in node.values() for v in _values(value)]
    if isinstance(node, list):
        return [v for value in node for v in _values(value)]
    return [str(node)]


# What a TSIG key (or any generated secret) looks like: a long run of base64 with upper, lower case and digits
# (a path such as .sandbox/secrets/tsig.key is not one).
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def _key_like(text: str) -> bool:
    return any(re.search("[A-Z]", run) and re.search("[a-z]", run) and re.search("[0-9]", run)
               for run in _BASE64_RUN.findall(text))


def test_rehearsal_hosts_inventory_has_no_secret() -> None:
    hosts = yaml.safe_load((REHEARSAL / "hosts.yml").read_text())
    ns1 = hosts["all"]["hosts"]["ns1"]
    plan = load_plan(REHEARSAL / "plan.yaml")
    assert ns1["dns_port"] == plan.dns.primary.port
    assert ns1["tsig_key_name"] == plan.dns.tsig.name
    # The key is referenced by the path of its mode-600 file, the same file the plan's tsig.secret names.
    assert ns1["tsig_key_secret_file"].endswith("/.sandbox/secrets/tsig.key")
    assert plan.dns.tsig.secret.endswith("/.sandbox/secrets/tsig.key")
    values = _values(hosts)
    assert not [v for v in values if _key_like(v)], "a value of hosts.yml looks like a key"


def test_a_running_sandbox_keeps_its_tsig_key_out_of_the_ansible_inventory(sandbox_env) -> None:
    plan = sandbox_env.plan
    key = plan.secret(plan.dns.tsig.secret).reveal()
    assert _key_like(key)  # the rule above recognises a real key
    hosts_text = sandbox_env.environment.hosts.read_text()
    assert key not in hosts_text and not [v for v in _values(yaml.safe_load(hosts_text)) if _key_like(v)]


def _factory(tmp_path: Path, seed: int) -> PecMessageFactory:
    ca = SandboxCA(tmp_path / "ca")
    ca.ensure()
    pair = ca.signer_pair()
    return PecMessageFactory(Signer.load(pair.cert, pair.key), random.Random(seed))


def test_pec_message_is_signed_envelope_around_original_and_daticert(tmp_path: Path) -> None:
    factory = _factory(tmp_path, 7)
    raw = factory.posta_certificata(sender="a@pec.example.it", recipients=["mario.rossi@pec.fnofi.it"],
                                    attachments=[factory.attachment(10_000)])
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/signed"
    assert msg.get_param("protocol") == "application/pkcs7-signature"
    mixed, signature = msg.get_payload()
    names = [p.get_filename() for p in mixed.get_payload()]
    assert names == [None, "daticert.xml", "postacert.eml"]
    assert signature.get_filename() == "smime.p7s"
    # The detached signature verifies with openssl against the sandbox CA over the signed part's bytes.
    boundary = msg.get_boundary().encode()
    signed_part = raw.split(b"--" + boundary + b"\r\n")[1].rsplit(b"\r\n", 1)[0]
    (tmp_path / "content").write_bytes(signed_part)
    (tmp_path / "sig.der").write_bytes(signature.get_payload(decode=True))
    result = subprocess.run(["openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig.der",
                             "-content", tmp_path / "content", "-CAfile", tmp_path / "ca" / "ca.pem",
                             "-purpose", "any", "-out", "/dev/null"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_receipts_and_determinism(tmp_path: Path) -> None:
    a, b = _factory(tmp_path, 3), _factory(tmp_path, 3)
    for kind in ("accettazione", "avvenuta-consegna", "mancata-consegna"):
        ra = a.receipt(kind, sender="mario.rossi@pec.fnofi.it", recipients=["x@pec.example.it"])
        rb = b.receipt(kind, sender="mario.rossi@pec.fnofi.it", recipients=["x@pec.example.it"])
        assert ra == rb
        assert f"X-Ricevuta: {kind}".encode() in ra and b'tipo="' + kind.encode() + b'"' in ra
        assert (b"postacert.eml" in ra) == (kind != "accettazione")
    assert _factory(tmp_path, 4).receipt("accettazione", sender="m@x.it", recipients=["y@x.it"]) != \
        _factory(tmp_path, 3).receipt("accettazione", sender="m@x.it", recipients=["y@x.it"])
