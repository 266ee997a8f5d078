"""SMTP submission logins on the target for the canaries: AUTH over verified TLS, then QUIT; nothing is sent."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from cutover.errors import SecretError
from cutover.imap import ssl_context
from cutover.inventory import Inventory, Mailbox
from cutover.plan import Plan
from cutover.results import CheckResult

AUTH_HINT = "password changed, or 2FA still on: ask the member to switch 2FA off and confirm the password"


def smtp_logins(plan: Plan, inventory: Inventory) -> list[CheckResult]:
    """One result per canary; ``[]`` when the plan's target has no ``smtp`` endpoint."""
    if plan.target.smtp is None:
        return []
    canaries = list(inventory.canaries)
    if not canaries:
        return []
    context = ssl_context(plan.target)  # an unreadable CA bundle is bad configuration: raises
    workers = min(plan.target.max_connections, len(canaries))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smtp") as pool:
        return list(pool.map(lambda mb: smtp_login(plan, mb, context), canaries))


def smtp_login(plan: Plan, mailbox: Mailbox, context: ssl.SSLContext | None = None) -> CheckResult:
    """EHLO, (STARTTLS,) AUTH PLAIN as the member (or the master user for the member), QUIT."""
    target = plan.target
    endpoint = target.smtp
    assert endpoint is not None
    context = context or ssl_context(target)
    expected = f"AUTH accepted over {'TLS' if endpoint.tls == 'implicit' else 'STARTTLS'}"
    started = time.monotonic()

    def result(ok: bool, observed: str, reason: str = "", detail: str = "") -> CheckResult:
        return CheckResult(name="smtp login", ok=ok, expected=expected, observed=observed, target=mailbox.address,
                           detail=detail, reason=reason, duration_s=time.monotonic() - started,
                           data={"server": f"{target.name} {endpoint}"})

    try:
        credentials = _credentials(plan, mailbox)
    except SecretError as exc:
        return result(False, str(exc), "no-secret")
    client: smtplib.SMTP | None = None
    try:
        if endpoint.tls == "implicit":
            client = smtplib.SMTP_SSL(endpoint.host, endpoint.port, timeout=target.timeout_s, context=context)
        else:
            client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=target.timeout_s)
            client.starttls(context=context)
        client.ehlo()
        if not client.has_extn("auth"):
            return result(False, "server offers no AUTH", "no-auth", "submission must offer AUTH over TLS")
        authzid, authcid, password = credentials
        # SASL PLAIN built here so a master user can log in for the member (authzid), as on IMAP.
        token = base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()
        code, _ = client.docmd("AUTH", f"PLAIN {token}")
        if code != 235:
            return result(False, f"AUTH refused ({code})", "auth-failure", AUTH_HINT)
        return result(True, "AUTH accepted (235); nothing sent")
    except ssl.SSLCertVerificationError as exc:
        return result(False, f"certificate not trusted: {exc.verify_message}", "tls-failure")
    except ssl.SSLError as exc:
        return result(False, f"TLS failed: {exc.reason or type(exc).__name__}", "tls-failure")
    except ConnectionRefusedError:
        return result(False, "connection refused", "refused")
    except (socket.timeout, TimeoutError):
        return result(False, "timed out", "timeout")
    except smtplib.SMTPNotSupportedError:
        return result(False, "STARTTLS not offered", "tls-failure", "the server must offer STARTTLS")
    except (smtplib.SMTPException, OSError) as exc:
        return result(False, f"{type(exc).__name__}", "unreachable", _scrub(str(exc)[:200], credentials[2]))
    finally:
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _credentials(plan: Plan, mailbox: Mailbox) -> tuple[str, str, str]:
    """(authzid, authcid, password) for SASL PLAIN."""
    auth = plan.target.auth
    if auth.mode == "master":
        return mailbox.login("target"), auth.master_user or "", plan.secret(auth.master_secret or "").reveal()
    return "", mailbox.login("target"), mailbox.password("target").reveal()


__all__ = ["smtp_logins", "smtp_login"]
