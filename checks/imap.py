"""Canary IMAP logins on the target: log in with verified TLS, list folders, select INBOX, compare counts.

Every login goes through :func:`cutover.imap.session`, so a canary logs in exactly as the copy engine does.
Canaries are probed concurrently, at most ``target.max_connections`` at a time.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from imapclient import IMAPClient

from cutover.errors import AuthFailed, ConnectionLost, MailboxError, SecretError, Throttled, TlsFailed
from cutover.imap import session, ssl_context
from cutover.inventory import Inventory, Mailbox
from cutover.plan import Endpoint, Plan, Provider
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
    if isinstance(exc, Throttled):
        return "throttled"
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


def endpoints_reachable(plan: Plan) -> list[CheckResult]:
    """Pre-flight, no login: the source and target IMAP (and target SMTP) endpoints connect and verify TLS."""
    checks: list[tuple[str, Provider, Endpoint]] = [
        ("imap", plan.source, plan.source.imap),
        ("imap", plan.target, plan.target.imap),
    ]
    if plan.target.smtp is not None:
        checks.append(("smtp", plan.target, plan.target.smtp))
    return [endpoint_reachable(protocol, provider, endpoint) for protocol, provider, endpoint in checks]


def endpoint_reachable(protocol: str, provider: Provider, endpoint: Endpoint) -> CheckResult:
    """TCP connect + TLS handshake verified against the plan's CA (STARTTLS spoken where configured)."""
    context = ssl_context(provider)
    started = time.monotonic()
    timeout = provider.timeout_s

    def result(ok: bool, observed: str, reason: str = "", detail: str = "") -> CheckResult:
        return CheckResult(name=f"{protocol} endpoint", ok=ok, expected="connects, TLS verified", observed=observed,
                           target=f"{provider.name} {endpoint}", detail=detail, reason=reason,
                           duration_s=time.monotonic() - started, data={"protocol": protocol, "tls": endpoint.tls})

    try:
        if endpoint.tls == "implicit":
            with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
                with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
                    version = tls.version()
        elif protocol == "imap":
            client = IMAPClient(endpoint.host, port=endpoint.port, ssl=False, timeout=timeout)
            try:
                client.starttls(ssl_context=context)
                version = "STARTTLS"
            finally:
                client.shutdown()
        else:
            with smtplib.SMTP(endpoint.host, endpoint.port, timeout=timeout) as smtp:
                smtp.starttls(context=context)
                version = "STARTTLS"
    except ssl.SSLCertVerificationError as exc:
        return result(False, f"certificate not trusted: {exc.verify_message}", "tls-failure")
    except ssl.SSLError as exc:
        return result(False, f"TLS failed: {exc.reason or type(exc).__name__}", "tls-failure")
    except ConnectionRefusedError:
        return result(False, "connection refused", "refused")
    except (socket.timeout, TimeoutError):
        return result(False, f"timed out after {timeout:.0f}s", "timeout")
    except Exception as exc:  # noqa: BLE001 - any other failure of a remote end is an answer, not a crash
        return result(False, f"{type(exc).__name__}", "unreachable", str(exc)[:200])
    return result(True, f"connected, TLS verified ({version})")


def _short(exc: BaseException) -> str:
    # MailboxError.detail is the part without the address/server/hint (those have their own columns).
    return getattr(exc, "detail", None) or str(exc)


__all__ = ["canary_logins", "canary_login", "endpoints_reachable", "endpoint_reachable", "failure_reason", "VerifiedCounts"]
