"""IMAP sessions with verified TLS and the plan's auth mode; library errors mapped to MailboxError families.

Used by the copy engine, the access checks and readiness, so a login behaves the same everywhere: with the
member's login name on that side (``Mailbox.login``), inside the provider's process-wide session cap
(``cutover.limits``), and with "too many / slow down" answers classified as :class:`Throttled`.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import threading
import weakref
from typing import Iterator, Literal

from imapclient import IMAPClient
from imapclient import tls as imapclient_tls
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from cutover.errors import AuthFailed, ConnectionLost, MailboxError, SecretError, Throttled, TlsFailed
from cutover.inventory import Mailbox
from cutover.limits import SessionCap, is_throttle_answer, session_cap
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


_contexts: dict[tuple, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _provider_context(provider: Provider) -> ssl.SSLContext:
    """One verifying context per provider server, shared by every session to it (building one parses the whole
    system CA store: most of the CPU of a short session); a new one when the CA bundle file changed.

    No TLS session resumption: measured on the sandbox (200 logins), Dovecot took a kept TLS 1.3 ticket for 14-31 %
    of the logins only, and reading the session out of each socket cost more client CPU than the resumptions saved
    (0.52-0.70 s against 0.39-0.59 s); over a WAN a TLS 1.3 resumption saves no round trip either."""
    cafile = provider.ca_bundle
    try:
        stamp = (cafile.stat().st_mtime_ns, cafile.stat().st_size) if cafile else None
    except OSError:
        stamp = None  # ssl_context() says what is wrong with it
    key = (provider.imap.host, provider.imap.port, str(cafile) if cafile else None, stamp)
    with _contexts_lock:
        found = _contexts.get(key)
    if found is None or stamp is None and cafile:
        found = ssl_context(provider)
        with _contexts_lock:
            found = _contexts.setdefault(key, found)
    return found


class NoSessionSlot(MailboxError):
    """Every session the plan allows to this provider is open in this process (``wait_for_slot=False``)."""

    reason = "throttled"


class _Slot:
    """Gives one session's place in a :class:`SessionCap` back, once (on LOGOUT, shutdown or garbage collection)."""

    def __init__(self, cap: SessionCap | None) -> None:
        self._cap = cap
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class _GreetedTls(imapclient_tls.IMAP4_TLS):
    """imaplib asks CAPABILITY right after the greeting; a server that announced them in its greeting
    (``* OK [CAPABILITY ...]``, RFC 3501 7.1: Dovecot, Cyrus, Courier do) has answered already, so that round
    trip is skipped. Without them in the greeting, CAPABILITY is asked as before."""

    def _get_capabilities(self) -> None:
        said = self.untagged_responses.pop("CAPABILITY", None)
        if said and isinstance(said[-1], bytes) and said[-1].strip():
            self.capabilities = tuple(str(said[-1], self._encoding).upper().split())
            return
        super()._get_capabilities()


class Session(IMAPClient):
    """An IMAPClient that holds a place in its provider's session cap until LOGOUT or shutdown."""

    _slot: _Slot = _Slot(None)

    def _create_IMAP4(self):  # type: ignore[override]
        if self.ssl and not self.stream:  # implicit TLS; STARTTLS must ask again after the handshake anyway
            return _GreetedTls(self.host, self.port, self.ssl_context, getattr(self._timeout, "connect", None))
        return super()._create_IMAP4()

    def logout(self):  # type: ignore[override]
        try:
            return super().logout()
        finally:
            self._slot()

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self._slot()


def connect(plan: Plan, side: Side, mailbox: Mailbox, *, timeout: float | None = None, wait_for_slot: bool = True,
            capped: bool = True, slot: "_Slot | None" = None) -> IMAPClient:
    """Open and authenticate an IMAP session for ``mailbox`` on ``side`` with its login name on that side;
    raise a MailboxError family on failure.

    The session takes a place in the provider's process-wide cap (``max_connections``), waiting for one, or,
    with ``wait_for_slot=False``, raising :class:`NoSessionSlot` at once; ``slot``: a place taken before with
    :func:`reserve` (given back on failure as on LOGOUT). ``capped=False`` is only for the readiness probe that
    looks for the provider's own limit."""
    provider = plan.provider(side)
    where = f"{provider.name} {provider.imap}"
    if slot is None:
        slot = reserve(plan, side, mailbox, wait_for_slot=wait_for_slot) if capped else _Slot(None)
    try:
        with map_imap_errors(mailbox.address, where, side=side, at_login=True):
            client = _open(provider, timeout)
            client._slot = slot
            weakref.finalize(client, slot)  # a session dropped without LOGOUT still gives its place back
            try:
                _authenticate(plan, provider, side, client, mailbox)
            except LoginError as exc:
                bye = _bye_text(client)
                with contextlib.suppress(Exception):
                    client.shutdown()
                if bye is not None:
                    # imaplib reports a "* BYE" answered to the LOGIN/AUTHENTICATE with its words only
                    # ("command: LOGIN => Too many open connections", or "socket error: EOF" during AUTHENTICATE):
                    # the server turned the session away, never a refused password.
                    exc = LoginError(f"* BYE {bye}")
                mapped = _mapped(mailbox.address, where, exc, side=side, at_login=True)
                if isinstance(mapped, AuthFailed) and mailbox.login(side) != mailbox.address:
                    mapped = AuthFailed(mailbox.address, f"{mapped.detail} (login name {mailbox.login(side)!r})",
                                        server=where, side=side)
                raise mapped from None
            except BaseException:
                with contextlib.suppress(Exception):
                    client.shutdown()
                raise
            return client
    except BaseException:
        slot()
        raise


def _bye_text(client: IMAPClient) -> str | None:
    """The text of a ``* BYE`` the server sent in this session (imaplib keeps it among the untagged responses)."""
    try:
        said = client._imap.untagged_responses.get("BYE")
    except AttributeError:
        return None
    if not said:
        return None
    last = said[-1]
    return (last.decode("utf-8", "replace") if isinstance(last, bytes) else str(last)).strip()[:200]


def reserve(plan: Plan, side: Side, mailbox: Mailbox, *, wait_for_slot: bool = True) -> "_Slot":
    """Take a place in ``side``'s session cap now (for a :func:`connect` with ``slot=`` later, e.g. on another
    thread, keeping the order in which a caller takes the providers' caps)."""
    provider = plan.provider(side)
    cap = session_cap(provider)
    if not cap.acquire(blocking=wait_for_slot):
        raise NoSessionSlot(mailbox.address, f"all {cap.limit} sessions the plan allows to {provider.name} are open "
                            "in this process", server=f"{provider.name} {provider.imap}")
    return _Slot(cap)


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
    ctx = _provider_context(provider)
    implicit = provider.imap.tls == "implicit"
    client = Session(
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
    login = mailbox.login(side)
    if provider.auth.mode == "master":
        master = plan.secret(provider.auth.master_secret or "")
        # SASL PLAIN: authcid is the admin/master user, authzid the member's login name on this side.
        client.plain_login(provider.auth.master_user, master.reveal(), authorization_identity=login)
    else:
        password = mailbox.password(side).reveal()
        if password.isascii():
            client.login(login, password)
        else:
            # LOGIN can only carry ASCII (imaplib would raise UnicodeEncodeError naming a character of the
            # password); SASL PLAIN carries UTF-8, and members do have passwords with è, à, ù.
            client.plain_login(login, password)


@contextlib.contextmanager
def map_imap_errors(mailbox: str, server: str, *, side: str = "", at_login: bool = False) -> Iterator[None]:
    """Turn socket/TLS/imapclient errors into the project's MailboxError families (messages carry no secrets).

    "Too many / slow down" answers become :class:`Throttled` wherever they come; at the greeting or the login
    (``at_login``) a BYE or a dropped connection is one too (Dovecot's per user+IP limit answers so)."""
    try:
        yield
    except (MailboxError, SecretError):
        raise
    except UnicodeError:
        # The message of a UnicodeError quotes the offending character of what we sent: never pass it on.
        raise AuthFailed(mailbox, "login could not be encoded (a character the server's login cannot carry)",
                         server=server, side=side or "source") from None
    except (ssl.SSLError, ConnectionRefusedError, socket.timeout, TimeoutError,
            IMAPClientError, ConnectionError, EOFError, OSError) as exc:
        raise _mapped(mailbox, server, exc, side=side, at_login=at_login) from None


# OpenSSL's words for a stream that stopped (a cut link), as opposed to a TLS disagreement.
_DROPPED_TLS = ("EOF", "SHUTDOWN_WHILE_IN_INIT", "CONNECTION RESET", "BROKEN PIPE")


def _mapped(mailbox: str, server: str, exc: BaseException, *, side: str, at_login: bool) -> MailboxError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailed(mailbox, f"certificate not trusted: {exc.verify_message}", server=server)
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        # The server closed the TLS stream (restarted, or went away mid-session): retryable, not a TLS problem.
        return ConnectionLost(mailbox, f"connection lost ({exc.__class__.__name__})", server=server)
    if isinstance(exc, ssl.SSLSyscallError) or (isinstance(exc, ssl.SSLError) and any(
            word in f"{exc.reason or ''} {exc}".upper() for word in _DROPPED_TLS)):
        # The link dropped during the handshake or a record: not the CA bundle, not the certificate.
        return ConnectionLost(mailbox, f"connection lost during TLS ({exc.reason or exc.__class__.__name__})",
                              server=server)
    if isinstance(exc, ssl.SSLError):
        return TlsFailed(mailbox, f"TLS failed: {exc.reason or exc.__class__.__name__}", server=server)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionLost(mailbox, "connection refused", server=server)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectionLost(mailbox, "timed out", server=server)
    said = _server_text(exc)
    # imapclient's login() wraps a dropped connection in LoginError ("command: LOGIN => socket error: EOF").
    dropped = isinstance(exc, (IMAPClientAbortError, imaplib.IMAP4.abort, ConnectionError, EOFError)) or (
        isinstance(exc, LoginError) and ("socket error" in said or "EOF" in said))
    # A provider that turns a session away at the greeting or the login ("* BYE ...") is saying "not now",
    # not "wrong password" and not "no server here".
    if is_throttle_answer(said) or (at_login and "BYE" in said.upper()):
        return Throttled(mailbox, f"the server said: {said or exc.__class__.__name__}", server=server)
    if isinstance(exc, LoginError) and not dropped:
        return AuthFailed(mailbox, f"login refused: {said}", server=server, side=side or "source")
    if dropped or (isinstance(exc, OSError) and not isinstance(exc, IMAPClientError)):
        return ConnectionLost(mailbox, f"connection lost ({exc.__class__.__name__}: {said})", server=server)
    return MailboxError(mailbox, f"IMAP error: {said}", server=server)


def _server_text(exc: BaseException) -> str:
    # imaplib raises a refused greeting with the server's line as bytes ("* BYE ..."): its words, not Python's repr.
    first = exc.args[0] if len(exc.args) == 1 else None
    text = first.decode("utf-8", "replace").strip() if isinstance(first, bytes) else str(exc)
    if isinstance(exc, LoginError) or "AUTHENTICATIONFAILED" in text:
        # imapclient wraps the server's answer; keep it short and free of anything we sent.
        text = text.replace("b'", "").replace("'", "")
    return text[:200]
