"""Readiness, days before the cutover: can every mailbox be read on the source and written on the target?

Per mailbox: log in on the source and on the target (verified TLS, the plan's auth), read the quota where the
server offers it (GETQUOTAROOT INBOX), and classify:

=================  =======================================================================================
ready              both logins work and the source content fits the target quota
bad-credentials    a login was refused: the member left 2FA on or changed the password (side says where)
target-missing     the mailbox does not exist on the target
over-quota         the source mailbox uses more than the target mailbox may hold
unreachable        a server did not answer (refused, timed out, dropped)
tls-failure        the TLS handshake or the certificate failed
throttled          the provider said "too many / slow down" (a connection or rate limit): not the member's doing
=================  =======================================================================================

IMAP servers answer "wrong password" and "no such user" the same way. To tell them apart on the target, give
the target an admin (master) account: ``target.auth.master_user`` + ``master_secret``. With mode ``password``
those are then used only for this existence probe after a refused member login; with mode ``master`` a
refused login *is* a missing mailbox (unless every mailbox is refused: then the master credentials are wrong).
Without a master account a refused target login is reported as bad-credentials "or missing".
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol

from imapclient import IMAPClient

from checks.providers import ProviderProfile, provider_profile
from cutover.errors import AuthFailed, ConnectionLost, MailboxError, SecretError, Throttled, TlsFailed
from cutover.imap import Side, session
from cutover.inventory import Inventory, Mailbox
from cutover.plan import Plan
from cutover.results import CheckResult, markdown_table

Status = Literal["ready", "bad-credentials", "target-missing", "over-quota", "unreachable", "tls-failure", "no-secret",
                 "throttled"]
STATUSES: tuple[Status, ...] = ("ready", "bad-credentials", "target-missing", "over-quota", "unreachable", "tls-failure",
                                "no-secret", "throttled")
CSV_COLUMNS = ("address", "status", "side", "action", "detail", "source_used_mb", "target_used_mb", "target_limit_mb",
               "source_login", "target_login", "to_copy_mb", "headroom_mb")


@dataclass(frozen=True)
class SideProbe:
    """One side's answer for one mailbox: a status (ready when the login worked) and the quota seen (KiB)."""

    side: Side
    status: Status
    detail: str = ""
    used_kib: int | None = None
    limit_kib: int | None = None


@dataclass(frozen=True)
class MailboxReadiness:
    """One mailbox's verdict and what a person must do about it."""

    address: str
    status: Status
    side: str  # "source", "target", "both" or "" when ready
    action: str
    detail: str
    source: SideProbe
    target: SideProbe
    duration_s: float = 0.0
    logins: tuple[tuple[str, str], ...] = ()  # (side, login) where the login is not the address
    to_copy_kib: int | None = None  # what is still to copy (source use less what the ledger has on the target)

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def row(self) -> dict[str, str]:
        return {
            "address": self.address,
            "status": self.status,
            "side": self.side,
            "action": self.action,
            "detail": self.detail,
            "source_used_mb": _mb(self.source.used_kib),
            "target_used_mb": _mb(self.target.used_kib),
            "target_limit_mb": _mb(self.target.limit_kib),
            "source_login": dict(self.logins).get("source", ""),
            "target_login": dict(self.logins).get("target", ""),
            "to_copy_mb": _mb(self.to_copy_kib),
            "headroom_mb": _mb(_headroom(self.target, self.to_copy_kib)),
        }

    def as_result(self) -> CheckResult:
        return CheckResult(name="readiness", ok=self.ready, expected="ready", observed=self.status,
                           target=self.address, detail=f"{self.side}: {self.detail}" if self.side else self.detail,
                           reason="" if self.ready else self.status, duration_s=self.duration_s,
                           data={"source": asdict(self.source), "target": asdict(self.target), "action": self.action})


@dataclass(frozen=True)
class ReadinessReport:
    """Every mailbox's readiness, in inventory order; render with rows/write_csv/summary/markdown."""

    mailboxes: list[MailboxReadiness]
    source_name: str = "source"
    target_name: str = "target"
    providers: tuple[ProviderProfile, ...] = ()

    @property
    def ok(self) -> bool:
        return all(m.ready for m in self.mailboxes)

    def rows(self) -> list[dict[str, str]]:
        return [m.row() for m in self.mailboxes]

    def results(self) -> list[CheckResult]:
        return [m.as_result() for m in self.mailboxes]

    def not_ready(self) -> list[MailboxReadiness]:
        return [m for m in self.mailboxes if not m.ready]

    def summary(self) -> dict[str, int]:
        """Mailboxes per status (every status listed, zeros included) and the total."""
        counts = Counter(m.status for m in self.mailboxes)
        return {**{s: counts.get(s, 0) for s in STATUSES}, "total": len(self.mailboxes)}

    def write_csv(self, path: str | Path) -> Path:
        """The CSV a person can act on: who, what is wrong, on which side, what to do (no secrets in it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows())
        return path

    def markdown(self) -> str:
        s = self.summary()
        head = (f"### Readiness: {s['ready']}/{s['total']} mailboxes ready "
                f"({self.source_name} → {self.target_name})\n\n")
        counts = ", ".join(f"{k}: {v}" for k, v in s.items() if k not in ("total", "ready") and v)
        if counts:
            head += f"Not ready: {counts}.\n\n"
        rows = [m.row() for m in self.not_ready()]
        body = head + (markdown_table(rows) if rows else "Every mailbox is ready.\n")
        if self.providers:
            body += "\n#### Providers\n\n" + "\n".join(line for p in self.providers for line in p.lines()) + "\n"
        return body


ProgressFn = Callable[[int, int, MailboxReadiness], None]


class CopiedBytes(Protocol):
    """What readiness needs from the copy ledger (duck-typed so checks/ does not depend on it)."""

    def done_bytes(self, address: str) -> int: ...


def readiness(plan: Plan, inventory: Inventory, *, on_progress: ProgressFn | None = None,
              ledger: CopiedBytes | None = None, probe_providers: bool = True) -> ReadinessReport:
    """Probe every mailbox on both sides, each side as many mailboxes at a time as its ``max_connections`` (the
    two sides at once: a login round trip on one provider never waits for the other's); then each provider once
    (capabilities, session limit, round trip: :mod:`checks.providers`), as a member whose login worked there.
    With ``ledger``, the quota headroom is for what is still to copy."""
    mailboxes = list(inventory)
    existence_plan = _existence_plan(plan)

    def workers(side: Side) -> int:
        return max(1, min(plan.provider(side).max_connections, len(mailboxes)))

    def timed_probe(side: Side, mb: Mailbox) -> tuple[SideProbe, float]:
        started = time.monotonic()
        probe = probe_side(plan, side, mb)
        if side == "target" and probe.status == "bad-credentials":
            probe = _tell_missing_from_refused(plan, mb, probe, existence_plan)
        return probe, time.monotonic() - started

    verdicts: list[MailboxReadiness] = []
    with ThreadPoolExecutor(max_workers=workers("source"), thread_name_prefix="readiness-source") as source_pool, \
            ThreadPoolExecutor(max_workers=workers("target"), thread_name_prefix="readiness-target") as target_pool:
        sources = [source_pool.submit(timed_probe, "source", mb) for mb in mailboxes]
        targets = [target_pool.submit(timed_probe, "target", mb) for mb in mailboxes]
        for n, (mb, source_future, target_future) in enumerate(zip(mailboxes, sources, targets), start=1):
            (source, source_s), (target, target_s) = source_future.result(), target_future.result()
            verdict = _verdict(plan, mb, source, target, ledger.done_bytes(mb.address) if ledger is not None else 0,
                               seconds=max(source_s, target_s))
            verdicts.append(verdict)
            if on_progress is not None:
                on_progress(n, len(mailboxes), verdict)
    verdicts = _master_refused_everywhere(plan, verdicts)
    profiles: list[ProviderProfile] = []
    if probe_providers:
        for side in ("source", "target"):
            member = next((mb for mb, v in zip(mailboxes, verdicts) if getattr(v, side).status == "ready"), None)
            if member is None:
                profiles.append(ProviderProfile(side, plan.provider(side).name, False,
                                                detail="no member could log in here to probe it"))
            else:
                profiles.append(provider_profile(plan, side, member))  # type: ignore[arg-type]
    return ReadinessReport(verdicts, plan.source.name, plan.target.name, tuple(profiles))


def mailbox_readiness(plan: Plan, mailbox: Mailbox, *, existence_plan: Plan | None = None,
                      copied_bytes: int = 0) -> MailboxReadiness:
    """Both sides of one mailbox, each logged in with the member's login name there, classified (see the module
    doc); ``copied_bytes``: what the ledger says is already on the target (not needed again in its quota)."""
    started = time.monotonic()
    source = probe_side(plan, "source", mailbox)
    target = probe_side(plan, "target", mailbox)
    if target.status == "bad-credentials":
        target = _tell_missing_from_refused(plan, mailbox, target, existence_plan)
    return _verdict(plan, mailbox, source, target, copied_bytes, seconds=time.monotonic() - started)


def _verdict(plan: Plan, mailbox: Mailbox, source: SideProbe, target: SideProbe, copied_bytes: int, *,
             seconds: float) -> MailboxReadiness:
    to_copy = None if source.used_kib is None else max(0, source.used_kib - copied_bytes // 1024)
    status, side, detail = _classify(plan, source, target, to_copy)
    return MailboxReadiness(mailbox.address, status, side, _action(plan, status, side, source, target, to_copy),
                            detail, source, target, seconds, tuple(mailbox.logins_differ().items()), to_copy)


def probe_side(plan: Plan, side: Side, mailbox: Mailbox) -> SideProbe:
    """Log in on ``side`` and read the INBOX quota root; a failure is a status, never an exception."""
    try:
        # The credentials first: a missing secret is the operator's to fix, not the member's, whatever the network.
        _credentials_on_file(plan, side, mailbox)
        with session(plan, side, mailbox) as client:
            used, limit = _storage_quota(client)
    except SecretError as exc:
        return SideProbe(side, "no-secret", f"no password on file: {exc}")
    except AuthFailed as exc:
        return SideProbe(side, "bad-credentials", exc.detail)
    except TlsFailed as exc:
        return SideProbe(side, "tls-failure", exc.detail)
    except Throttled as exc:
        return SideProbe(side, "throttled", exc.detail)
    except (ConnectionLost, MailboxError) as exc:
        return SideProbe(side, "unreachable", exc.detail)
    return SideProbe(side, "ready", "logged in", used, limit)


def _credentials_on_file(plan: Plan, side: Side, mailbox: Mailbox) -> None:
    auth = plan.provider(side).auth
    if auth.mode == "master":
        plan.secret(auth.master_secret or "")
    else:
        mailbox.password(side)


def _storage_quota(client: IMAPClient) -> tuple[int | None, int | None]:
    """(usage, limit) of the STORAGE resource in KiB, or (None, None) when the server offers no quota."""
    if not client.has_capability("QUOTA"):
        return None, None
    try:
        _roots, quotas = client.get_quota_root("INBOX")
    except Exception:  # quota is informative; a server that fails GETQUOTAROOT still lets the mailbox move
        return None, None
    for quota in quotas:
        if str(quota.resource).upper() == "STORAGE":
            return int(quota.usage), int(quota.limit)
    return None, None


def _existence_plan(plan: Plan) -> Plan | None:
    """The plan with the target logging in as its master user, when one is configured for password mode."""
    auth = plan.target.auth
    if auth.mode != "password" or not (auth.master_user and auth.master_secret):
        return None
    master = auth.model_copy(update={"mode": "master"})
    return plan.model_copy(update={"target": plan.target.model_copy(update={"auth": master})})


def _tell_missing_from_refused(plan: Plan, mailbox: Mailbox, refused: SideProbe,
                               existence_plan: Plan | None) -> SideProbe:
    target = plan.target.name
    if plan.target.auth.mode == "master":
        return SideProbe("target", "target-missing",
                         f"the master login for this mailbox was refused: it does not exist on {target}")
    if existence_plan is None:
        return SideProbe("target", "bad-credentials",
                         f"{refused.detail}; or the mailbox does not exist on {target} (the server answers both "
                         "the same; set target.auth.master_user/master_secret to tell them apart)")
    probe = probe_side(existence_plan, "target", mailbox)
    if probe.status == "ready":
        return SideProbe("target", "bad-credentials",
                         f"{refused.detail}; the mailbox exists on {target}, the member's password is wrong",
                         probe.used_kib, probe.limit_kib)
    if probe.status == "bad-credentials":
        return SideProbe("target", "target-missing",
                         f"the mailbox does not exist on {target} (the admin login for it was refused too)")
    return refused


def _master_refused_everywhere(plan: Plan, verdicts: list[MailboxReadiness]) -> list[MailboxReadiness]:
    # In master mode "refused for every mailbox" means the master credentials are wrong, not that no one exists.
    if plan.target.auth.mode != "master" or len(verdicts) < 2:
        return verdicts
    if not all(v.target.status == "target-missing" for v in verdicts):
        return verdicts
    fixed = []
    for v in verdicts:
        target = SideProbe("target", "bad-credentials",
                           f"the {plan.target.name} master user was refused for every mailbox: check target.auth")
        status, side, detail = _classify(plan, v.source, target)
        fixed.append(MailboxReadiness(v.address, status, side, _action(plan, status, side, v.source, target), detail,
                                      v.source, target, v.duration_s, v.logins))
    return fixed


def _headroom(target: SideProbe, to_copy_kib: int | None) -> int | None:
    """KiB left on the target's quota once what is still to copy is there (negative: it does not fit)."""
    if target.limit_kib is None or to_copy_kib is None:
        return None
    return target.limit_kib - (target.used_kib or 0) - to_copy_kib


def _classify(plan: Plan, source: SideProbe, target: SideProbe,
              to_copy_kib: int | None = None) -> tuple[Status, str, str]:
    """The mailbox status: the source's problem first (nothing moves without it), then the target's, then quota."""
    if source.status != "ready" and target.status != "ready":
        if source.status == target.status and source.status in ("unreachable", "tls-failure"):
            return source.status, "both", f"{plan.source.name}: {source.detail}; {plan.target.name}: {target.detail}"
        return source.status, "source", f"{source.detail} (also {plan.target.name}: {target.status}, {target.detail})"
    if source.status != "ready":
        return source.status, "source", source.detail
    if target.status != "ready":
        return target.status, "target", target.detail
    to_copy = source.used_kib if to_copy_kib is None else to_copy_kib
    headroom = _headroom(target, to_copy)
    if headroom is not None and headroom < 0:
        return ("over-quota", "target",
                f"{_mb(to_copy)} MB still to copy from {plan.source.name}, {plan.target.name} has "
                f"{_mb((target.limit_kib or 0) - (target.used_kib or 0))} MB free of {_mb(target.limit_kib)} MB")
    quota = "" if headroom is None else f"; fits the {plan.target.name} quota ({_mb(headroom)} MB to spare)"
    return "ready", "", f"both logins work{quota}"


def _action(plan: Plan, status: Status, side: str, source: SideProbe, target: SideProbe,
            to_copy_kib: int | None = None) -> str:
    src, dst = plan.source.name, plan.target.name
    provider = src if side == "source" else dst if side == "target" else f"{src} and {dst}"
    if status == "ready":
        return "nothing to do"
    if status == "bad-credentials" and side == "source":
        return (f"ask the member to switch 2FA off on {src} and confirm the current {src} password "
                "(then update the inventory secret)")
    if status == "bad-credentials":
        if "master user" in target.detail:
            return f"fix the {dst} master credentials in the plan (target.auth)"
        return (f"ask the member to confirm the {dst} password (2FA off); if unsure, ask {dst} whether the "
                "mailbox exists")
    if status == "target-missing":
        return f"ask {dst} to create the mailbox, then run readiness again"
    if status == "over-quota":
        need = (target.used_kib or 0) + (source.used_kib if to_copy_kib is None else to_copy_kib)
        return (f"ask {dst} for at least {_mb(need)} MB of quota, or the member to archive old mail "
                f"on {src}")
    if status == "no-secret":
        return (f"operator: put the member's {provider} password where the inventory's {side}_secret points "
                "(or fix the reference); nothing for the member to do")
    if status == "tls-failure":
        return f"check the {provider} server name and the CA bundle in the plan (TLS is never switched off)"
    if status == "throttled":
        return (f"operator: {provider} limits sessions or traffic; lower its max_connections in the plan or run "
                "readiness again later (nothing for the member to do)")
    return f"check that {provider} is reachable (network, firewall, provider status), then run readiness again"


def _mb(kib: int | None) -> str:
    return "" if kib is None else f"{kib / 1024:.2f}"


__all__ = ["readiness", "mailbox_readiness", "probe_side", "ReadinessReport", "MailboxReadiness", "SideProbe",
           "STATUSES", "CSV_COLUMNS"]
