"""Canary IMAP logins on the target: log in with verified TLS, list folders, select INBOX, compare counts.

Every login goes through :func:`cutover.imap.session`, so a canary logs in exactly as the copy engine does.
Canaries are probed concurrently, at most ``target.max_connections`` at a time.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from cutover.errors import AuthFailed, ConnectionLost, MailboxError, SecretError, TlsFailed
from cutover.imap import session
from cutover.inventory import Inventory, Mailbox
from cutover.plan import Plan
from cutover.results import CheckResult


class VerifiedCounts(Protocol):
    """What the access check needs from the copy ledger (duck-typed so checks/ does not depend on it)."""

    def verified_count(self, address: str, folder: str) -> int: ...


def failure_reason(exc: BaseException) -> str:
    """The access-check classification of a login failure: auth-failure, tls-failure, timeout, refused, ..."""
    if isinstance(exc, AuthFailed):
        return "auth-failure"
    if isinstance(exc, TlsFailed):
        return "tls-failure"
    if isinstance(exc, ConnectionLost):
        # ConnectionLost carries no sub-kind; cutover.imap writes these two details verbatim.
        if "refused" in exc.detail:
            return "refused"
        if "timed out" in exc.detail:
            return "timeout"
        return "unreachable"
    if isinstance(exc, SecretError):
        return "no-secret"
    if isinstance(exc, MailboxError):
        return "imap-error"
    return "error"


def canary_logins(plan: Plan, inventory: Inventory, *, ledger: VerifiedCounts | None = None) -> list[CheckResult]:
    """One result per canary mailbox of ``inventory``, in inventory order."""
    canaries = list(inventory.canaries)
    if not canaries:
        return []
    workers = min(plan.target.max_connections, len(canaries))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="canary") as pool:
        return list(pool.map(lambda mb: canary_login(plan, mb, ledger=ledger), canaries))


def canary_login(plan: Plan, mailbox: Mailbox, *, ledger: VerifiedCounts | None = None) -> CheckResult:
    """Log in on the target as ``mailbox``, list folders, select INBOX (read-only), compare with the ledger."""
    target = plan.target
    expected = "login, folders listed, INBOX selected"
    if ledger is not None:
        expected += ", INBOX ≥ ledger's verified count"
    started = time.monotonic()
    data: dict[str, Any] = {"address": mailbox.address, "server": f"{target.name} {target.imap}"}
    try:
        with session(plan, "target", mailbox) as client:
            folders = [name for _flags, _sep, name in client.list_folders()]
            selected = client.select_folder("INBOX", readonly=True)
            exists = int(selected.get(b"EXISTS", 0))
    except (MailboxError, SecretError) as exc:
        reason = failure_reason(exc)
        hint = getattr(exc, "hint", "")
        return CheckResult(
            name="canary login", ok=False, expected=expected, observed=_short(exc), target=mailbox.address,
            detail=hint, reason=reason, duration_s=time.monotonic() - started, data=data,
        )
    data.update(folders=len(folders), inbox=exists)
    observed = f"logged in; {len(folders)} folders; INBOX {exists} messages"
    ok, reason, detail = True, "", ""
    if ledger is not None:
        verified = ledger.verified_count(mailbox.address, "INBOX")
        data["verified"] = verified
        observed += f" (ledger verified {verified})"
        # New mail may land on the target after the copy, so more is fine; fewer means messages are missing.
        if exists < verified:
            ok, reason = False, "mismatch"
            detail = f"{verified - exists} verified message(s) not in the target INBOX"
    return CheckResult(name="canary login", ok=ok, expected=expected, observed=observed, target=mailbox.address,
                       detail=detail, reason=reason, duration_s=time.monotonic() - started, data=data)


def _short(exc: BaseException) -> str:
    # MailboxError.detail is the part without the address/server/hint (those have their own columns).
    return getattr(exc, "detail", None) or str(exc)


__all__ = ["canary_logins", "canary_login", "failure_reason", "VerifiedCounts"]
