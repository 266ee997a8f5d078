"""IMAP sessions with verified TLS and the plan's auth mode; library errors mapped to MailboxError families.

Used by the copy engine, the access checks and readiness, so a login behaves the same everywhere.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from typing import Iterator, Literal

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from cutover.errors import AuthFailed, ConnectionLost, MailboxError, SecretError, TlsFailed
from cutover.inventory import Mailbox
from cutover.plan import Plan, Provider

Side = Literal["source", "target"]


def ssl_context(provider: Provider) -> ssl.SSLContext:
    """A verifying TLS context: the system CA store, plus the plan's CA bundle when given (a private CA, the
    sandbox's) — added to the system store, not instead of it."""
    cafile = str(provider.ca_bundle) if provider.ca_bundle else None
    try:
        ctx = ssl.create_default_context()
        if cafile:
            ctx.load_verify_locations(cafile=cafile)
    except (FileNotFoundError, IsADirectoryError, ssl.SSLError) as exc:
        raise TlsFailed(provider.name, f"CA bundle {cafile} cannot be loaded ({exc.__class__.__name__})") from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def connect(plan: Plan, side: Side, mailbox: Mailbox, *, timeout: float | None = None) -> IMAPClient:
    """Open and authenticate an IMAP session for ``mailbox`` on ``side``; raise a MailboxError family on failure."""
    provider = plan.provider(side)
    where = f"{provider.name} {provider.imap}"
    with map_imap_errors(mailbox.address, where):
        client = _open(provider, timeout)
        try:
            _authenticate(plan, provider, side, client, mailbox)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client


@contextlib.contextmanager
def session(plan: Plan, side: Side, mailbox: Mailbox, *, timeout: float | None = None) -> Iterator[IMAPClient]:
    """``connect`` as a context manager that always logs out."""
    client = connect(plan, side, mailbox, timeout=timeout)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def _open(provider: Provider, timeout: float | None) -> IMAPClient:
    ctx = ssl_context(provider)
    implicit = provider.imap.tls == "implicit"
    client = IMAPClient(
        provider.imap.host,
        port=provider.imap.port,
        ssl=implicit,
        ssl_context=ctx,
        timeout=timeout or provider.timeout_s,
    )
    if not implicit:
        client.starttls(ssl_context=ctx)
    return client


def _authenticate(plan: Plan, provider: Provider, side: Side, client: IMAPClient, mailbox: Mailbox) -> None:
    if provider.auth.mode == "master":
        master = plan.secret(provider.auth.master_secret or "")
        # SASL PLAIN: authcid is the admin/master user, authzid the member's mailbox.
        client.plain_login(provider.auth.master_user, master.reveal(), authorization_identity=mailbox.address)
    else:
        password = mailbox.password(side).reveal()
        if password.isascii():
            client.login(mailbox.address, password)
        else:
            # LOGIN can only carry ASCII (imaplib would raise UnicodeEncodeError naming a character of the
            # password); SASL PLAIN carries UTF-8, and members do have passwords with è, à, ù.
            client.plain_login(mailbox.address, password)


@contextlib.contextmanager
def map_imap_errors(mailbox: str, server: str) -> Iterator[None]:
    """Turn socket/TLS/imapclient errors into the project's MailboxError families (messages carry no secrets)."""
    try:
        yield
    except (MailboxError, SecretError):
        raise
    except UnicodeError:
        # The message of a UnicodeError quotes the offending character of what we sent: never pass it on.
        raise AuthFailed(mailbox, "login could not be encoded (a character the server's login cannot carry)",
                         server=server) from None
    except LoginError as exc:
        raise AuthFailed(mailbox, f"login refused: {_server_text(exc)}", server=server) from None
    except ssl.SSLCertVerificationError as exc:
        raise TlsFailed(mailbox, f"certificate not trusted: {exc.verify_message}", server=server) from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        # The server closed the TLS stream (restarted, or went away mid-session): retryable, not a TLS problem.
        raise ConnectionLost(mailbox, f"connection lost ({exc.__class__.__name__})", server=server) from None
    except ssl.SSLError as exc:
        raise TlsFailed(mailbox, f"TLS failed: {exc.reason or exc.__class__.__name__}", server=server) from None
    except ConnectionRefusedError:
        raise ConnectionLost(mailbox, "connection refused", server=server) from None
    except (socket.timeout, TimeoutError):
        raise ConnectionLost(mailbox, "timed out", server=server) from None
    except (IMAPClientAbortError, imaplib.IMAP4.abort, ConnectionError, EOFError, OSError) as exc:
        raise ConnectionLost(mailbox, f"connection lost ({exc.__class__.__name__}: {_server_text(exc)})", server=server) from None
    except IMAPClientError as exc:
        raise MailboxError(mailbox, f"IMAP error: {_server_text(exc)}", server=server) from None


def _server_text(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, LoginError) or "AUTHENTICATIONFAILED" in text:
        # imapclient wraps the server's answer; keep it short and free of anything we sent.
        text = text.replace("b'", "").replace("'", "")
    return text[:200]
