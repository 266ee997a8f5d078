#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: bring several RRsets of a zone to their wanted state in ONE TSIG-signed DNS UPDATE.

community.general.nsupdate sends one UPDATE message per record, so an MX and an SPF change land in two
zone serials: a secondary or a resolver can see the MX of one provider with the SPF of the other. A single
UPDATE is applied atomically by the primary (RFC 2136 3.7): one new serial holds every change.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: pec_rrsets
short_description: Replace or delete several RRsets of a zone in one TSIG-signed DNS UPDATE (atomic)
description:
  - Reads each RRset from the primary, computes what differs (values or TTL), sends every change in one
    UPDATE message, then reads the RRsets back and fails if the primary does not serve what was asked.
  - Check mode reports what would change and sends nothing. Idempotent. Returns before/after lines per RRset.
options:
  server: {description: primary address, type: str, required: true}
  port: {description: primary port, type: int, default: 53}
  protocol: {description: transport, type: str, choices: [tcp, udp], default: tcp}
  zone: {description: the zone, type: str, required: true}
  key_name: {description: TSIG key name, type: str, required: true}
  key_algorithm: {description: TSIG algorithm, type: str, default: hmac-sha256}
  key_secret: {description: TSIG secret (base64), type: str, required: true, no_log: true}
  timeout: {description: seconds per DNS exchange, type: float, default: 10}
  rrsets:
    description: list of {record (absolute name), type, ttl, values (rdata text), state (present/absent)}
    type: list
    elements: dict
    required: true
requirements: [dnspython]
"""

from ansible.module_utils.basic import AnsibleModule

try:
    import dns.exception
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.tsig
    import dns.tsigkeyring
    import dns.update
    HAS_DNSPYTHON = True
except ImportError:  # reported by main()
    HAS_DNSPYTHON = False

# What may not share a name with a CNAME (RFC 1034 3.6.2): checked before adding one, because a primary
# silently ignores a CNAME added beside other data (RFC 2136 3.4.2.2).
_BESIDE_CNAME = ("A", "AAAA", "MX", "TXT", "SRV", "NS")


def _exchange(module, message):
    p = module.params
    if p["protocol"] == "udp":
        return dns.query.udp(message, p["server"], port=p["port"], timeout=p["timeout"])
    return dns.query.tcp(message, p["server"], port=p["port"], timeout=p["timeout"])


def _served(module, name, rdtype):
    """(ttl, frozenset of rdata) the primary serves for name/type, or None when there is none."""
    query = dns.message.make_query(name, rdtype)
    response = _exchange(module, query)
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return None
    if rcode != dns.rcode.NOERROR:
        module.fail_json(msg="the primary answered %s for %s %s" % (dns.rcode.to_text(rcode), name,
                                                                     dns.rdatatype.to_text(rdtype)))
    for rrset in response.answer:
        if rrset.rdtype == rdtype and rrset.name == name:
            return rrset.ttl, frozenset(rrset)
    return None


def _serial(module, zone):
    found = _served(module, zone, dns.rdatatype.SOA)
    return int(next(iter(found[1])).serial) if found else None


def _lines(name, rdtype, state):
    if state is None:
        return []
    ttl, rdatas = state
    return sorted("%s %d IN %s %s" % (name.to_text(), ttl, dns.rdatatype.to_text(rdtype), r.to_text())
                  for r in rdatas)


def _wanted(module, spec):
    name = dns.name.from_text(spec["record"])
    try:
        rdtype = dns.rdatatype.from_text(spec["type"])
    except dns.exception.DNSException:
        module.fail_json(msg="unknown record type %r for %s" % (spec["type"], spec["record"]))
    state = spec.get("state") or "present"
    if state not in ("present", "absent"):
        module.fail_json(msg="state of %s %s must be present or absent" % (spec["record"], spec["type"]))
    if state == "absent":
        return name, rdtype, None
    values = spec.get("values") or []
    if not values:
        module.fail_json(msg="%s %s: no values (use state: absent to remove it)" % (spec["record"], spec["type"]))
    try:
        rdatas = frozenset(dns.rdata.from_text(dns.rdataclass.IN, rdtype, v) for v in values)
    except (dns.exception.DNSException, ValueError) as exc:
        module.fail_json(msg="%s %s: a value is not valid rdata (%s)" % (spec["record"], spec["type"], exc))
    return name, rdtype, (int(spec["ttl"]), rdatas)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            server=dict(type="str", required=True),
            port=dict(type="int", default=53),
            protocol=dict(type="str", choices=["tcp", "udp"], default="tcp"),
            zone=dict(type="str", required=True),
            key_name=dict(type="str", required=True),
            key_algorithm=dict(type="str", default="hmac-sha256"),
            key_secret=dict(type="str", required=True, no_log=True),
            timeout=dict(type="float", default=10.0),
            rrsets=dict(type="list", elements="dict", required=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_DNSPYTHON:
        module.fail_json(msg="dnspython is required on the control host (ansible_python_interpreter)")
    p = module.params
    zone = dns.name.from_text(p["zone"])
    try:
        wanted = [_wanted(module, spec) for spec in p["rrsets"]]
        serial_before = _serial(module, zone)
        report, changes = [], []
        for name, rdtype, want in wanted:
            have = _served(module, name, rdtype)
            changed = have != want
            if changed and want is not None and rdtype == dns.rdatatype.CNAME:
                others = [t for t in _BESIDE_CNAME if _served(module, name, dns.rdatatype.from_text(t))]
                if others:
                    module.fail_json(msg="%s has %s records: a CNAME cannot be added beside them; remove them from "
                                         "the zone first" % (name.to_text(), ", ".join(others)))
            if changed:
                changes.append((name, rdtype, want))
            report.append(dict(record=name.to_text(), type=dns.rdatatype.to_text(rdtype), changed=changed,
                               before=_lines(name, rdtype, have), after=_lines(name, rdtype, want)))
        serial_after = serial_before
        if changes and not module.check_mode:
            keyring = dns.tsigkeyring.from_text({p["key_name"]: p["key_secret"]})
            update = dns.update.Update(zone, keyring=keyring, keyalgorithm=p["key_algorithm"])
            for name, rdtype, want in changes:
                if want is None:
                    update.delete(name, rdtype)
                else:
                    update.replace(name, want[0], *sorted(want[1], key=lambda r: r.to_text()))
            response = _exchange(module, update)
            rcode = response.rcode()
            if rcode != dns.rcode.NOERROR:
                module.fail_json(msg="the primary refused the update: %s (rcode %d)%s" % (
                    dns.rcode.to_text(rcode), rcode,
                    "; is the key allowed to update the zone (allow-update)?" if rcode == dns.rcode.REFUSED else ""))
            for name, rdtype, want in changes:
                served = _served(module, name, rdtype)
                if served != want:
                    module.fail_json(msg="the primary accepted the update but serves %s for %s %s" % (
                        "; ".join(_lines(name, rdtype, served)) or "nothing", name.to_text(),
                        dns.rdatatype.to_text(rdtype)))
            serial_after = _serial(module, zone)
    except dns.tsig.PeerError as exc:
        module.fail_json(msg="%s: the primary rejected the TSIG signature (%s)" % (type(exc).__name__, exc))
    except dns.exception.Timeout:
        module.fail_json(msg="timeout: the primary %s:%s did not answer within %ss" % (p["server"], p["port"],
                                                                                      p["timeout"]))
    except (OSError, dns.exception.DNSException) as exc:
        module.fail_json(msg="%s: cannot reach the primary %s:%s (%s)" % (type(exc).__name__, p["server"], p["port"],
                                                                          exc))
    before = "".join(line + "\n" for r in report if r["changed"] for line in r["before"])
    after = "".join(line + "\n" for r in report if r["changed"] for line in r["after"])
    module.exit_json(changed=bool(changes), rrsets=report, serial_before=serial_before, serial_after=serial_after,
                     diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
