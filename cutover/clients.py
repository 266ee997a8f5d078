"""The organisation's own PEC clients (plan ``clients:``), switched between providers by the ``pec_client`` role.

One entry, :func:`switch_clients`: runs ``playbooks/pec_clients.yml`` on the inventory group through
:mod:`cutover.ansible_bridge` with the provider's endpoints from the plan and the accounts' logins for that side
(their passwords only in the bridge's mode-600 vars file), and returns a :class:`ClientsChange`: per client what
changed (with the diff), whether it was verified after the change and the evidence (the provider's queue id for the
relay's test message, the reader's INBOX) or the error. Check mode (``dry_run``) changes nothing and verifies
nothing: it shows that every host is reachable and what would change. A client that fails is a result, not an
exception; only a run that cannot start raises :class:`ClientsError`.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cutover.ansible_bridge import run_playbook
from cutover.dnsrecords import record_count
from cutover.errors import AnsibleError, ClientsError, SecretError
from cutover.plan import Plan
from cutover.results import CheckResult, markdown_table
from cutover.secrets import Secret

Side = Literal["source", "target"]
PLAYBOOK = "pec_clients.yml"


@dataclass(frozen=True)
class ClientOutcome:
    """One client (an application's settings, or a host's relay) after the role ran."""

    host: str
    client: str
    kind: str  # reader | relay
    provider: str
    endpoint: str
    login: str
    changed: bool
    check_mode: bool
    verified: bool | None  # None: not verified (check mode)
    evidence: str = ""
    error: str = ""
    diff: str = ""
    provider_queue_id: str = ""  # the relay's test message, as the provider's submission service queued it
    message_id: str = ""

    @property
    def ok(self) -> bool:
        """Switched and working (in check mode: reached, settings readable)."""
        return not self.error and (self.check_mode or bool(self.verified))

    def check(self) -> CheckResult:
        """As gate evidence: 'uses <provider> and works'."""
        expected = f"on {self.provider} ({self.endpoint}, login {self.login}) and working"
        observed = self.error or self.evidence or ("would change" if self.changed else "already set") + \
            (" (check mode)" if self.check_mode else "")
        return CheckResult(name="PEC client", ok=self.ok, expected=expected, observed=observed,
                           target=f"{self.host}: {self.client}", reason="" if self.ok else "client-not-working",
                           data={"kind": self.kind, "changed": self.changed, "provider": self.provider,
                                 "provider_queue_id": self.provider_queue_id})

    def as_row(self) -> dict[str, Any]:
        return {"host": self.host, "client": self.client, "kind": self.kind, "provider": self.provider,
                "endpoint": self.endpoint, "login": self.login,
                "changed": ("would change" if self.check_mode else "yes") if self.changed else "no",
                "working": "not checked (check mode)" if self.verified is None else ("yes" if self.verified else "NO"),
                "evidence / error": self.error or self.evidence}


@dataclass(frozen=True)
class ClientsChange:
    """What one run of the role did (or, with ``dry_run``, would do) to every client of the group."""

    to: Side
    provider: str
    dry_run: bool
    clients: list[ClientOutcome] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)  # "host: reason"
    failures: list[str] = field(default_factory=list)  # hosts that stopped before reporting, with the reason
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.clients) and all(c.ok for c in self.clients) and not self.unreachable and not \
            self._silent_failures()

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.clients)

    @property
    def working(self) -> int:
        return sum(1 for c in self.clients if c.ok)

    @property
    def diff(self) -> str:
        return "".join(c.diff for c in self.clients)

    def _silent_failures(self) -> list[str]:
        # A failure of a host that reported its clients is already in their errors.
        reported = {c.host for c in self.clients}
        return [f for f in self.failures if f.split(":", 1)[0] not in reported]

    def results(self) -> list[CheckResult]:
        """One check per client, plus one per unreachable or silently failed host (gate evidence)."""
        out = [c.check() for c in self.clients]
        for line in self.unreachable:
            host, _, why = line.partition(": ")
            out.append(CheckResult(name="PEC client host", ok=False, expected="reachable by Ansible",
                                   observed=f"unreachable: {why}"[:300], target=host, reason="unreachable"))
        for line in self._silent_failures():
            host, _, why = line.partition(": ")
            out.append(CheckResult(name="PEC client host", ok=False, expected=f"clients on {self.provider}",
                                   observed=why[:300], target=host, reason="failed"))
        return out

    def summary(self) -> str:
        """One line: how many clients are on the provider and working (in check mode: reached, would change)."""
        hosts = (f"; {len(self.unreachable)} host(s) NOT reachable" if self.unreachable else "") + \
            (f"; {len(self._silent_failures())} host(s) failed" if self._silent_failures() else "")
        if self.dry_run:
            would = sum(1 for c in self.clients if c.changed)
            failing = sum(1 for c in self.clients if not c.ok)
            return (f"check mode: {len(self.clients)} clients reached, {would} would change to {self.provider}"
                    + (f"; {failing} client(s) failed" if failing else "") + hosts)
        total = len(self.clients)
        return (f"{self.working}/{total} clients switched to {self.provider} and working"
                + ("" if self.working == total else f"; {total - self.working} NOT working") + hosts)

    def markdown(self) -> str:
        text = markdown_table([c.as_row() for c in self.clients]) if self.clients else "_(no client reported)_\n"
        problems = self.unreachable + self._silent_failures()
        if problems:
            text += "\nHosts:\n" + "".join(f"- {p}\n" for p in problems)
        if self.diff:
            text += "\n```diff\n" + self.diff + "```\n"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def switch_clients(plan: Plan, to: Side, *, dry_run: bool = False) -> ClientsChange:
    """Run the ``pec_client`` role on the plan's client group with ``to``'s provider; verify unless ``dry_run``."""
    if to not in ("source", "target"):
        raise ClientsError(f"switch_clients: to must be 'source' or 'target', not {to!r}")
    if plan.clients is None:
        raise ClientsError(f"plan {plan.name!r} has no clients section: no PEC client to switch")
    provider = plan.provider(to)
    if provider.smtp is None:
        raise ClientsError(f"{to}.smtp is missing in the plan: the clients' relay needs {provider.name}'s "
                           "submission endpoint")
    secrets: dict[str, Secret] = {}
    for name, account in plan.clients.accounts.items():
        reference = account.login(to).secret
        try:
            secrets[name] = plan.secret(reference)
        except SecretError as exc:
            raise ClientsError(f"clients.accounts.{name}.{to}.secret: {exc}") from None
    extravars = {
        "pec_clients_group": plan.clients.group,
        "pec_provider": {
            "name": provider.name,
            "imap": {"host": provider.imap.host, "port": provider.imap.port, "tls": provider.imap.tls},
            "smtp": {"host": provider.smtp.host, "port": provider.smtp.port, "tls": provider.smtp.tls},
            "ca_file": str(provider.ca_bundle) if provider.ca_bundle else "",
        },
        "pec_accounts": {name: {"address": a.address, "user": a.user(to)} for name, a in plan.clients.accounts.items()},
        "pec_client_verify_timeout_s": int(plan.clients.verify_timeout_s),
    }
    started = time.monotonic()
    try:
        result = run_playbook(plan, PLAYBOOK, extravars, check=dry_run, secrets={"pec_account_secrets": secrets},
                              tolerate_unreachable=True)
    except AnsibleError as exc:
        raise ClientsError(f"PEC clients to {provider.name}: {exc}") from None
    clients = [_outcome(d) for d in result.data]
    return ClientsChange(to=to, provider=provider.name, dry_run=dry_run, clients=clients,
                         unreachable=list(result.unreachable), failures=list(result.failures),
                         duration_s=time.monotonic() - started)


def surroundings(plan: Plan, side: Side, change: ClientsChange | None) -> dict[str, Any]:
    """What moved with the MX to ``side``: how many records (besides the MX), how many clients switched and
    working (``change``: the clients' switch, None when the plan has no clients or they did not run)."""
    clients = len(change.results()) if change is not None else 0
    return {"records": record_count(plan), "provider": plan.provider(side).name, "clients": clients,
            "working": change.working if change is not None else 0,
            "all_verified": change.ok if change is not None else plan.clients is None}


def surroundings_line(summary: dict[str, Any]) -> str:
    """``surroundings: N records, M clients switched to <provider>, all verified`` (or what was not)."""
    verified = "all verified" if summary["all_verified"] else \
        f"NOT all verified ({summary['working']}/{summary['clients']} clients working)"
    return (f"surroundings: {summary['records']} records, {summary['working']} clients switched to "
            f"{summary['provider']}, {verified}")


def _outcome(d: dict[str, Any]) -> ClientOutcome:
    verified = d.get("verified")
    return ClientOutcome(
        host=str(d.get("host", "")), client=str(d.get("client", "")), kind=str(d.get("kind", "")),
        provider=str(d.get("provider", "")), endpoint=str(d.get("endpoint", "")), login=str(d.get("login", "")),
        changed=_truthy(d.get("changed")), check_mode=_truthy(d.get("check_mode")),
        verified=None if verified in (None, "", "None") else _truthy(verified),
        evidence=str(d.get("evidence") or ""), error=str(d.get("error") or ""),
        diff=_diff_text(d.get("diffs") or []), provider_queue_id=str(d.get("provider_queue_id") or ""),
        message_id=str(d.get("message_id") or ""),
    )


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


def _diff_text(diffs: list[Any]) -> str:
    """Ansible's per-task diffs (template, lineinfile) as one unified diff; secret files only as a note."""
    out = []
    for d in diffs:
        if not isinstance(d, dict):
            continue
        path = str(d.get("before_header") or d.get("after_header") or "")
        if "note" in d:
            out.append(f"# {path}: {d['note']}\n")
        elif isinstance(d.get("postconf"), list):  # postconf -e edits: key, old value (None: unset), new value
            out += [f"--- {path}\n", f"+++ {path}\n"]
            for edit in d["postconf"]:
                if edit.get("old") not in (None, "None"):
                    out.append(f"-{edit['key']} = {edit['old']}\n")
                out.append(f"+{edit['key']} = {edit['value']}\n")
        elif isinstance(d.get("before"), str) and isinstance(d.get("after"), str):
            # Ansible names a template's source a temporary file: both sides are the destination.
            out += difflib.unified_diff(d["before"].splitlines(keepends=True), d["after"].splitlines(keepends=True),
                                        fromfile=path, tofile=path, n=0)
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


__all__ = ["switch_clients", "surroundings", "surroundings_line", "ClientsChange", "ClientOutcome", "PLAYBOOK"]
