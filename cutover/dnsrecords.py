"""The records that follow the provider besides the MX (plan ``records:``): SPF TXT, RFC 6186 SRV, webmail CNAME.

Pure functions, no I/O: which records a plan manages, what each provider wants there, and the RRsets a switch
writes. Used by :mod:`cutover.dnschange` (the change) and ``checks/dns.py`` (the checks), so both agree.

A kind is *managed* when either provider declares it. Switching to a provider that does not declare it removes
it. The SPF is one string among the apex's TXT strings: a switch replaces every ``v=spf1`` string (a domain
publishes exactly one SPF record, RFC 7208 3.2) and keeps the other TXT strings (site verifications, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from cutover.plan import Plan

Side = Literal["source", "target"]
Kind = Literal["spf", "imaps", "submissions", "webmail"]
KINDS: tuple[Kind, ...] = ("spf", "imaps", "submissions", "webmail")
SPF_PREFIX = "v=spf1 "


@dataclass(frozen=True)
class WantedRecord:
    """One managed record as one provider wants it: ``value`` is rdata text (SRV, CNAME) or the SPF string;
    ``None`` means the provider wants no such record."""

    kind: Kind
    name: str  # absolute, lower case, trailing dot
    rdtype: Literal["TXT", "SRV", "CNAME"]
    value: str | None

    @property
    def label(self) -> str:
        """How reports name it: ``SPF TXT``, ``SRV _imaps._tcp``, ``CNAME webmail``."""
        if self.kind == "spf":
            return "SPF TXT"
        if self.rdtype == "SRV":
            return f"SRV _{self.kind}._tcp"
        return f"CNAME {self.name.split('.', 1)[0]}"

    def shown(self) -> str:
        return "(none)" if self.value is None else (f'"{self.value}"' if self.kind == "spf" else self.value)


def managed_kinds(plan: Plan) -> list[Kind]:
    """The record kinds either provider declares, in a fixed order."""
    return [k for k in KINDS if any(getattr(plan.provider(s).records, k) is not None for s in ("source", "target"))]


def wanted_records(plan: Plan, side: Side) -> list[WantedRecord]:
    """Every managed record as ``side``'s provider wants it (value None: absent)."""
    zone = f"{plan.dns.zone}."
    records = plan.provider(side).records
    out = []
    for kind in managed_kinds(plan):
        if kind == "spf":
            out.append(WantedRecord(kind, zone, "TXT", records.spf))
        elif kind in ("imaps", "submissions"):
            srv = getattr(records, kind)
            out.append(WantedRecord(kind, f"_{kind}._tcp.{zone}", "SRV", srv.rdata() if srv is not None else None))
        else:
            alias = next(plan.provider(s).records.webmail for s in ("source", "target")
                         if plan.provider(s).records.webmail is not None)
            out.append(WantedRecord(kind, f"{alias.name}.{zone}", "CNAME",
                                    records.webmail.target if records.webmail is not None else None))
    return out


def record_count(plan: Plan) -> int:
    """How many records follow the provider besides the MX."""
    return len(managed_kinds(plan))


def txt_rdata(text: str) -> str:
    """A TXT string as rdata text: quoted, escaped, split into 255-byte character-strings."""
    raw = text.encode("utf-8")
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def is_spf(text: str) -> bool:
    return text.lower().startswith(SPF_PREFIX) or text.lower() == SPF_PREFIX.strip()


def switch_rrsets(plan: Plan, side: Side, *, ttl: int, apex_txt: Sequence[str]) -> list[dict]:
    """The RRsets (besides the MX) a switch to ``side`` writes, as ``update_rrsets.yml`` takes them.

    ``apex_txt`` are the TXT strings the apex serves now: every one but the SPF is kept.
    """
    out = []
    for record in wanted_records(plan, side):
        if record.kind == "spf":
            texts = [t for t in apex_txt if not is_spf(t)] + ([record.value] if record.value else [])
            out.append({"record": record.name, "type": "TXT", "ttl": ttl, "values": [txt_rdata(t) for t in texts],
                        "state": "present" if texts else "absent"})
        elif record.value is None:
            out.append({"record": record.name, "type": record.rdtype, "ttl": ttl, "values": [], "state": "absent"})
        else:
            out.append({"record": record.name, "type": record.rdtype, "ttl": ttl, "values": [record.value],
                        "state": "present"})
    return out


__all__ = ["WantedRecord", "managed_kinds", "wanted_records", "record_count", "switch_rrsets", "txt_rdata", "is_spf",
           "KINDS"]
